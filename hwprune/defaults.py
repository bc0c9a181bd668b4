"""Defaults and choices that the library uses and the CLI's ``--help`` shows, in a module free of
PyTorch so that every ``hwprune COMMAND --help`` prints without importing it. The modules that use
them (:mod:`hwprune.parity`, :mod:`hwprune.recover`) import them from here."""
from __future__ import annotations

# ONNX parity (hwprune.parity): passes when max |err| <= atol + rtol x std(reference)
VACUOUS_FACTOR = 10.0  # an output whose spread is <= 10 x atol is negligible: atol alone would pass a 10% error
DEFAULT_ATOL = 1e-6  # a floor for float32 noise, tiny next to any output that is checked
DEFAULT_RTOL = 1e-3  # relative to the reference output's spread (its standard deviation)

# recovering accuracy (hwprune.recover, ``hwprune train``)
INITS = ("inherit", "scratch")
SCHEDULES = ("one-cycle", "cosine")
#: learning rate when none is given: fine-tuning nudges trained weights, scratch trains them anew
DEFAULT_LR = {"inherit": 0.01, "scratch": 0.1}
