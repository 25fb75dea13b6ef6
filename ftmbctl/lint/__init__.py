"""``ftmbctl lint``: a static check that a middlebox's source keeps to the programming model.

Recovery replays a middlebox and expects it to do exactly what it did in the record, given the
logged accesses and values (DESIGN §3). Lint reads the source of the class and of its bases with
``ast`` and reports, before anything is recorded, what would break that: the wall clock or
``random`` used directly, ``hash()`` of a str, the order of a set, state kept on ``self`` or at
module level, shared values touched behind ``ctx`` (the catalogue is ``rules.RULES``).

Plain data for every stage: ``lint_spec("nat")`` or ``lint_class(cls)`` returns a ``LintReport``
whose findings carry file, line, column, code, message and fix, and ``to_dict()`` is JSON.
"""

from __future__ import annotations

from collections import defaultdict

from ftmbctl.lint import silence
from ftmbctl.lint.analyse import analyse
from ftmbctl.lint.report import Finding, LintReport, UnusedSilence
from ftmbctl.lint.rules import RULES, Rule
from ftmbctl.middlebox import resolve_middlebox

__all__ = ["RULES", "Finding", "LintReport", "Rule", "UnusedSilence", "lint_class", "lint_spec", "lint_specs"]


def lint_specs(specs: list[str]) -> LintReport:
    """Lint the middleboxes named as ``record -m`` names them (UsageError for a bad name,
    BadInput for a module that cannot be imported or read, or a class that is no Middlebox)."""
    return _lint([(spec, resolve_middlebox(spec)) for spec in specs])


def lint_spec(spec: str) -> LintReport:
    return lint_specs([spec])


def lint_class(cls: type, name: str | None = None) -> LintReport:
    """Lint a middlebox class already at hand (``name`` defaults to its qualified name)."""
    return _lint([(name or f"{cls.__module__}:{cls.__qualname__}", cls)])


def _lint(targets: list[tuple[str, type]]) -> LintReport:
    """Analyse each class, then apply the silencing comments once over all of them: a comment in
    code two classes share silences the finding for both, and is unused only if neither needs it."""
    findings: dict[tuple[str, int, int, str], Finding] = {}
    sources: dict[str, str] = {}
    lines: dict[str, set[int]] = defaultdict(set)
    functions = 0
    for _name, cls in targets:
        analysis = analyse(cls)
        findings.update(analysis.findings)
        sources.update(analysis.sources)
        for path, analysed in analysis.lines.items():
            lines[path] |= analysed
        functions += len(analysis.functions)
    kept, silenced, unused = silence.apply(list(findings.values()), sources, lines)
    return LintReport([name for name, _cls in targets], kept, silenced, unused, functions)
