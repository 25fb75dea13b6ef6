"""Which middlebox code a command that reads a run directory may run (CONVENTIONS 13).

A run directory is data from someone else: its manifest names the middlebox it was recorded with,
but naming is all it does. Commands that replay a run import only what the user names: a
built-in middlebox (part of this ftmbctl), or the ``--middlebox`` the user passes. The manifest
keeps the SHA-256 of the middlebox's source (``source_sha256``), so the code the user names is
checked against the code that was recorded before any crash point is tried: a payload shipped in
a run directory never runs, and verify never checks other code than was recorded.

The source of a middlebox is its module's file when the module stands alone (a ``file.py:Class``
or a top-level module), and every ``.py`` file of its package directory otherwise (a middlebox
module imports its siblings: ``ftmbctl.middleboxes.nat`` uses ``ftmbctl.middleboxes.packets``).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

from ftmbctl.errors import BadInput, DamagedRun, UsageError
from ftmbctl.middlebox import BUILTINS


def source_files(cls: type) -> tuple[Path, list[Path]]:
    """(directory, files): the files whose bytes make up ``cls``'s middlebox, in a stable order."""
    module = sys.modules.get(cls.__module__)
    path = Path(inspect.getfile(module if module is not None else cls)).resolve()
    package = getattr(module, "__package__", None) or ""
    if package and (path.parent / "__init__.py").is_file():
        return path.parent, sorted(path.parent.rglob("*.py"), key=lambda p: p.relative_to(path.parent).as_posix())
    return path.parent, [path]


def source_sha256(cls: type) -> str:
    """SHA-256 over the source files of ``cls``: each file's path relative to the first one's
    directory and its bytes, so a renamed or moved file changes it too."""
    base, files = source_files(cls)
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(path.relative_to(base).as_posix().encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def spec_to_run(manifest: dict[str, Any], named: str | None, where: Path) -> str:
    """The middlebox spec a command may import to replay the run in ``where``: ``named`` (the
    user's ``--middlebox``), or the manifest's when it is a built-in; never a module or file the
    manifest alone names."""
    recorded = str((manifest.get("middlebox") or {}).get("spec", ""))
    if named:
        return named
    if recorded in BUILTINS or recorded in BUILTINS.values():  # by name, or by its module path
        return recorded
    if ":" not in recorded:
        raise DamagedRun(f"{where / 'manifest.json'}: names the middlebox {recorded!r}, which is neither built in "
                         "nor a module:Class or file.py:Class")
    raise UsageError(f"{where} was recorded with the middlebox {recorded!r}, which is not built in: name the "
                     "code to run with --middlebox (ftmbctl never imports code that a run directory names)")


def check_source(cls: type, spec: str, manifest: dict[str, Any], where: Path) -> None:
    """The middlebox ``spec`` (resolved to ``cls``) must be the code the run was recorded with."""
    mb = manifest.get("middlebox") or {}
    recorded_spec = str(mb.get("spec", ""))
    named, kept = BUILTINS.get(spec, spec), BUILTINS.get(recorded_spec, recorded_spec)  # built-ins by module path
    if (spec in BUILTINS or recorded_spec in BUILTINS) and named != kept:
        raise UsageError(f"--middlebox {spec!r} is not the middlebox {where} was recorded with ({recorded_spec!r})")
    if named.rpartition(":")[2] != kept.rpartition(":")[2]:
        raise UsageError(f"--middlebox {spec!r} names class {named.rpartition(':')[2]!r}, but {where} was "
                         f"recorded with {recorded_spec!r}")
    recorded = mb.get("source_sha256")
    if recorded is None:
        return  # a run recorded before ftmbctl kept it: nothing to compare
    now = source_sha256(cls)
    if now != recorded:
        raise BadInput(f"{where}: the middlebox {spec!r} is not the code this run was recorded with (its source "
                       f"SHA-256 is {now[:12]}..., recorded {str(recorded)[:12]}...): record again, or name the "
                       "recorded code with --middlebox")
