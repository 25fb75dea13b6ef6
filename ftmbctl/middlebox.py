"""The middlebox programming model (DESIGN §3) and how a middlebox is found by name.

A middlebox is a class::

    class Counter(Middlebox):
        name = "counter"
        summary = "counts packets"
        options = {"step": Option(1, int, "how much each packet adds")}

        def declare(self, shared):            # shared variables, declared up front
            self.total = shared.counter("total")

        def new_local_state(self):            # queue-local state: part of every snapshot
            return {"seen": 0}

        def process(self, ctx, pkt):          # one input packet; zero or more outputs
            ctx.local["seen"] += 1
            ctx.add(self.total, self.opts["step"])
            ctx.emit(pkt.data)

The middlebox object itself holds configuration only: everything that changes while packets flow
lives in ``ctx.local`` (queue-local) or in declared shared variables. The same class runs
unchanged in record, replay and the vanilla baseline; only the context differs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple

from ftmbctl.errors import BadInput, UsageError

# Built-in middleboxes by name -> "module:Class". Imported lazily so that a broken one cannot stop
# the others from loading.
BUILTINS: dict[str, str] = {
    "nat": "ftmbctl.middleboxes.nat:Nat",
    "monitor": "ftmbctl.middleboxes.monitor:Monitor",
    "ids": "ftmbctl.middleboxes.ids:Ids",
    "chain": "ftmbctl.middleboxes.chain:Chain",
    "firewall": "ftmbctl.middleboxes.firewall:Firewall",
    "ratelimit": "ftmbctl.middleboxes.ratelimit:RateLimit",
    "lb": "ftmbctl.middleboxes.lb:LoadBalancer",
}


@dataclass(frozen=True)
class Option:
    """One ``--mb-opt key=value`` a middlebox accepts."""

    default: Any
    parse: Callable[[str], Any]
    help: str


def input_file(raw: str) -> str:
    """Parse an option that names a file the middlebox reads (rules, signatures): made absolute,
    so that a recovery started from another directory reads the same file."""
    return str(Path(raw).resolve()) if raw else ""


class Packet(NamedTuple):
    """One input packet as a middlebox sees it (immutable; a NamedTuple because one is built
    per packet)."""

    id: int  # index in the trace: the input id
    ts_ns: int  # pcap timestamp (deterministic: needs no logging)
    linktype: int
    data: bytes


class Middlebox:
    """Base class of every middlebox. Subclasses set the class attributes and override methods."""

    name: ClassVar[str] = "middlebox"
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **opts: Any) -> None:
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise UsageError(f"middlebox {self.name!r} has no option {unknown[0]!r} (options: {known})")
        self.opts = {key: opt.default for key, opt in self.options.items()}
        self.opts.update(opts)

    @classmethod
    def parse_options(cls, pairs: list[str]) -> dict[str, Any]:
        """Turn ``["key=value", ...]`` into typed options, with a clear error for a bad one."""
        parsed: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UsageError(f"--mb-opt {pair!r} is not of the form key=value")
            if key not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                raise UsageError(f"middlebox {cls.name!r} has no option {key!r} (options: {known})")
            try:
                parsed[key] = cls.options[key].parse(raw)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--mb-opt {key}={raw!r}: {exc}") from None
        return parsed

    @classmethod
    def canonical_pairs(cls, pairs: list[str]) -> list[str]:
        """``pairs`` as the manifest stores them: file options made absolute (see ``input_file``)."""
        out = []
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            option = cls.options.get(key.strip())
            if sep and option is not None and option.parse is input_file:
                pair = f"{key.strip()}={input_file(raw)}"
            out.append(pair)
        return out

    def declare(self, shared: Any) -> None:
        """Declare shared variables on ``shared`` (a ``SharedState``) and keep the handles."""

    def new_local_state(self) -> dict[str, Any]:
        """A fresh queue-local state: codec-encodable (dict, list, tuple, set, scalars, bytes)."""
        return {}

    def process(self, ctx: Any, pkt: Packet) -> None:
        raise NotImplementedError


def resolve_middlebox(spec: str) -> type[Middlebox]:
    """Find a middlebox class by built-in name, ``package.module:Class`` or ``file.py:Class``."""
    if spec in BUILTINS:
        spec = BUILTINS[spec]
    elif ":" not in spec:
        names = ", ".join(sorted(BUILTINS))
        raise UsageError(f"unknown middlebox {spec!r}: use one of {names}, package.module:Class or path/to/file.py:Class")
    target, _, class_name = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # a user's module can raise anything while importing
            raise BadInput(f"cannot import middlebox module {target!r}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Middlebox)):
        raise BadInput(f"{spec}: {class_name!r} is not a Middlebox subclass in {target}")
    return cls


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise BadInput(f"{path}: middlebox file does not exist")
    module_name = f"ftmbctl_user_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's module can raise anything while importing
        del sys.modules[module_name]
        raise BadInput(f"{path}: importing the middlebox failed: {type(exc).__name__}: {exc}") from None
    return module


def build_middlebox(spec: str, option_pairs: list[str] | None = None) -> Middlebox:
    """Resolve ``spec`` and instantiate it with parsed ``--mb-opt`` pairs."""
    cls = resolve_middlebox(spec)
    return cls(**cls.parse_options(option_pairs or []))
