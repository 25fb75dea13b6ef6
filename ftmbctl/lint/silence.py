"""Silencing comments: ``# ftmb: ignore[FTMB211] the loop only sums ints``.

A comment silences the findings of the codes it names on its own line, and nothing else: there
is no file-wide or rule-wide switch, and no bare ``ignore`` (a comment must say what it
silences). Text after the brackets is the reason, for the reader. A code that silences nothing
is reported (FTMB900), and so is a comment lint cannot read (FTMB901), but only on lines of
code that lint analysed: a comment in a method the checked class never runs says nothing.
"""

from __future__ import annotations

import io
import re
import tokenize
from typing import NamedTuple

from ftmbctl.lint.report import Finding, UnusedSilence
from ftmbctl.lint.rules import RULES, SILENCEABLE

_OURS = re.compile(r"#\s*ftmb\s*:")
_DIRECTIVE = re.compile(r"#\s*ftmb\s*:\s*ignore\[(?P<codes>[^\]]*)\]")


class Comment(NamedTuple):
    line: int
    col: int  # from 1
    text: str
    codes: tuple[str, ...]  # as written; empty when the comment is malformed


def comments(text: str) -> dict[int, Comment]:
    """Every ``# ftmb:`` comment of a source, by line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and _OURS.match(token.string):
            match = _DIRECTIVE.match(token.string)
            codes = tuple(c.strip() for c in match.group("codes").split(",")) if match else ()
            found[token.start[0]] = Comment(token.start[0], token.start[1] + 1, token.string.strip(), codes)
    return found


def apply(findings: list[Finding], sources: dict[str, str], analysed: dict[str, set[int]]
          ) -> tuple[list[Finding], list[Finding], list[UnusedSilence]]:
    """(findings to report, findings silenced, unused codes). The findings to report include one
    FTMB900 per unused code and one FTMB901 per unreadable comment or unknown code."""
    by_file = {path: comments(text) for path, text in sources.items()}
    kept, silenced, used = [], [], set()
    for finding in findings:
        comment = by_file.get(finding.file, {}).get(finding.line)
        if comment is not None and finding.code in comment.codes and finding.code in SILENCEABLE:
            silenced.append(finding)
            used.add((finding.file, finding.line, finding.code))
        else:
            kept.append(finding)
    unused = []
    for path, found in by_file.items():
        for comment in found.values():
            if comment.line not in analysed.get(path, set()):
                continue
            if not comment.codes:
                kept.append(_about(path, comment, "FTMB901", f"`{comment.text}` names no code"))
            for code in comment.codes:
                if code not in SILENCEABLE:
                    why = "cannot be silenced" if code in RULES else "is no rule lint knows"
                    kept.append(_about(path, comment, "FTMB901", f"`{code}` in `{comment.text}` {why}"))
                elif (path, comment.line, code) not in used:
                    unused.append(UnusedSilence(path, comment.line, comment.col, code))
                    kept.append(_about(path, comment, "FTMB900", f"`{code}` in `{comment.text}`"))
    return sorted(set(kept)), sorted(silenced), sorted(unused)


def _about(path: str, comment: Comment, code: str, what: str) -> Finding:
    return Finding(path, comment.line, comment.col, code, RULES[code].message.format(what=what))
