"""Output folders that are complete or absent: a command that fails half-way must not leave a
plan and a checkpoint without the report that vouches for them (or a run folder without its
export), and must not clobber the folder an earlier run left.

:func:`staged_output_dir` hands out a hidden sibling folder to write into and renames it to the
requested name only when everything inside was written; an earlier folder of that name is
swapped out at that moment and then deleted.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional

from .errors import ConfigError

#: what hwprune writes into an output folder (plans, reports, checkpoints, figures, ONNX, tables):
#: an existing folder holding only such files may be replaced by a new run; anything else is refused
OUTPUT_SUFFIXES = (".json", ".md", ".png", ".pt", ".onnx", ".data", ".engine")


def _first_missing_ancestor(folder: str) -> Optional[str]:
    """The outermost folder of ``folder``'s path that does not exist yet (None if it exists)."""
    missing = None
    while not os.path.exists(folder):
        missing = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove_created(parent: str, created: Optional[str]) -> None:
    """Remove the empty folders from ``parent`` up to ``created`` (those this module made)."""
    if created is None:
        return
    folder = parent
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == created:
            return
        folder = os.path.dirname(folder)


def check_output_dir(out: str) -> None:
    """Refuse, before any work, an ``out`` that a finished run could not replace safely: a file,
    the current folder or one above it, or a folder holding things hwprune does not write
    (a source tree, a data set) -- replacing the folder would delete them."""
    final = os.path.abspath(out)
    if not os.path.lexists(final):
        return
    if not os.path.isdir(final) or os.path.islink(final):
        raise ConfigError(f"output folder {out!r} exists and is not a folder; pass another --out or remove it")
    cwd = os.path.abspath(os.getcwd())
    if cwd == final or cwd.startswith(final.rstrip(os.sep) + os.sep):
        raise ConfigError(f"output folder {out!r} is the current folder or holds it; a finished run replaces its "
                          "--out folder as a whole, so pass a folder of its own (e.g. --out out/run1)")
    foreign = [e for e in sorted(os.listdir(final))
               if not (os.path.isfile(os.path.join(final, e)) and e.endswith(OUTPUT_SUFFIXES))]
    if foreign:
        raise ConfigError(f"output folder {out!r} holds {foreign[0]!r}, which hwprune did not write; a finished run "
                          "replaces its --out folder as a whole, so pass a new or empty folder (or move that away)")


@contextmanager
def staged_output_dir(out: str) -> Iterator[str]:
    """Yield a fresh folder next to ``out`` (same parent, so the final rename is atomic) to write
    every output into; on success it becomes ``out``, replacing an earlier ``out`` only then; on
    any error (or Ctrl-C) it is deleted and ``out`` is left as it was, or absent. An existing
    ``out`` must pass :func:`check_output_dir` (callers check it up front too, before the work)."""
    check_output_dir(out)
    final = os.path.abspath(out)
    parent = os.path.dirname(final)
    created = _first_missing_ancestor(parent)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    try:
        yield work
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)  # mkdtemp makes 0700; a kept folder gets the usual mode
        _publish(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _remove_created(parent, created)
        raise


def _publish(work: str, final: str) -> None:
    """Rename ``work`` to ``final``; an existing ``final`` is moved aside first and deleted after,
    or moved back when the rename fails."""
    if not os.path.isdir(final):
        os.rename(work, final)
        return
    trash = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=os.path.dirname(final))
    old = os.path.join(trash, "old")
    os.rename(final, old)
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(old, final)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)
