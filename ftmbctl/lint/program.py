"""The source lint reads: the modules of a middlebox class and of its bases, parsed with ``ast``.

The class is imported (it was named by the user, and resolving it the way ``record`` does is
what tells which class is meant); everything after that is read from source. Only the modules
that define the class and its bases are analysed, never ftmbctl's own ``Middlebox`` base:
a call into any other module (``packets.ip_fields``, the standard library) is judged by its
name at the call, not followed.
"""

from __future__ import annotations

import ast
import inspect
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Union

from ftmbctl.errors import BadInput
from ftmbctl.middlebox import Middlebox

FunctionNode = Union[ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda]
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(eq=False)
class ModuleInfo:
    """One analysed module: its tree, and what its top-level names are."""

    name: str
    path: Path
    text: str
    tree: ast.Module
    aliases: dict[str, str]  # local name -> qualified name, from every import in the module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
    classes: dict[str, ast.ClassDef]
    top_level: set[str]  # every name bound at module level
    values: dict[str, Any] = field(default_factory=dict)  # module-level name -> values.Value

    def qualified_name(self, expr: ast.expr, is_local: Callable[[str], bool]) -> str | None:
        """``t.time`` -> ``"time.time"`` after ``import time as t``; None for a local value.

        A name bound at module level is ``module.name``; a name bound nowhere is a builtin."""
        if isinstance(expr, ast.Attribute):
            base = self.qualified_name(expr.value, is_local)
            return f"{base}.{expr.attr}" if base else None
        if not isinstance(expr, ast.Name) or is_local(expr.id):
            return None
        if expr.id in self.aliases:
            return self.aliases[expr.id]
        if expr.id in self.top_level:
            return f"{self.name}.{expr.id}"
        return f"builtins.{expr.id}"


@dataclass(eq=False)
class ClassInfo:
    cls: type
    module: ModuleInfo
    node: ast.ClassDef
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]


class FunctionRef(NamedTuple):
    """A function to analyse: where it is written and, for a method, the class whose body holds it."""

    module: ModuleInfo
    node: FunctionNode
    owner: ClassInfo | None


@dataclass(eq=False)
class Program:
    """The linted class, its analysed bases (in method resolution order) and their modules."""

    target: type
    classes: list[ClassInfo]
    modules: dict[str, ModuleInfo]
    attributes: dict[str, Any] = field(default_factory=dict)  # self.NAME -> values.Value
    local_state: dict[str, Any] = field(default_factory=dict)  # ctx.local["KEY"] -> values.Value

    def method(self, name: str, after: ClassInfo | None = None) -> FunctionRef | None:
        """What ``self.NAME`` (or, with ``after``, ``super().NAME`` in ``after``) calls, if it is
        analysed code: None when ftmbctl's base, a builtin or an unanalysed class defines it."""
        mro = list(self.target.__mro__)
        start = mro.index(after.cls) + 1 if after is not None else 0
        by_class = {info.cls: info for info in self.classes}
        for klass in mro[start:]:
            info = by_class.get(klass)
            if info is not None and name in info.methods:
                return FunctionRef(info.module, info.methods[name], info)
            if info is None and name in vars(klass):
                return None
        return None

    def function(self, qualified: str) -> FunctionRef | None:
        """An analysed module-level function (``mod.f``) or method (``mod.Class.m``) by name."""
        for module_name, module in self.modules.items():
            if not qualified.startswith(module_name + "."):
                continue
            parts = qualified[len(module_name) + 1:].split(".")
            if len(parts) == 1 and parts[0] in module.functions:
                return FunctionRef(module, module.functions[parts[0]], None)
            if len(parts) == 2 and parts[0] in module.classes:
                info = next((c for c in self.classes if c.node is module.classes[parts[0]]), None)
                method = _methods(module.classes[parts[0]]).get(parts[1])
                if method is not None:
                    return FunctionRef(module, method, info)
        return None


def load_program(cls: type) -> Program:
    """Parse the modules of ``cls`` and of each base that is not ftmbctl's ``Middlebox``. A base
    compiled from C has no source to read: it is judged like any library class, by name."""
    modules: dict[str, ModuleInfo] = {}
    classes = []
    for klass in cls.__mro__:
        if klass is Middlebox or klass is object or klass.__module__ == "builtins":
            continue
        module = sys.modules.get(klass.__module__)
        source = _source_file(module) if module is not None else None
        if source is None:
            if klass is cls:
                raise BadInput(f"{cls.__qualname__}: module {cls.__module__!r} has no Python source to check")
            continue
        if module.__name__ not in modules:
            modules[module.__name__] = _load_module(module, source)
        info = modules[module.__name__]
        node = _find_class(info.tree, klass.__qualname__)
        if node is None:
            raise BadInput(f"{info.path}: holds no class statement for {klass.__qualname__} (made at run time?)")
        classes.append(ClassInfo(klass, info, node, _methods(node)))
    return Program(cls, classes, modules)


def _source_file(module: Any) -> str | None:
    try:
        return inspect.getsourcefile(module)
    except TypeError:  # a builtin or compiled module
        return None


def _load_module(module: Any, source: str) -> ModuleInfo:
    path = Path(source).resolve()
    try:
        with tokenize.open(path) as handle:  # honours a coding declaration, as the import did
            text = handle.read()
        tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the middlebox source ({exc})") from None
    except SyntaxError as exc:
        raise BadInput(f"{path}: line {exc.lineno}: cannot parse the middlebox source: {exc.msg}") from None
    package = getattr(module, "__package__", None) or ""
    top_level = _top_level_names(tree)
    return ModuleInfo(module.__name__, path, text, tree, _aliases(tree, package),
                      {n.name: n for n in tree.body if isinstance(n, DEFS)},
                      {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}, top_level)


def _aliases(tree: ast.Module, package: str) -> dict[str, str]:
    """Local name -> qualified name for every import in the module, wherever it is written."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    head = alias.name.partition(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".strip(".")
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (*DEFS, ast.ClassDef)):
            names.add(stmt.name)
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def _methods(node: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {stmt.name: stmt for stmt in node.body if isinstance(stmt, DEFS)}


def _find_class(tree: ast.Module, qualname: str) -> ast.ClassDef | None:
    """The class statement of ``qualname`` (``Outer.Inner``, ``make.<locals>.Box``)."""
    scope: ast.AST = tree
    found: ast.AST | None = None
    for part in qualname.split("."):
        if part == "<locals>":
            continue
        found = next((n for n in getattr(scope, "body", []) if isinstance(n, (*DEFS, ast.ClassDef))
                      and n.name == part), None)
        if found is None:
            return None
        scope = found
    return found if isinstance(found, ast.ClassDef) else None
