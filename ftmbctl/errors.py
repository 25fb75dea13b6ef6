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


class Interrupted(FtmbError):
    """SIGINT or SIGTERM stopped the command (exit 128 + the signal's number: 130, 143), after it
    stopped its workers and removed its scratch files; no verdict."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


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


# ---- option ranges: checked by the library's configs, shown in the CLI's help ----
U32_MAX = 0xFFFFFFFF  # packet numbers and snapshot boundaries are u32 fields on disk (formats/)
SEED_MAX = (1 << 63) - 1  # a seed is kept in the manifest and mixed into 63-bit derived seeds
MAX_QUEUES = 64
MAX_POINT_TIMEOUT = 86400.0  # seconds of one crash point's recovery: a day; 0 (no deadline) asks for more


def _shown(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def range_text(low: float, high: float | None = None) -> str:
    """How a range reads in an option's help: ``[1-64]``, or ``[>=1]`` without an upper bound."""
    return f"[{_shown(low)}-{_shown(high)}]" if high is not None else f"[>={_shown(low)}]"


def check_range(option: str, value: float, low: float, high: float | None = None) -> None:
    """Refuse ``value`` outside ``low..high`` (both included) in one sentence naming the range."""
    if low <= value and (high is None or value <= high):  # NaN fails both comparisons
        return
    bound = f"between {_shown(low)} and {_shown(high)}" if high is not None else f"at least {_shown(low)}"
    raise UsageError(f"{option} must be {bound}, got {_shown(value)}")
