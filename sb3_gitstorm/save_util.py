"""Atomic writes for checkpoints and replay buffers."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any, overload


@overload
def atomic_write(path: str | pathlib.Path, suffix: str, write: Callable[[str], object]) -> None: ...


@overload
def atomic_write(
    path: str | pathlib.Path | io.BufferedIOBase, suffix: str, write: Callable[[str | io.BufferedIOBase], object]
) -> None: ...


def atomic_write(
    path: str | pathlib.Path | io.BufferedIOBase, suffix: str, write: Callable[[Any], object]
) -> None:
    """Write a file so that ``path`` holds either the previous file or the complete new one.

    ``write`` is given a temporary path next to ``path``; once it returns, the data is flushed to
    disk and the temporary file replaces ``path`` in one ``os.replace``. An interrupted write leaves
    the previous file untouched. File objects are passed through unchanged.

    Parameters
    ----------
    path : str, pathlib.Path or file object
        Destination; like SB3, ``.<suffix>`` is appended when the path has no suffix.
    suffix : str
        Default file suffix (``"zip"`` for models, ``"pkl"`` for replay buffers).
    write : callable
        Writes the data to the path it is given (e.g. SB3's ``save_to_zip_file``).
    """
    if not isinstance(path, (str, os.PathLike)):
        write(path)
        return
    path = pathlib.Path(path)
    if path.suffix == "":
        path = path.with_name(f"{path.name}.{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600): give it the permissions a plain open() would.
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _file_mode(path: pathlib.Path) -> int:
    """Permission bits for ``path``: those of the file it replaces, else ``0o666`` less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
