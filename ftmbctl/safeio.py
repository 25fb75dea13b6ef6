"""Opening a file of a run directory or crash image, which may come from someone else.

Every reader opens through ``open_regular``: a FIFO, a device, a socket or a directory (or a
symlink to one) named like a run's file would block the open or the read forever (a FIFO), never
end (``/dev/zero``) or fail obscurely, so anything but a regular file is a ``DamagedRun`` naming
the path. The open itself never blocks (``O_NONBLOCK``, which does nothing to a regular file's
reads), and the check is on the opened descriptor (``fstat``), so the file cannot be swapped
between the check and the read. ``read_regular`` adds a size cap for files read whole.

An OSError from the open (a missing file, permission) is left to the caller, who knows what the
file is for and says so.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ftmbctl.errors import DamagedRun

MAX_JSON = 16 << 20  # manifest.json: a few KiB in practice
MAX_RESULTS = 256 << 20  # crash/results.json: one object per crash point


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, unbuffered, checked to be a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DamagedRun(f"{path}: is {_kind(mode)}, expected a regular file")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (more is a ``DamagedRun``)."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise DamagedRun(f"{path}: {size} bytes, more than the {limit} bytes such a file may hold")
        parts: list[bytes] = []
        total = 0
        while part := handle.read(max(size + 1 - total, 1 << 16)):
            parts.append(part)  # more than fstat said (a growing file, /proc) is read, up to ``limit``
            total += len(part)
            if total > limit:
                raise DamagedRun(f"{path}: more than the {limit} bytes such a file may hold")
    return b"".join(parts)
