"""The one error tree. The CLI maps each class to an exit code in one place (cli.py)."""


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
