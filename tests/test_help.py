"""Every command's --help, as a person reads it at 80 columns: arguments by name (TRACE), flags
without a type, values by what they are (N, SECONDS, SPEC), ranges shown, lines that fit and do
not break words at their hyphens. typer's help layout changed under a loose version range once;
pyproject.toml pins the range this test passes with."""

from __future__ import annotations

import re

import click
import pytest
import typer.main
from typer.testing import CliRunner

from ftmbctl.cli import app

COMMAND = typer.main.get_command(app)
COMMANDS = sorted(COMMAND.commands)


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns_and_reads_cleanly(command: str) -> None:
    text = help_of(*([command] if command else []))
    for line in text.splitlines():
        assert len(line) <= 80, f"{command}: a line of {len(line)} columns: {line!r}"
        assert not re.search(r"[a-z]-$", line), f"{command}: a word broken at its hyphen: {line!r}"
    types = re.search(r"<(bool|int|float|str|path|list\[[^]]*\])>|<[a-z-]+(\|[a-z-]+)+>", text)
    assert not types, f"{command}: a type in <>: {types.group(0)}"
    usage = text.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage


@pytest.mark.parametrize("command", COMMANDS)
def test_arguments_by_name_and_values_by_metavar(command: str) -> None:
    sub = COMMAND.commands[command]
    usage = help_of(command).splitlines()[0]
    for param in sub.params:
        if isinstance(param, click.Argument):
            assert param.metavar and param.metavar.isupper() and param.metavar in usage, (command, param.name)
        elif not getattr(param, "is_flag", False) and param.name != "help":
            assert param.metavar, f"{command} {param.opts[0]} shows no metavar"


NUMBERS = {"N", "E", "K", "SECONDS"}


@pytest.mark.parametrize("command", COMMANDS)
def test_numeric_options_show_their_range(command: str) -> None:
    for param in COMMAND.commands[command].params:
        if isinstance(param, click.Option) and param.metavar in NUMBERS:
            assert re.search(r"\[(>=\s*\d|\d[\d,]*\s*-|0 to )", param.help or ""), (
                f"{command} {param.opts[0]}: no range in its help: {param.help!r}")


def test_shell_completion_is_offered() -> None:
    text = help_of()
    assert "--install-completion" in text and "--show-completion" in text
