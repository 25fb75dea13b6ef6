"""One writer per directory: an exclusive ``flock`` on a lock file beside the directory.

``record``, ``recover`` and ``crash-replay``/``verify`` (which write ``crash/results.json``) hold
the lock of the directory they write for as long as they write it. The lock file is a sibling,
``.<name>.lock``, not a file inside: ``record --force`` moves the old directory aside and makes a
new one, and the lock must outlive both (and stay out of the run's file list). The holder's pid
is written into the file, so a second writer is refused at once with one sentence naming it.
The holder removes the file when it is done; a file left by a killed process holds no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from ftmbctl.errors import MachineError, UsageError, writes_to


def lock_path(directory: Path) -> Path:
    """Where the lock of ``directory`` lives: ``.<name>.lock`` next to it."""
    resolved = directory.resolve()
    return resolved.parent / f".{resolved.name}.lock"


@contextlib.contextmanager
def exclusive(directory: Path, create: bool = True) -> Iterator[Path | None]:
    """Hold the lock of ``directory`` (refused with ``UsageError`` when another process holds it).

    ``create``: make the missing parents of ``directory`` (a record or recovery is to create it);
    without it a missing parent means there is no directory to protect, and no lock is taken
    (the caller fails on the missing directory with its own error)."""
    path = lock_path(directory)
    if not create and not path.parent.is_dir():
        yield None
        return
    with writes_to(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, directory)
    try:
        with writes_to(path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):  # while still held: whoever opens it next makes a new one
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path, directory: Path) -> int:
    while True:
        with writes_to(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"another ftmbctl (pid {holder})" if holder else "another ftmbctl"
            raise UsageError(f"{who} is writing {directory}; wait for it to finish") from None
        except OSError as exc:
            os.close(fd)
            raise MachineError.from_os(exc, path) from None
        # The previous holder may have removed the file between our open and our lock: then we
        # hold a lock nobody else can see, and try again with the file now at ``path``.
        try:
            mine, there = os.fstat(fd), os.stat(path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
