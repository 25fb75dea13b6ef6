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


class DamagedRun(FtmbError):
    """A run directory or crash image is missing a file or holds corrupt bytes (exit 3)."""

    exit_code = 3


class Divergence(FtmbError):
    """Replay departed from what was recorded (exit 1 when it reaches the CLI)."""

    exit_code = 1
