"""What lint found, as plain data: for the terminal, for ``--json``, and for other stages
(record can keep the findings in a manifest, verify can show them beside a divergence)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftmbctl.lint.rules import RULES


@dataclass(frozen=True, order=True)
class Finding:
    """One rule broken at one place. ``line`` and ``col`` count from 1, ``col`` in characters."""

    file: str
    line: int
    col: int
    code: str
    message: str

    @property
    def rule(self) -> str:
        return RULES[self.code].name

    @property
    def fix(self) -> str:
        return RULES[self.code].fix

    def compiler_line(self, file: str | None = None) -> str:
        """``file:line:col: CODE message; fix``, the form editors and CI annotators read
        (``file`` to show the path another way, relative say)."""
        return f"{file or self.file}:{self.line}:{self.col}: {self.code} {self.message}; {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "code": self.code, "rule": self.rule,
                "message": self.message, "fix": self.fix, "cause": RULES[self.code].cause}


@dataclass(frozen=True, order=True)
class UnusedSilence:
    """A code named by a silencing comment that silenced nothing on its line."""

    file: str
    line: int
    col: int
    code: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "code": self.code}


@dataclass
class LintReport:
    targets: list[str]  # the middleboxes checked, as named
    findings: list[Finding] = field(default_factory=list)  # what to fix, FTMB9xx included
    silenced: list[Finding] = field(default_factory=list)  # what a comment silenced
    unused_silences: list[UnusedSilence] = field(default_factory=list)
    functions: int = 0  # functions analysed

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, "middleboxes": list(self.targets), "functions": self.functions,
                "findings": [f.to_dict() for f in self.findings], "silenced": [f.to_dict() for f in self.silenced],
                "unused_silences": [u.to_dict() for u in self.unused_silences]}
