"""Reading input files safely: regular files only, never more than a documented cap.

Specs, included specs, manifests and checkpoint metadata are all read through
:func:`read_regular` (or opened with :func:`open_regular`), so that a FIFO, a device
such as ``/dev/zero`` or a terminal never blocks ``pspec`` or fills its memory, and a
file over its cap is refused before it is read.

>>> import tempfile, os
>>> with tempfile.NamedTemporaryFile("wb", suffix=".pspec", delete=False) as f:
...     _ = f.write(b"a -> frozen\\n")
>>> read_regular(f.name, limit=100)
b'a -> frozen\\n'
>>> try:
...     read_regular(f.name, limit=4)
... except UnreadableFile as exc:
...     print(exc.strerror)
too large: 12 bytes (the limit is 4 bytes)
>>> os.unlink(f.name)
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

__all__ = [
    "MAX_INCLUDE_BYTES",
    "MAX_SPEC_BYTES",
    "UnreadableFile",
    "open_regular",
    "read_regular",
    "read_stream",
]

#: The largest spec file read, in bytes (``E001``): 4 MiB, some 80,000 rules.
MAX_SPEC_BYTES = 4 * 1024 * 1024
#: The largest file an ``include`` reads (``E802``).
MAX_INCLUDE_BYTES = MAX_SPEC_BYTES

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(OSError):
    """A file that is not a regular file, or larger than its cap; ``strerror`` says which."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading in binary mode, without ever blocking.

    The file is opened non-blocking (so a FIFO with no writer returns at once) and
    checked with ``fstat`` on the open descriptor (so it cannot be swapped for a FIFO
    between a check and the open).

    Raises:
      UnreadableFile: the path is a FIFO, a device, a socket or a directory.
      OSError: it cannot be opened.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableFile(errno.EINVAL, f"{_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_large(size: int, limit: int) -> UnreadableFile:
    return UnreadableFile(errno.EFBIG, f"too large: {size:,} bytes (the limit is {limit:,} bytes)")


def read_regular(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Raises:
      UnreadableFile: not a regular file, or larger than ``limit``.
      OSError: it cannot be opened or read.
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise _too_large(size, limit)
        data = f.read(limit + 1)  # the file may have grown since fstat
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data


def read_stream(stream: BinaryIO, *, limit: int) -> bytes:
    """At most ``limit`` bytes from a stream (standard input, given as ``-``)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data
