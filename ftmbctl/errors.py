"""The one error tree. The CLI maps each class to an exit code in one place (cli.py)."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator


class FtmbError(Exception):
    """Base of every error ftmbctl reports to a user as one sentence."""

    exit_code = 1


class UsageError(FtmbError):
    """The command line asks for something that makes no sense (exit 2)."""

    exit_code = 2


class BadInput(FtmbError):
    """An input file (trace, middlebox module, rules) cannot be used (exit 3)."""

    exit_code = 3


class MiddleboxStateError(BadInput):
    """The middlebox keeps a value a snapshot cannot hold (exit 3): the message says which snapshot,
    where the value sits (``queue Q local state [...]`` or ``shared variable NAME``), its type and
    what to store instead."""


class DamagedRun(FtmbError):
    """A run directory or crash image is missing a file or holds corrupt bytes (exit 3)."""

    exit_code = 3


class Divergence(FtmbError):
    """Replay departed from what was recorded (exit 1 when it reaches the CLI)."""

    exit_code = 1


class MiddleboxError(FtmbError):
    """The middlebox under test broke during a recovery or a check: it raised, its replay could not
    make progress, or its ``declare()`` is not deterministic. A verdict about the middlebox
    (exit 1), never a damaged run: ``verify`` reports it as a ``recovery-completes`` failure."""

    exit_code = 1

    def __init__(self, message: str, packet: int | None = None, queue: int | None = None,
                 exception: str | None = None) -> None:
        super().__init__(message)
        self.packet, self.queue, self.exception = packet, queue, exception


class MachineError(FtmbError):
    """Could not read or write: the environment failed (disk full, file too large, read-only file
    system, permission denied), not the run and not the middlebox (exit 4)."""

    exit_code = 4

    @classmethod
    def from_os(cls, exc: OSError, path: str | os.PathLike[str] | None = None,
                what: str = "cannot write") -> MachineError:
        """One sentence: the path (``path``, else the one the error names), what could not be done
        and what the OS said."""
        where = path if path is not None else exc.filename
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return cls(f"{where}: {what} ({reason})" if where is not None else f"{what} ({reason})")


# What the machine, not the input, decides: these OSErrors are MachineErrors wherever they surface.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                            errno.EBUSY, errno.EIO, errno.ETXTBSY, errno.EMFILE, errno.ENFILE})


@contextlib.contextmanager
def writes_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """Writes to ``path`` inside: an OSError from the OS (one with an errno) becomes a MachineError
    naming ``path``. An OSError without an errno is not the OS's and passes through."""
    try:
        yield
    except OSError as exc:
        if not exc.errno:
            raise
        raise MachineError.from_os(exc, path) from None
