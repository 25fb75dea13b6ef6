"""The walk: every function a middlebox can run, from its hooks, checked statement by statement.

Packet time starts at ``process``; setup at ``__init__``, ``declare`` and ``new_local_state``
(``Middlebox``'s hooks that record and recovery call before any packet). From each, calls are
followed into analysed code: methods through ``self`` and ``super()``, functions of the analysed
modules by name, and the functions handed to ``ctx.update`` and ``ctx.apply`` (a lambda, a
nested or module function, or what a factory call returns), which are also checked as code that
runs *inside* one shared access. A function is walked once per way it is reached: phase, access,
and what its parameters hold at the call (the context, ``ctx.local``, a set, state on ``self``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ftmbctl.lint import calls
from ftmbctl.lint.program import FunctionNode, FunctionRef, ModuleInfo, Program, load_program
from ftmbctl.lint.report import Finding
from ftmbctl.lint.rules import RULES
from ftmbctl.lint.values import (CTX, HANDLE, HANDLE_ATTRS, ITERATOR, MODULE, MUTABLE, PATH, RNG, SELF, SELF_OBJ,
                                 SET, SHARED_READ, THREAD_LOCAL, UNKNOWN, VIEW, Scope, Value, element_of,
                                 binds_self, infer_program, method_scope, parameters, self_seeds)

PACKET, SETUP = "packet", "setup"
ENTRIES = (("process", PACKET), ("__init__", SETUP), ("declare", SETUP), ("new_local_state", SETUP))
NONDET = frozenset(("clock", "clock_ns", "random", "randint"))
_WRITE_RULES = {SELF: "FTMB301", MODULE: "FTMB302", SHARED_READ: "FTMB422"}
_CACHES = frozenset(("functools.lru_cache", "functools.cache"))
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.MatMult: "@", ast.Div: "/", ast.FloorDiv: "//",
              ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&",
              ast.BitXor: "^"}


@dataclass(frozen=True)
class Task:
    """One way a function is reached. ``access``: it runs inside one shared access ("update" or
    "apply"); ``returns_access``: it is a factory whose returned function does."""

    ref: FunctionRef
    phase: str
    access: str | None
    returns_access: str | None
    seeds: tuple[tuple[str, Value], ...]


class Analysis:
    """The findings of one middlebox class, and which lines of which files were analysed."""

    def __init__(self, cls: type) -> None:
        self.program: Program = load_program(cls)
        infer_program(self.program)
        self.findings: dict[tuple[str, int, int, str], Finding] = {}  # one per place and code
        self.lines: dict[str, set[int]] = defaultdict(set)  # the lines of every function walked
        self.functions: set[int] = set()  # the functions walked (ids of their nodes)
        self.sources = {str(m.path): m.text for m in self.program.modules.values()}
        self._text_lines = {str(m.path): m.text.splitlines() for m in self.program.modules.values()}
        self._todo: list[Task] = []
        self._seen: set[tuple[Any, ...]] = set()

    def run(self) -> Analysis:
        for name, phase in ENTRIES:
            ref = self.program.method(name)
            if ref is None:
                continue
            seeds = self_seeds(ref.node, name)
            if name == "process" and len(parameters(ref.node)) > 1:
                seeds[parameters(ref.node)[1].arg] = Value(CTX)
            self.add(Task(ref, phase, None, None, _frozen(seeds)))
        while self._todo:
            task = self._todo.pop()
            scope = method_scope(self.program, task.ref.module, task.ref.node, seeds=dict(task.seeds))
            Walker(self, task.ref.module, task.ref.owner, task.phase, task.access, task.returns_access, scope
                   ).walk(task.ref.node)
        return self

    def add(self, task: Task) -> None:
        key = (id(task.ref.node), task.phase, task.access, task.returns_access, task.seeds)
        if key not in self._seen:
            self._seen.add(key)
            self._todo.append(task)

    def report(self, code: str, phase: str, module: ModuleInfo, node: ast.AST, what: str) -> None:
        if RULES[code].packet_only and phase != PACKET:
            return
        path = str(module.path)
        line = node.lineno
        text = self._text_lines[path][line - 1] if line <= len(self._text_lines[path]) else ""
        col = len(text.encode("utf-8")[:node.col_offset].decode("utf-8", "replace")) + 1  # ast counts bytes
        self.findings.setdefault((path, line, col, code), Finding(path, line, col, code,
                                                                 RULES[code].message.format(what=what)))


class Walker(ast.NodeVisitor):
    """Checks one function body in statement order, keeping what its names hold as it goes."""

    def __init__(self, analysis: Analysis, module: ModuleInfo, owner: Any, phase: str, access: str | None,
                 returns_access: str | None, scope: Scope) -> None:
        self.analysis, self.module, self.owner = analysis, module, owner
        self.phase, self.access, self.returns_access = phase, access, returns_access
        self.scope = scope
        self._order_free: set[int] = set()  # comprehensions consumed by sorted(), len(), set()...
        self._called: set[int] = set()  # names already judged as the function of a call

    # ---- driving ----
    def walk(self, node: FunctionNode) -> None:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        self.analysis.lines[str(self.module.path)].update(range(first, (node.end_lineno or node.lineno) + 1))
        self.analysis.functions.add(id(node))
        if isinstance(node, ast.Lambda):
            if self.access == "update":
                self._check_stored(node.body, "returning {} from a ctx.update function")
            self.visit(node.body)
            return
        for decorator in node.decorator_list:
            name = self.scope.qualified_name(decorator.func if isinstance(decorator, ast.Call) else decorator)
            if name in _CACHES:
                self.report("FTMB304", decorator, f"`@{name}` on `{node.name}`")
        for stmt in node.body:
            self.visit(stmt)

    def report(self, code: str, node: ast.AST, what: str) -> None:
        self.analysis.report(code, self.phase, self.module, node, what)

    def nested(self, node: FunctionNode, access: str | None, seeds: dict[str, Value] | None = None) -> None:
        scope = method_scope(self.analysis.program, self.module, node, self.scope, seeds)
        scope.defs = self.scope.defs
        Walker(self.analysis, self.module, self.owner, self.phase, access, None, scope).walk(node)

    # ---- definitions ----
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.scope.defs[node.name] = node
        self.nested(node, self.access)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.nested(node, self.access)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """A class made inside a function is its own code, not followed."""

    # ---- statements ----
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        value = self.scope.value(node.value)
        for target in node.targets:
            self._check_write(target, "`{} = ...`")
            if isinstance(target, (ast.Tuple, ast.List)) and value.type == SET:
                self.report("FTMB211", node.value, f"unpacking `{_text(node.value)}`")
            self.scope.bind(target, value)
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None:
            return
        self.visit(node.value)
        self._check_write(node.target, "`{} = ...`")
        self.scope.bind(node.target, self.scope.value(node.value))
        self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        target, how = node.target, f"`{{}} {_OPERATORS.get(type(node.op), '?')}= ...`"
        held = self.scope.value(target)
        if isinstance(target, ast.Name) and held.type in MUTABLE and held.origin in _WRITE_RULES:
            self.report(_WRITE_RULES[held.origin], target, how.format(target.id))  # in place: += on a list
        else:
            self._check_write(target, how)
        self.visit(target)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_write(target, "`del {}`")
            self.visit(target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        iterated = self.scope.value(node.iter)
        if iterated.type == SET:
            self.report("FTMB211", node.iter, f"iterating `{_text(node.iter)}`")
        self.scope.bind(node.target, element_of(iterated))
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is None:
            return
        if self.access == "update":
            self._check_stored(node.value, "returning {} from a ctx.update function")
        if self.returns_access is not None:
            self._hand_to_access(node.value, self.returns_access)
        self.visit(node.value)

    # ---- expressions ----
    def visit_ListComp(self, node: ast.ListComp | ast.GeneratorExp | ast.DictComp | ast.SetComp) -> None:
        for generator in node.generators:
            self.visit(generator.iter)
            iterated = self.scope.value(generator.iter)
            if iterated.type == SET and not isinstance(node, ast.SetComp) and id(node) not in self._order_free:
                self.report("FTMB211", generator.iter, f"iterating `{_text(generator.iter)}`")
            self.scope.bind(generator.target, element_of(iterated))
            for condition in generator.ifs:
                self.visit(condition)
        for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
            self.visit(part)

    visit_GeneratorExp = visit_SetComp = visit_DictComp = visit_ListComp

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.scope.bind(node.target, self.scope.value(node.value))

    def visit_Starred(self, node: ast.Starred) -> None:
        if isinstance(node.ctx, ast.Load) and self.scope.value(node.value).type == SET:
            self.report("FTMB211", node.value, f"unpacking `*{_text(node.value)}`")
        self.generic_visit(node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        if self.scope.value(node.value).type == SET:
            self.report("FTMB211", node.value, f"formatting `{_text(node.value)}`")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and id(node) not in self._called:
            self._check_reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load) and id(node) not in self._called:
            self._check_reference(node)
        base = self.scope.value(node.value)
        if base.type == HANDLE and node.attr not in HANDLE_ATTRS:
            self.report("FTMB411", node, f"`{_text(node)}`")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = self.scope.qualified_name(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        if name is not None:
            self._check_library_call(name, node)
        if isinstance(func, ast.Attribute):
            self._check_method_call(func, node)
        if name is not None:
            self._check_consumer(name, node)
            ref = self.analysis.program.function(name)
            if ref is not None:
                self._follow(ref, node, bound=False)
        self.generic_visit(node)

    # ---- the checks ----
    def _check_reference(self, node: ast.Name | ast.Attribute) -> None:
        name = self.scope.qualified_name(node)
        code = calls.reference_rule(name) if name else None
        if code is not None:
            self.report(code, node, _shown(name))
        held = self.scope.value(node)
        if held.type in (ITERATOR, RNG) and held.origin in (SELF, MODULE):
            self.report("FTMB305", node, f"`{_text(node)}`")
        elif held.type == THREAD_LOCAL:
            self.report("FTMB303", node, f"`{_text(node)}`")

    def _check_library_call(self, name: str, node: ast.Call) -> None:
        code = calls.reference_rule(name) or calls.call_rule(name, node)
        if code is None:
            return
        self._called.add(id(node.func))
        self.report(code, node, _shown(name) + "()" + (" without a seed" if name == "random.Random" else ""))

    def _check_method_call(self, func: ast.Attribute, node: ast.Call) -> None:
        receiver, method = self.scope.value(func.value), func.attr
        if receiver.type == CTX:
            self._check_ctx_call(method, node)
        elif receiver.type == VIEW and method == "put":
            stored = _argument(node, 1, "value")
            if stored is not None:
                self._check_stored(stored, "`view.put()` of {}")
        if method in calls.MUTATORS and receiver.type != HANDLE and receiver.origin in _WRITE_RULES:
            self.report(_WRITE_RULES[receiver.origin], node, f"`{_text(func)}()`")
        if receiver.type == SET and method == "pop":
            self.report("FTMB211", node, f"`{_text(func)}()`")
        if receiver.type == PATH and method in calls.PATH_IO:
            self.report("FTMB122", node, f"`{_text(func)}()`")
        if method in calls.ORDER_DEPENDENT_METHODS:
            self._check_set_arguments(node)
        if receiver.type == SELF_OBJ:
            ref = self.analysis.program.method(method)
        elif _is_super(func.value) and self.owner is not None:
            ref = self.analysis.program.method(method, after=self.owner)
        else:
            return
        if ref is not None:
            self._follow(ref, node, bound=True)

    def _check_ctx_call(self, method: str, node: ast.Call) -> None:
        if self.access is not None:
            self.report("FTMB401" if method in NONDET else "FTMB402", node, f"`ctx.{method}()`")
        if method in ("update", "apply"):
            fn = _argument(node, 2 if method == "update" else 1, "fn")
            if fn is not None:
                self._hand_to_access(fn, method)
        elif method == "put":
            stored = _argument(node, 2, "value")
            if stored is not None:
                self._check_stored(stored, "`ctx.put()` of {}")

    def _check_consumer(self, name: str, node: ast.Call) -> None:
        keyed = any(k.arg == "key" for k in node.keywords)
        if name in calls.ORDER_FREE or (name in calls.MIN_MAX and not keyed):
            self._order_free.update(id(a) for a in node.args)
        elif (name in calls.ORDER_DEPENDENT or name.startswith(calls.ORDER_DEPENDENT_MODULES)
              or name in calls.MIN_MAX):
            self._check_set_arguments(node)
        elif name in ("builtins.setattr", "builtins.delattr") and node.args:
            held = self.scope.value(node.args[0])
            if held.origin in _WRITE_RULES:
                self.report(_WRITE_RULES[held.origin], node, f"`{_shown(name)}()` on `{_text(node.args[0])}`")

    def _check_set_arguments(self, node: ast.Call) -> None:
        for arg in node.args:
            if not isinstance(arg, ast.Starred) and self.scope.value(arg).type == SET:
                self.report("FTMB211", arg, f"`{_text(node)}`")

    def _check_write(self, target: ast.expr, how: str) -> None:
        """An assignment, augmented assignment or ``del`` of ``target``: whose state changes?"""
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._check_write(element.value if isinstance(element, ast.Starred) else element, how)
            return
        if isinstance(target, ast.Name):
            if target.id in self.scope.declared_global:
                self.report("FTMB302", target, how.format(target.id) + f" (`global {target.id}`)")
            return
        if not isinstance(target, (ast.Attribute, ast.Subscript)):
            return
        holder = self.scope.value(target.value)
        if holder.type == THREAD_LOCAL:
            self.report("FTMB303", target, how.format(_text(target)))
        elif holder.type != HANDLE and holder.origin in _WRITE_RULES:
            self.report(_WRITE_RULES[holder.origin], target, how.format(_text(target)))

    def _check_stored(self, value: ast.expr, how: str) -> None:
        kind = self.scope.value(value).type
        if kind in MUTABLE:
            self.report("FTMB421", value, how.format(f"a {kind}"))

    # ---- following calls ----
    def _follow(self, ref: FunctionRef, call: ast.Call, bound: bool) -> None:
        seeds = _call_seeds(self.scope, ref.node, call, bound)
        self.analysis.add(Task(ref, self.phase, self.access, None, seeds))

    def _hand_to_access(self, fn: ast.expr, mode: str) -> None:
        """``fn`` runs inside one shared access: walk it so (its first parameter is the map's
        view for ctx.apply, the old value for ctx.update)."""
        first = Value(VIEW) if mode == "apply" else Value(origin=SHARED_READ)
        if isinstance(fn, ast.Call) and self.scope.qualified_name(fn.func) == "functools.partial" and fn.args:
            fn, first = fn.args[0], UNKNOWN  # partial binds the first parameters: the value goes to a later one
        if isinstance(fn, ast.Lambda) or (isinstance(fn, ast.Name) and fn.id in self.scope.defs):
            node = fn if isinstance(fn, ast.Lambda) else self.scope.defs[fn.id]
            params = parameters(node)
            self.nested(node, mode, {params[0].arg: first} if params else None)
            return
        if isinstance(fn, ast.Call):  # a factory: the function it returns runs inside the access
            ref, bound = self._callee(fn.func)
            if ref is not None:
                self.analysis.add(Task(ref, self.phase, None, mode, _call_seeds(self.scope, ref.node, fn, bound)))
            return
        ref, bound = self._callee(fn)
        if ref is not None:
            seeds = self_seeds(ref.node, "") if bound else {}
            params = parameters(ref.node)[1 if bound and binds_self(ref.node) else 0:]
            if params:
                seeds[params[0].arg] = first
            self.analysis.add(Task(ref, self.phase, mode, None, _frozen(seeds)))

    def _callee(self, func: ast.expr) -> tuple[FunctionRef | None, bool]:
        """The analysed function ``func`` names (``self.m``, or a function by name), and whether
        it is bound to ``self``."""
        if isinstance(func, ast.Attribute) and self.scope.value(func.value).type == SELF_OBJ:
            return self.analysis.program.method(func.attr), True
        name = self.scope.qualified_name(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        return (self.analysis.program.function(name) if name else None), False


def analyse(cls: type) -> Analysis:
    """Walk the middlebox class ``cls`` (raises BadInput when its source cannot be read)."""
    return Analysis(cls).run()


def _call_seeds(scope: Scope, node: FunctionNode, call: ast.Call, bound: bool) -> tuple[tuple[str, Value], ...]:
    """What the parameters of ``node`` hold when ``call`` calls it (``bound``: through self)."""
    positional = [*node.args.posonlyargs, *node.args.args]
    seeds = self_seeds(node, "") if bound else {}
    if bound and positional and binds_self(node):
        positional.pop(0)
    for arg, param in zip(call.args, positional):
        if isinstance(arg, ast.Starred):
            break
        seeds[param.arg] = scope.value(arg)
    names = {p.arg for p in parameters(node)}
    for keyword in call.keywords:
        if keyword.arg in names:
            seeds[keyword.arg] = scope.value(keyword.value)
    return _frozen(seeds)


def _frozen(seeds: dict[str, Value]) -> tuple[tuple[str, Value], ...]:
    """Seeds as part of a task's identity: only what is known, in a stable order."""
    return tuple(sorted(((k, v) for k, v in seeds.items() if v != UNKNOWN), key=_seed_key))


def _seed_key(item: tuple[str, Value]) -> tuple[str, str, str]:
    return item[0], item[1].type or "", item[1].origin or ""


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[:index + 1]):
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _shown(name: str) -> str:
    return name.removeprefix("builtins.")


def _text(node: ast.AST, limit: int = 48) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[:limit - 3] + "..."

