"""hwprune: prune PyTorch vision models to a latency budget measured on the device, and export them.

A regular package (not a namespace one), so a second checkout on ``sys.path`` can never mix its
modules into this one.
"""
