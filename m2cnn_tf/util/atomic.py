"""Files written whole or not at all: write to a temporary name beside the target, then rename.

A reader (TF Serving polling an export folder, a resumed build, a person opening report.md)
sees the old file or the new one, never half of one, however the writer stops — an exception,
a full disk, ``kill -9``. ``os.replace`` is atomic within one file system, which is why the
temporary file lives in the target's folder.

The temporary name is the target's plus ``TMP_SUFFIX``: fixed, so a write after a killed one
overwrites the leftover rather than piling up new ones, and findable, so a folder's owner can
sweep leftovers (the TFRecord builder does). One writer per target at a time is assumed; the
builder and training runs hold a folder lock (``util.locking``).

Every function raises the OSError of a failed write (after deleting its temporary file);
callers turn it into their own error naming what the user should do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any, BinaryIO, Iterator, Mapping, Union

import numpy as np

TMP_SUFFIX = ".incomplete"  # temporary files end with it (the builder sweeps them on a re-run)
STAGING_PREFIX = ".incomplete-"  # a folder being staged: hidden, and never a TF Serving version

PathLike = Union[str, os.PathLike]


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def replacing(path: PathLike, fsync: bool = True) -> Iterator[BinaryIO]:
    """``with replacing(path) as f:`` — a binary file that becomes ``path`` when the block ends.

    Args:
      path: the file to (re)place; its folder must exist.
      fsync: flush the bytes to the disk before the rename, so a power cut cannot leave an
        empty file under the final name (the rename's metadata may reach the disk first).

    Yields:
      The temporary file, open for binary writing. On an exception in the block (or in the
      write itself) the temporary file is deleted and the exception propagates; ``path`` keeps
      what it held.
    """
    path = os.fspath(path)
    tmp = path + TMP_SUFFIX
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_bytes(path: PathLike, data: bytes, fsync: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically (see ``replacing``).

    Raises:
      OSError: the write failed; ``path`` is unchanged and no temporary file is left.
    """
    with replacing(path, fsync) as f:
        f.write(data)


def write_text(path: PathLike, text: str, encoding: str = "utf-8", errors: str = "strict",
               fsync: bool = True) -> None:
    """Writes ``text`` atomically, encoded as given; newlines are written as they are.

    Args:
      errors: the encoder's error handler; ``"surrogateescape"`` writes file names that were
        read as undecodable bytes back as those bytes.
    """
    write_bytes(path, text.encode(encoding, errors), fsync)


def write_json(path: PathLike, value: Any, indent: int = 2, sort_keys: bool = False,
               end: str = "", fsync: bool = True) -> None:
    """Writes ``value`` as JSON (``json.dumps`` with ``indent`` and ``sort_keys``, then ``end``,
    say a final newline) atomically. Each kind of file keeps its own layout, so its bytes stay
    what they were."""
    write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + end, fsync=fsync)


def save_npz(path: PathLike, arrays: Mapping[str, np.ndarray], fsync: bool = True) -> None:
    """``np.savez(path, **arrays)`` atomically, streamed to the file (no second copy in memory).

    The name is kept as given (NumPy's ``savez`` appends ``.npz`` to a path without it)."""
    with replacing(path, fsync) as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def staged_directory(target: PathLike) -> Iterator[str]:
    """``with staged_directory(target) as folder:`` — a folder that becomes ``target`` whole.

    The folder is filled under a hidden name beside ``target`` (``STAGING_PREFIX``, so a
    poller such as TF Serving, which loads numbered folders, never sees a half-written one) and
    renamed when the block ends; on an exception it is deleted. ``target`` must not exist: the
    rename fails rather than replace a non-empty folder.

    Yields:
      The staging folder's path (created empty).
    """
    target = os.fspath(target)
    parent, name = os.path.split(target)
    staging = os.path.join(parent, f"{STAGING_PREFIX}{name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a leftover of a killed run of this pid
    os.makedirs(staging)
    try:
        yield staging
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
