"""The runtime guard of ``record``: calls a replay cannot reproduce, caught as the middlebox makes them.

``ftmbctl lint`` reads the source; the guard watches the run. While a record runs, the functions
the lint rules name for the outside world (the wall clock and timers, Python's ``random``
module, the operating system's entropy, ``secrets``, ``uuid``, the environment) are replaced by
wrappers. A wrapper looks at who called it: walking up the stack, the first frame that is in the
middlebox's own source files is the culprit (reported once per file, line and call, with the
lint rule of the same bug); a frame of ftmbctl's engine first means the engine called on the
middlebox's behalf (``ctx.clock()`` under the threads scheduler reads the wall clock, and logs
it), which is fine. What the middlebox imported by name (``from time import time``) is replaced
in its modules too. Code that never calls these pays nothing.

With ``mode="error"`` the first such call raises ``GuardViolation`` in the middlebox, and the
record stops with exit 1 even if the middlebox swallows the exception (``check`` after each
packet). ``datetime.now()`` is beyond reach: the datetime type is built in and reads the clock
in C; lint reports it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

from ftmbctl.lint.rules import RULES

MODES = ("warn", "error", "off")
_ENGINE = str(Path(__file__).resolve().parent)  # ftmbctl's own files: the engine, unless the middlebox's
_MAX_FRAMES = 12  # how far up a call is traced to the middlebox (through library code it called)


def _guarded() -> list[tuple[ModuleType, str, str]]:
    """(module, attribute, rule code) of every function the guard replaces while a record runs."""
    names = [(time, n, "FTMB101") for n in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter",
                                              "perf_counter_ns", "process_time", "process_time_ns", "thread_time",
                                              "thread_time_ns", "clock_gettime", "clock_gettime_ns")]
    names.append((time, "sleep", "FTMB102"))
    names += [(random, n, "FTMB111") for n in ("random", "uniform", "triangular", "randint", "choice", "randrange",
                                               "sample", "shuffle", "choices", "normalvariate", "lognormvariate",
                                               "expovariate", "vonmisesvariate", "gammavariate", "gauss",
                                               "betavariate", "paretovariate", "weibullvariate", "getstate",
                                               "setstate", "getrandbits", "randbytes", "binomialvariate")]
    names.append((os, "urandom", "FTMB112"))
    names += [(secrets, n, "FTMB112") for n in ("token_bytes", "token_hex", "token_urlsafe", "randbelow", "randbits",
                                                "choice")]
    names += [(uuid, "uuid1", "FTMB101"), (uuid, "uuid4", "FTMB112")]
    names.append((os, "getenv", "FTMB121"))
    return [(module, name, code) for module, name, code in names if hasattr(module, name)]


class GuardViolation(Exception):
    """Raised in the middlebox by ``--guard error`` at its first unreproducible call."""


class Guard:
    """What one record's guard found: ``findings`` in the order first seen, one per place and call."""

    def __init__(self, mode: str, middlebox: type) -> None:
        if mode not in MODES:
            raise ValueError(f"guard mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.files = middlebox_files(middlebox)
        self.findings: list[dict[str, Any]] = []
        self.tripped: dict[str, Any] | None = None  # the finding that stops the record (mode "error")
        self._seen: set[tuple[str, int, str]] = set()  # (file, line, code): uuid4() is os.urandom() too
        self._lock = threading.Lock()  # the threads scheduler's queues report at once

    def culprit(self, skip: int = 0) -> tuple[str, int] | None:
        """(file, line) of the middlebox code behind the current call, or None when the engine
        (or nobody in the middlebox) made it. ``skip``: frames of the guard's own between the
        wrapper and its caller."""
        frame = sys._getframe(2 + skip)
        for _ in range(_MAX_FRAMES):
            if frame is None:
                return None
            path = frame.f_code.co_filename
            if path in self.files:
                return path, frame.f_lineno
            if path.startswith(_ENGINE):
                return None
            frame = frame.f_back
        return None

    def report(self, call: str, code: str, where: tuple[str, int]) -> None:
        key = (*where, code)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            rule = RULES[code]
            finding = {"file": where[0], "line": where[1], "code": code, "rule": rule.name, "call": call,
                       "message": rule.message.format(what=call), "fix": rule.fix}
            self.findings.append(finding)
            if self.mode == "error" and self.tripped is None:
                self.tripped = finding
        if self.mode == "error":
            raise GuardViolation(sentence(finding))

    def check(self) -> None:
        """After a packet: a violation the middlebox caught and swallowed still stops the record."""
        if self.tripped is not None:
            raise GuardViolation(sentence(self.tripped))

    def wrap(self, function: Callable[..., Any], call: str, code: str) -> Callable[..., Any]:
        culprit, report = self.culprit, self.report

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            where = culprit()
            if where is not None:
                report(call, code, where)
            return function(*args, **kwargs)

        guarded.__ftmbctl_guarded__ = function  # type: ignore[attr-defined]
        return guarded


class _GuardedEnviron(Mapping):
    """``os.environ`` while a record runs: every read is checked like a guarded call; writes and
    everything else go to the real mapping."""

    def __init__(self, real: Any, guard: Guard) -> None:
        self._real, self._guard = real, guard

    def _seen(self, call: str) -> None:
        where = self._guard.culprit(skip=1)
        if where is not None:
            self._guard.report(call, "FTMB121", where)

    def __getitem__(self, key: str) -> str:
        self._seen("os.environ[...]")
        return self._real[key]

    def get(self, key: str, default: Any = None) -> Any:
        self._seen("os.environ.get()")
        return self._real.get(key, default)

    def __contains__(self, key: object) -> bool:
        self._seen("os.environ (in)")
        return key in self._real

    def __iter__(self) -> Iterator[str]:
        self._seen("os.environ (iteration)")
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    def __getattr__(self, name: str) -> Any:  # copy(), setdefault(), __setitem__ via the real one
        return getattr(self._real, name)

    def __setitem__(self, key: str, value: str) -> None:
        self._real[key] = value

    def __delitem__(self, key: str) -> None:
        del self._real[key]


def middlebox_files(cls: type) -> frozenset[str]:
    """The source files of the middlebox class and of its bases, ftmbctl's ``Middlebox`` aside."""
    from ftmbctl.middlebox import Middlebox

    files = set()
    for klass in cls.__mro__:
        if klass is Middlebox or klass is object or issubclass(Middlebox, klass):
            continue
        module = sys.modules.get(klass.__module__)
        path = getattr(module, "__file__", None)
        if path:
            files.add(str(Path(path).resolve()))
            files.add(path)
    return frozenset(files)


def sentence(finding: dict[str, Any]) -> str:
    """One line: where, what, and the fix."""
    return (f"{finding['file']}:{finding['line']}: {finding['code']} {finding['message']}: "
            f"{finding['fix']}")


_INSTALLED = threading.Lock()  # one guard at a time: the replaced functions are the process's


@contextlib.contextmanager
def guarding(guard: Guard | None) -> Iterator[None]:
    """Replace the guarded functions while the block runs (nothing when ``guard`` is None or off),
    and put every original back afterwards, whatever happens."""
    if guard is None or guard.mode == "off":
        yield
        return
    if not _INSTALLED.acquire(blocking=False):  # a record inside a record: the outer guard watches
        yield
        return
    replaced: list[tuple[Any, str, Any]] = []
    try:
        wrappers: dict[int, Any] = {}
        for module, name, code in _guarded():
            original = getattr(module, name)
            wrapper = guard.wrap(original, f"{module.__name__}.{name}()", code)
            wrappers[id(original)] = wrapper
            replaced.append((module, name, original))
            setattr(module, name, wrapper)
        replaced.append((os, "environ", os.environ))
        os.environ = _GuardedEnviron(os.environ, guard)  # type: ignore[assignment]
        # names the middlebox imported from those modules (`from time import time`)
        for module in _middlebox_modules(guard.files):
            for name, value in list(vars(module).items()):
                wrapper = wrappers.get(id(value))
                if wrapper is not None and getattr(wrapper, "__ftmbctl_guarded__", None) is value:
                    replaced.append((module, name, value))
                    setattr(module, name, wrapper)
        yield
    finally:
        for target, name, original in reversed(replaced):
            setattr(target, name, original)
        _INSTALLED.release()


def _middlebox_modules(files: frozenset[str]) -> list[ModuleType]:
    return [module for module in list(sys.modules.values())
            if getattr(module, "__file__", None) in files and module is not sys.modules.get(__name__)]
