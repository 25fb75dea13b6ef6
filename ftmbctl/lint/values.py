"""A small local inference of what an expression holds, enough to judge a use of it.

A ``Value`` has a *type* (a set, a list, the context, a shared-variable handle...) and an
*origin* (state on ``self``, at module level, a value read from a shared map). Both come from
what the analysed code itself says: literals, constructor calls (``set()``, ``random.Random()``),
set operations, annotations (``s: set[str]``, ``-> frozenset[int]``), ``declare()``'s
``shared.map(...)``, ``new_local_state()``'s dict literal, and assignments, followed in statement
order within a function (the last assignment before a use wins; branches are not merged).
What the code does not say (a value returned by another module, an element of a list of sets)
is unknown, and an unknown value breaks no rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from ftmbctl.lint.calls import SET_RESULT_METHODS
from ftmbctl.lint.program import DEFS, FunctionNode, ModuleInfo, Program

# types
SET, LIST, DICT, BYTEARRAY = "set", "list", "dict", "bytearray"  # SET: set or frozenset
MUTABLE = frozenset((SET, LIST, DICT, BYTEARRAY))  # what a shared map refuses
RNG, ITERATOR, THREAD_LOCAL, PATH = "rng", "iterator", "thread-local", "path"
CTX, CTX_LOCAL, VIEW = "ctx", "ctx.local", "view"  # VIEW: what ctx.apply hands its function
DECLARER, HANDLE, SELF_OBJ = "declarer", "handle", "self"  # declare()'s argument, what it returns
# origins: where the object lives (a change to it changes that state)
SELF, MODULE, SHARED_READ, INTERNALS = "self", "module", "shared-read", "internals"
_ALIASING = frozenset((SELF, MODULE, SHARED_READ))

SHARED_READS = frozenset(("read", "get", "pop", "update", "apply"))  # ctx calls that return a map's value
HANDLE_ATTRS = frozenset(("name", "var_id", "shard_for", "shards"))  # what code may use of a handle
_ALIAS_METHODS = frozenset(("get", "setdefault", "values", "items"))  # return (parts of) the object itself

_CONSTRUCTORS = {
    "builtins.set": SET, "builtins.frozenset": SET, "builtins.list": LIST, "builtins.sorted": LIST,
    "builtins.dict": DICT, "builtins.bytearray": BYTEARRAY, "collections.deque": LIST,
    "collections.defaultdict": DICT, "collections.OrderedDict": DICT, "collections.Counter": DICT,
    "random.Random": RNG, "random.SystemRandom": RNG, "itertools.count": ITERATOR, "itertools.cycle": ITERATOR,
    "builtins.iter": ITERATOR, "threading.local": THREAD_LOCAL, "pathlib.Path": PATH, "pathlib.PurePath": PATH,
}
_ANNOTATED = {"set": SET, "frozenset": SET, "Set": SET, "FrozenSet": SET, "AbstractSet": SET, "MutableSet": SET,
              "list": LIST, "List": LIST, "dict": DICT, "Dict": DICT, "bytearray": BYTEARRAY}


@dataclass(frozen=True)
class Value:
    type: str | None = None
    origin: str | None = None


UNKNOWN = Value()


class Scope:
    """The names of one function (or of a module, without ``parent`` and ``node``) and their values."""

    def __init__(self, program: Program, module: ModuleInfo, node: FunctionNode | None = None,
                 parent: Scope | None = None) -> None:
        self.program, self.module, self.parent = program, module, parent
        self.bound, self.declared_global = bound_names(node) if node is not None else (set(), set())
        self.values: dict[str, Value] = {}
        self.defs: dict[str, FunctionNode] = {}  # nested functions by name

    def is_local(self, name: str) -> bool:
        if name in self.declared_global:
            return False
        return name in self.bound or (self.parent is not None and self.parent.is_local(name))

    def lookup(self, name: str) -> Value:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.declared_global:
                break
            if name in scope.bound:
                return scope.values.get(name, UNKNOWN)
            scope = scope.parent
        if name in self.module.top_level:
            return Value(self.module.values.get(name, UNKNOWN).type, MODULE)
        return UNKNOWN

    def qualified_name(self, expr: ast.expr) -> str | None:
        return self.module.qualified_name(expr, self.is_local)

    def bind(self, target: ast.expr, value: Value) -> None:
        """Record what an assignment gives ``target`` (parts of an unpacked value keep its origin)."""
        if isinstance(target, ast.Name):
            if target.id not in self.declared_global:
                self.values[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind(element.value if isinstance(element, ast.Starred) else element, element_of(value))
        elif isinstance(target, ast.Starred):
            self.bind(target.value, value)

    # ---- what an expression holds ----
    def value(self, expr: ast.expr) -> Value:
        if isinstance(expr, ast.Name):
            return self.lookup(expr.id)
        if isinstance(expr, ast.Attribute):
            return self._attribute(self.value(expr.value), expr.attr)
        if isinstance(expr, ast.Subscript):
            return self._item(self.value(expr.value), expr.slice)
        if isinstance(expr, ast.Call):
            return self._call(expr)
        if isinstance(expr, (ast.Set, ast.SetComp)):
            return Value(SET)
        if isinstance(expr, (ast.List, ast.ListComp)):
            return Value(LIST)
        if isinstance(expr, (ast.Dict, ast.DictComp)):
            return Value(DICT)
        if isinstance(expr, ast.BinOp):
            return self._binop(expr)
        if isinstance(expr, ast.BoolOp):
            values = {self.value(v).type for v in expr.values if not _is_none(v)}
            return Value(SET) if values == {SET} else UNKNOWN
        if isinstance(expr, ast.IfExp):
            body, orelse = self.value(expr.body), self.value(expr.orelse)
            return Value(body.type) if body.type == orelse.type else UNKNOWN
        if isinstance(expr, ast.NamedExpr):
            return self.value(expr.value)
        return UNKNOWN

    def _attribute(self, base: Value, attr: str) -> Value:
        if base.type == CTX and attr == "local":
            return Value(CTX_LOCAL)
        if base.type == SELF_OBJ:
            return Value(self.program.attributes.get(attr, UNKNOWN).type, SELF)
        if base.type == HANDLE:
            return Value(HANDLE) if attr == "shards" else Value(origin=INTERNALS)
        if base.type == THREAD_LOCAL or base.origin == INTERNALS:
            return Value(origin=base.origin or MODULE)
        return Value(origin=base.origin) if base.origin in _ALIASING else UNKNOWN

    def _item(self, base: Value, index: ast.expr) -> Value:
        if base.type == CTX_LOCAL:
            key = index.value if isinstance(index, ast.Constant) else None
            return Value(self.program.local_state.get(key, UNKNOWN).type) if isinstance(key, str) else UNKNOWN
        if base.type == HANDLE:
            return Value(HANDLE)
        return element_of(base)

    def _call(self, call: ast.Call) -> Value:
        func = call.func
        if isinstance(func, ast.Attribute):
            receiver, method = self.value(func.value), func.attr
            if ((receiver.type == CTX and method in SHARED_READS)
                    or (receiver.type == VIEW and method in ("get", "pop"))):
                return Value(origin=SHARED_READ)
            if receiver.type == DECLARER or (receiver.type == HANDLE and method == "shard_for"):
                return Value(HANDLE)
            if receiver.type == SET and method in SET_RESULT_METHODS:
                return Value(SET)
            if receiver.origin in _ALIASING and method in _ALIAS_METHODS:
                return Value(origin=receiver.origin)
            if receiver.type == SELF_OBJ:
                ref = self.program.method(method)
                return Value(returned_type(ref.node)) if ref is not None else UNKNOWN
        name = self.qualified_name(func)
        if name is None:
            return UNKNOWN
        if name in _CONSTRUCTORS:
            return Value(_CONSTRUCTORS[name])
        ref = self.program.function(name)
        return Value(returned_type(ref.node)) if ref is not None else UNKNOWN

    def _binop(self, expr: ast.BinOp) -> Value:
        left, right = self.value(expr.left), self.value(expr.right)
        if isinstance(expr.op, (ast.BitOr, ast.BitAnd, ast.Sub, ast.BitXor)):
            if SET in (left.type, right.type) or _is_dict_view(expr.left) or _is_dict_view(expr.right):
                return Value(SET)  # a set operation (on dict views too, which give a set)
        if isinstance(expr.op, ast.Div) and left.type == PATH:
            return Value(PATH)
        return UNKNOWN


def element_of(value: Value) -> Value:
    """What an element (item, unpacked part, loop variable) of ``value`` holds."""
    if value.type == HANDLE:
        return Value(HANDLE)
    return Value(origin=value.origin) if value.origin in _ALIASING or value.origin == INTERNALS else UNKNOWN


def annotation_type(node: ast.expr | None) -> str | None:
    """``set[str]``, ``frozenset | None``, ``"Set[int]"`` -> SET, and so on; None when it says nothing."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return annotation_type(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        types = {annotation_type(side) for side in (node.left, node.right) if not _is_none(side)}
        return types.pop() if len(types) == 1 else None
    if isinstance(node, ast.Subscript):
        node = node.value
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    return _ANNOTATED.get(name or "")


def returned_type(node: FunctionNode) -> str | None:
    return None if isinstance(node, ast.Lambda) else annotation_type(node.returns)


def parameters(node: FunctionNode) -> list[ast.arg]:
    """Positional parameters first, in order, then keyword-only ones, then *args and **kwargs."""
    args = node.args
    rest = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *rest]


def bound_names(node: FunctionNode) -> tuple[set[str], set[str]]:
    """(names local to the function, names it declares global). Imports are left out: their
    names resolve through the module's aliases wherever the import is written."""
    bound = {a.arg for a in parameters(node)}
    declared: set[str] = set()
    todo: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    while todo:
        current = todo.pop()
        if isinstance(current, (*DEFS, ast.ClassDef)):
            bound.add(current.name)
            continue  # its own body is its own scope
        if isinstance(current, ast.Lambda):
            continue
        if isinstance(current, ast.Name) and isinstance(current.ctx, (ast.Store, ast.Del)):
            bound.add(current.id)
        elif isinstance(current, ast.ExceptHandler) and current.name:
            bound.add(current.name)
        elif isinstance(current, ast.Global):
            declared.update(current.names)
        todo.extend(ast.iter_child_nodes(current))
    return bound - declared, declared


def infer_program(program: Program) -> None:
    """Fill what ``Scope.value`` reads: module-level values, ``self`` attributes and the keys of
    ``ctx.local``. Attributes come from every assignment to ``self.NAME`` in the analysed
    classes (a base first, so a subclass's assignment wins) and from class bodies."""
    for module in program.modules.values():
        scope = Scope(program, module)
        for stmt in module.tree.body:
            for target, value in _assignments(stmt):
                if isinstance(target, ast.Name):
                    module.values[target.id] = Value(scope.value(value).type)
    for info in reversed(program.classes):
        scope = Scope(program, info.module)
        for stmt in info.node.body:
            for target, value in _assignments(stmt):
                if isinstance(target, ast.Name):
                    _keep_typed(program.attributes, target.id, Value(scope.value(value).type))
        for method in info.methods.values():
            _infer_attributes(program, info.module, method)
    local_state = program.method("new_local_state")
    if local_state is not None:
        program.local_state = _returned_dict(program, local_state.module, local_state.node)


def method_scope(program: Program, module: ModuleInfo, node: FunctionNode, parent: Scope | None = None,
                 seeds: dict[str, Value] | None = None) -> Scope:
    """A function's scope: parameters from ``seeds`` (what the call site passes), else from
    their annotations; a parameter called ``ctx`` is taken for the context."""
    scope = Scope(program, module, node, parent)
    for arg in parameters(node):
        kind = CTX if arg.arg == "ctx" else annotation_type(arg.annotation)
        if kind is not None:
            scope.values[arg.arg] = Value(kind)
    scope.values.update(seeds or {})
    return scope


def binds_self(node: FunctionNode) -> bool:
    """Whether a call through ``self`` passes ``self`` as the first parameter of ``node``."""
    return not decorated(node, "staticmethod")


def self_seeds(node: FunctionNode, name: str) -> dict[str, Value]:
    """The seeds of a method reached through ``self``: ``self`` itself, and ``declare``'s argument."""
    params = [a.arg for a in parameters(node)]
    seeds = {params[0]: Value(SELF_OBJ, SELF)} if params and binds_self(node) and not decorated(
        node, "classmethod") else {}
    if name == "declare" and len(params) > 1:
        seeds[params[1]] = Value(DECLARER)
    return seeds


def _infer_attributes(program: Program, module: ModuleInfo, method: Any) -> None:
    seeds = self_seeds(method, method.name)
    if not seeds:
        return
    scope = method_scope(program, module, method, seeds=seeds)
    self_name = next(iter(seeds))
    for node in ast.walk(method):
        for target, value in _assignments(node):
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == self_name):
                _keep_typed(program.attributes, target.attr, Value(scope.value(value).type))


def _returned_dict(program: Program, module: ModuleInfo, node: FunctionNode) -> dict[str, Value]:
    scope = method_scope(program, module, node)
    for found in ast.walk(node):
        if isinstance(found, ast.Return) and isinstance(found.value, ast.Dict):
            pairs = zip(found.value.keys, found.value.values)
            return {key.value: Value(scope.value(value).type) for key, value in pairs
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)}
    return {}


def _assignments(node: ast.AST) -> list[tuple[ast.expr, ast.expr]]:
    if isinstance(node, ast.Assign):
        return [(target, node.value) for target in node.targets]
    if isinstance(node, ast.AnnAssign) and node.value is not None:
        return [(node.target, node.value)]
    return []


def _keep_typed(values: dict[str, Value], name: str, value: Value) -> None:
    if value.type is not None or name not in values:
        values[name] = value


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_dict_view(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("keys", "items") and not node.args)


def decorated(node: FunctionNode, name: str) -> bool:
    return not isinstance(node, ast.Lambda) and any(isinstance(d, ast.Name) and d.id == name
                                                    for d in node.decorator_list)
