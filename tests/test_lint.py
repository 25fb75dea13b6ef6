"""``ftmbctl lint``: each rule fires where it must and nowhere near it, silencing comments, the
command line, and the mutant middleboxes whose bug is visible in their source.

A middlebox under test is a small module written to a temporary file; ``# <-`` marks the one line
a finding must be on, so no line number is written down twice.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from ftmbctl.causes import CAUSES
from ftmbctl.cli import app
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.lint import RULES, lint_class, lint_spec, lint_specs
from ftmbctl.middlebox import BUILTINS, Middlebox, resolve_middlebox

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tests" / "mutants"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
MARK = "# <-"
COMPILER_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<code>FTMB\d{3}) (?P<message>.+); "
                           r"(?P<fix>.+)$")

HEAD = '''\
import datetime
import functools
import itertools
import os
import random
import secrets
import socket
import threading
import time
import uuid
import zlib
from typing import Any

from ftmbctl.middlebox import Middlebox
'''

CLASS = '''

class Box(BASE):
    name = "box"

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self.table = {}
        self.seen = set()
INIT

    def declare(self, shared: Any) -> None:
        self.counts = shared.map("counts")
        self.total = shared.counter("total")

    def new_local_state(self) -> dict[str, Any]:
        return {"ports": set(), "flows": {}}

    def process(self, ctx: Any, pkt: Any) -> None:
        key = bytes(pkt.data[:4])
PROCESS
        ctx.emit(pkt.data)
METHODS
'''


class Case(NamedTuple):
    id: str
    code: str | None  # None: a near miss, no finding at all
    source: str


def _block(code: str, indent: int) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * indent) if code else ""


def case(id: str, code: str | None = None, *, module: str = "", init: str = "", process: str = "",
         methods: str = "", base: str = "Middlebox") -> Case:
    """A middlebox module: ``module`` at module level, ``init`` at the end of ``__init__``,
    ``process`` in ``process()`` (``key`` is bytes of the packet), ``methods`` in the class
    ``Box``, derived from ``base``."""
    body = CLASS.replace("BASE", base).replace("INIT", _block(init, 8)).replace("PROCESS", _block(process, 8))
    return Case(id, code, HEAD + textwrap.dedent(module) + body.replace("METHODS", "\n" + _block(methods, 4)))


FLAGGED = [
    # 1xx: the outside world at packet time
    case("time.time", "FTMB101", process="now = time.time()  # <-"),
    case("import-alias", "FTMB101", module="import time as clock", process="now = clock.monotonic_ns()  # <-"),
    case("from-import", "FTMB101", module="from time import perf_counter", process="now = perf_counter()  # <-"),
    case("datetime.now", "FTMB101", module="from datetime import datetime as dt", process="stamp = dt.now()  # <-"),
    case("date.today", "FTMB101", process="day = datetime.date.today()  # <-"),
    case("localtime-without-argument", "FTMB101", process="hour = time.localtime().tm_hour  # <-"),
    case("sleep", "FTMB102", process="time.sleep(0.001)  # <-"),
    case("random.random", "FTMB111", process="draw = random.random()  # <-"),
    case("from-random-import", "FTMB111", module="from random import choice as pick",
         process="port = pick([80, 443])  # <-"),
    case("random-as-a-key", "FTMB111", process="order = sorted(pkt.data, key=random.random)  # <-"),
    case("unseeded-random-instance", "FTMB111", process="rng = random.Random()  # <-"),
    case("urandom", "FTMB112", process="nonce = os.urandom(8)  # <-"),
    case("secrets", "FTMB112", process="token = secrets.token_bytes(8)  # <-"),
    case("uuid4", "FTMB112", process="ident = uuid.uuid4()  # <-"),
    case("environ", "FTMB121", process='mode = os.environ.get("MODE")  # <-'),
    case("getenv", "FTMB121", process='mode = os.getenv("MODE")  # <-'),
    case("open", "FTMB122", process='rules = open("/etc/hosts").read()  # <-'),
    case("socket", "FTMB123", process='addr = socket.gethostbyname("example.com")  # <-'),
    # 2xx: values that differ between processes, setup included
    case("hash", "FTMB201", process="bucket = hash(key) % 8  # <-"),
    case("hash-at-setup", "FTMB201", init='self.salt = hash("box")  # <-'),
    case("id", "FTMB202", process="tag = id(pkt)  # <-"),
    case("getpid", "FTMB203", process="tag = os.getpid()  # <-"),
    case("for-over-a-set", "FTMB211", process="""
        found = {pkt.data[0], pkt.data[-1]}
        for byte in found:  # <-
            ctx.add(self.total, byte)"""),
    case("next-iter", "FTMB211", process="first = next(iter({b'a', key}))  # <-"),
    case("list-of-a-set", "FTMB211", process="members = list(set(pkt.data))  # <-"),
    case("set.pop", "FTMB211", process="byte = set(pkt.data).pop()  # <-"),
    case("walrus", "FTMB211", process="""
        if (found := set(pkt.data)) and len(found) > 1:
            ctx.emit(bytes(found))  # <-"""),
    case("comprehension", "FTMB211", process="lengths = [len(s) for s in frozenset(('a', 'bb'))]  # <-"),
    case("dict-comprehension-at-setup", "FTMB211",
         methods="""
         def declare(self, shared):
             self.counters = {n: shared.counter(n) for n in {"a", "b"}}  # <-"""),
    case("set-operation", "FTMB211", process="""
        for byte in self.seen - {1}:  # <-
            ctx.add(self.total, byte)"""),
    case("dict-views-give-a-set", "FTMB211", process="""
        for flow in ctx.local["flows"].keys() - {key}:  # <-
            ctx.add(self.total)"""),
    case("ctx.local-set", "FTMB211", process="""
        for port in ctx.local["ports"]:  # <-
            ctx.add(self.total, port)"""),
    case("bytes-of-self-set", "FTMB211", process="ctx.emit(bytes(self.seen))  # <-"),
    case("f-string", "FTMB211", process='ctx.alert(f"seen {self.seen}")  # <-'),
    case("min-with-key", "FTMB211", process="shortest = min(self.seen, key=len)  # <-"),
    case("annotated-parameter", "FTMB211", process="self._first(pkt.data)", methods="""
        def _first(self, names: set[int]) -> int:
            return next(iter(names))  # <-"""),
    case("annotated-return", "FTMB211", module="""
        def members(data) -> frozenset[int]:
            return frozenset(data)""", process="text = ','.join(str(m) for m in members(pkt.data))  # <-"),
    # 3xx: state outside ctx
    case("assign-self", "FTMB301", process="self.last = pkt.id  # <-"),
    case("augassign-self", "FTMB301", init="self.packets = 0", process="self.packets += 1  # <-"),
    case("subscript-self", "FTMB301", process="self.table[key] = pkt.id  # <-"),
    case("mutator-self", "FTMB301", process="self.seen.add(key)  # <-"),
    case("alias-of-self", "FTMB301", process="""
        table = self.table
        table[key] = pkt.id  # <-"""),
    case("del-self", "FTMB301", process="del self.table[key]  # <-"),
    case("setattr-self", "FTMB301", process='setattr(self, "last", pkt.id)  # <-'),
    case("in-a-called-method", "FTMB301", process="self._remember(key)", methods="""
        def _remember(self, key):
            self.table[key] = 1  # <-"""),
    case("through-super", "FTMB301", process="super().process(ctx, pkt)", base="Base", module="""
        class Base(Middlebox):
            def process(self, ctx, pkt):
                self.last = pkt.id  # <-"""),
    case("module-dict", "FTMB302", module="_SEEN = {}", process="_SEEN[key] = pkt.id  # <-"),
    case("global", "FTMB302", module="LAST = 0", process="""
        global LAST
        LAST = pkt.id  # <-"""),
    case("class-attribute", "FTMB302", process="Box.last = pkt.id  # <-"),
    case("threading.local", "FTMB303", module="_STATE = threading.local()", process="_STATE.last = pkt.id  # <-"),
    case("lru_cache", "FTMB304", process="size(pkt.data)", module="""
        @functools.lru_cache(maxsize=64)  # <-
        def size(data):
            return len(data)"""),
    case("functools.cache", "FTMB304", process="size(pkt.data)", module="""
        from functools import cache


        @cache  # <-
        def size(data):
            return len(data)"""),
    case("module-count", "FTMB305", module="_IDS = itertools.count()", process="ident = next(_IDS)  # <-"),
    case("rng-kept-on-self", "FTMB305", init="self.rng = random.Random(7)", process="draw = self.rng.random()  # <-"),
    # 4xx: shared state
    case("clock-in-update", "FTMB401", process="ctx.update(self.counts, key, lambda old: ctx.clock())  # <-"),
    case("random-in-factory", "FTMB401", process="ctx.update(self.counts, key, stamp(ctx))", module="""
        def stamp(ctx):
            def fn(old):
                return ctx.random()  # <-
            return fn"""),
    case("access-in-apply", "FTMB402", process="ctx.apply(self.counts, lambda view: ctx.add(self.total))  # <-"),
    case("map-data", "FTMB411", process="self.counts.data[key] = 1  # <-"),
    case("counter-value", "FTMB411", process="total = self.total.value  # <-"),
    case("put-a-list", "FTMB421", process="ctx.put(self.counts, key, [pkt.id])  # <-"),
    case("update-returns-a-set", "FTMB421", process="ctx.update(self.counts, key, lambda old: {pkt.id})  # <-"),
    case("view-put-a-dict", "FTMB421", process="ctx.apply(self.counts, lambda view: view.put(key, {}))  # <-"),
    case("read-then-append", "FTMB422", process="""
        entry = ctx.read(self.counts, key)
        entry.append(pkt.id)  # <-"""),
    case("update-changes-old", "FTMB422", process="ctx.update(self.counts, key, grow)", module="""
        def grow(old):
            old[0] += 1  # <-
            return old"""),
]

NEAR_MISSES = [
    case("sorted-set", process="""
        for byte in sorted(self.seen):
            ctx.add(self.total, byte)"""),
    case("membership-and-len", process="""
        if key in self.seen and len(self.seen) > 2:
            ctx.add(self.total)"""),
    case("order-free-consumers", process="""
        n = sum(x for x in self.seen) + max(self.seen, default=0) + len({x for x in self.seen})
        both = sorted(self.seen | {1})
        same = any(x == key for x in frozenset((key,)))"""),
    case("time-at-import", module="BOOT = time.time()", process="ctx.emit(str(BOOT).encode())"),
    case("calls-at-setup", init="""
        self.boot = time.time()
        self.first = random.random()
        self.mode = os.environ.get("MODE", "fast")
        with open(__file__) as source:
            self.size = len(source.read())
        self.rng = random.Random(7)""", methods="""
        def new_local_state(self):
            return {"nonce": os.urandom(4), "started": time.monotonic()}"""),
    case("self-read-at-packet-time", process="""
        step = self.opts.get("step", 1)
        ctx.add(self.total, step + self.table.get(key, 0))"""),
    case("logged-values", process="""
        now = ctx.clock()
        draw = ctx.random()
        ctx.update(self.counts, key, lambda old: (now, draw))"""),
    case("ctx.local-changes", process="""
        local = ctx.local
        local["flows"][key] = pkt.id
        local["ports"].add(len(pkt.data))
        flows = ctx.local["flows"]
        del flows[next(iter(flows))]"""),
    case("seeded-random", process="draw = random.Random(pkt.id).random()"),
    case("pure-functions", process="""
        addr = socket.inet_ntoa(pkt.data[:4])
        bucket = zlib.crc32(key) % 8
        hour = time.localtime(pkt.ts_ns // 10**9).tm_hour
        ident = uuid.uuid5(uuid.NAMESPACE_DNS, addr)"""),
    case("local-iterator", process="""
        for index, byte in zip(itertools.count(), pkt.data):
            ctx.add(self.total, index + byte)"""),
    case("shared-through-ctx", process="""
        ctx.put(self.counts, key, (pkt.id, len(pkt.data)))
        entry = ctx.read(self.counts, key)
        ctx.put(self.counts, key, entry + (1,))
        ctx.update(self.counts, key, lambda old: tuple(sorted({pkt.id})))"""),
    case("shadowed-builtins", process="""
        hash = zlib.crc32
        bucket = hash(key)
        id = pkt.id"""),
    case("cache-used-at-setup", module="""
        @functools.lru_cache
        def table(n):
            return tuple(range(n))""", init="self.tab = table(4)"),
    case("sorted-at-setup", methods="""
        def declare(self, shared):
            self.counters = {n: shared.counter(n) for n in sorted({"a", "b"})}"""),
    case("unreached-method", methods="""
        def report(self):
            self.seen.add(time.time())
            return list(self.seen)"""),
]


def write(tmp_path: Path, source: str, name: str = "box.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def marked_line(source: str, marker: str = MARK) -> int:
    """The 1-based number of the one line that holds ``marker``."""
    lines = [number for number, text in enumerate(source.splitlines(), 1) if marker in text]
    assert len(lines) == 1, f"{marker!r} must mark exactly one line, found {lines}"
    return lines[0]


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def pinned_terminal(pin_terminal) -> None:
    pin_terminal(ENV)


# ---------------------------------------------------------------- the rules

@pytest.mark.parametrize("case", FLAGGED, ids=lambda c: c.id)
def test_each_rule_flags_its_line(tmp_path: Path, case: Case) -> None:
    path = write(tmp_path, case.source)
    report = lint_spec(f"{path}:Box")
    assert [(f.code, f.line) for f in report.findings] == [(case.code, marked_line(case.source))], \
        [f.compiler_line() for f in report.findings]
    (finding,) = report.findings
    assert finding.file == str(path.resolve()) and finding.col >= 1
    assert finding.fix == RULES[case.code].fix and finding.rule == RULES[case.code].name


@pytest.mark.parametrize("case", NEAR_MISSES, ids=lambda c: c.id)
def test_near_misses_are_not_flagged(tmp_path: Path, case: Case) -> None:
    report = lint_spec(f"{write(tmp_path, case.source)}:Box")
    assert report.findings == [], [f.compiler_line() for f in report.findings]


def test_every_rule_has_a_case_that_fires() -> None:
    fired = {c.code for c in FLAGGED}
    assert fired == {code for code in RULES if not code.startswith("FTMB9")}


def test_column_counts_characters_from_one(tmp_path: Path) -> None:
    source = case("col", "FTMB101", process='label = "é" + str(time.time())  # <-').source
    (finding,) = lint_spec(f"{write(tmp_path, source)}:Box").findings
    line = source.splitlines()[finding.line - 1]
    assert line[finding.col - 1:].startswith("time.time()")


def test_catalogue_is_stable_and_complete() -> None:
    names = [rule.name for rule in RULES.values()]
    assert len(names) == len(set(names))
    for code, rule in RULES.items():
        assert re.fullmatch(r"FTMB[1-49]\d\d", code) and rule.code == code
        assert "{what}" in rule.message and rule.fix and not rule.fix.endswith(".")
        assert rule.cause is None or rule.cause in CAUSES


def test_the_guide_documents_every_rule() -> None:
    guide = (ROOT / "docs" / "writing-a-middlebox.md").read_text()
    missing = [code for code in RULES if code not in guide]
    assert not missing, missing


# ---------------------------------------------------------------- silencing comments

SILENCED = case("silenced", process="""
    first = time.time()  # ftmb: ignore[FTMB101] only shown in an alert, never decides
    second = time.time()  # ftmb: ignore[FTMB101, FTMB211]
    third = 3  # ftmb: ignore[FTMB301]
    fourth = time.time()  # ftmb: ignore
    fifth = 5  # ftmb: ignore[FTMB999, FTMB900]
    sixth = time.time()
    # ftmb: ignore[FTMB101] (on its own line: silences nothing, the finding is on the next)
    seventh = time.time()""", methods="""
    def unreached(self):
        return time.time()  # ftmb: ignore[FTMB101] never analysed: not reported""").source


def test_silencing_comments(tmp_path: Path) -> None:
    report = lint_spec(f"{write(tmp_path, SILENCED)}:Box")
    markers = ("first = ", "second = ", "third = ", "fourth = ", "fifth = ", "sixth = ", "# ftmb: ignore[FTMB101] (on",
               "seventh")
    at = {marker: marked_line(SILENCED, marker) for marker in markers}
    assert [(f.code, f.line) for f in report.silenced] == [("FTMB101", at["first = "]), ("FTMB101", at["second = "])]
    assert [(f.code, f.line) for f in report.findings] == [
        ("FTMB900", at["second = "]), ("FTMB900", at["third = "]),
        ("FTMB101", at["fourth = "]), ("FTMB901", at["fourth = "]),
        ("FTMB901", at["fifth = "]), ("FTMB901", at["fifth = "]),
        ("FTMB101", at["sixth = "]), ("FTMB900", at["# ftmb: ignore[FTMB101] (on"]), ("FTMB101", at["seventh"])]
    assert [(u.code, u.line) for u in report.unused_silences] == [
        ("FTMB211", at["second = "]), ("FTMB301", at["third = "]), ("FTMB101", at["# ftmb: ignore[FTMB101] (on"])]
    unused = next(f for f in report.findings if f.code == "FTMB900")
    assert SILENCED.splitlines()[unused.line - 1][unused.col - 1:].startswith("# ftmb: ignore[FTMB101, FTMB211]")
    assert "`FTMB211`" in unused.message
    texts = sorted(f.message for f in report.findings if f.code == "FTMB901")
    assert any("names no code" in t for t in texts) and any("`FTMB999`" in t and "no rule" in t for t in texts)
    assert any("`FTMB900`" in t and "cannot be silenced" in t for t in texts)


def test_a_silenced_middlebox_is_clean(tmp_path: Path) -> None:
    source = case("ok", process="""
        stamp = time.time()  # ftmb: ignore[FTMB101] shown in alerts only
        ctx.alert(f"at {stamp}")""").source
    result = cli("lint", f"{write(tmp_path, source)}:Box")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "1 silenced" in result.stderr


def test_a_comment_in_shared_code_counts_for_every_middlebox_checked(tmp_path: Path) -> None:
    source = HEAD + textwrap.dedent('''
        class Base(Middlebox):
            name = "base"

            def stamp(self):
                return time.time()  # ftmb: ignore[FTMB101] base's stamp is for humans


        class Quiet(Base):
            name = "quiet"

            def process(self, ctx, pkt):
                ctx.emit(pkt.data)


        class Loud(Base):
            name = "loud"

            def process(self, ctx, pkt):
                ctx.alert(str(self.stamp()))
        ''')
    path = write(tmp_path, source)
    assert lint_spec(f"{path}:Quiet").clean  # never reaches stamp(): its comment says nothing
    both = lint_specs([f"{path}:Quiet", f"{path}:Loud"])
    assert both.clean and [f.code for f in both.silenced] == ["FTMB101"]


# ---------------------------------------------------------------- the library and the examples

def test_every_builtin_middlebox_is_clean() -> None:
    report = lint_specs(sorted(BUILTINS))
    assert report.findings == [] and report.silenced == [], [f.compiler_line() for f in report.findings]
    assert report.functions >= 50  # the walk reached the helpers, not only process()


def example_specs() -> list[str]:
    specs = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and issubclass(resolve_middlebox(f"{path}:{node.name}"), Middlebox):
                specs.append(f"{path}:{node.name}")
    return specs


def test_the_examples_are_clean() -> None:
    specs = example_specs()
    assert specs, "no middlebox in examples/"
    result = cli("lint", *specs)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_lint_class_gives_plain_data(tmp_path: Path) -> None:
    cls = resolve_middlebox(f"{write(tmp_path, FLAGGED[0].source)}:Box")
    report = lint_class(cls)
    assert report.targets == [f"{cls.__module__}:Box"]
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["findings"][0]["code"] == "FTMB101" and doc["findings"][0]["cause"] == "clock"


# ---------------------------------------------------------------- the mutant middleboxes

class Mutant(NamedTuple):
    spec: str  # file:Class under tests/mutants
    code: str
    marker: str  # text of the line the first finding must be on


FLAGGED_MUTANTS = [
    Mutant("exactness_mutants.py:StrHashClass", "FTMB201", "CLASSES[hash(key)"),
    Mutant("exactness_mutants.py:SetOrderClass", "FTMB211", "next(iter(candidates))"),
    Mutant("exactness_mutants.py:ModuleCounterTag", "FTMB305", "next(_SEQUENCE)"),
    Mutant("exactness_mutants.py:RaisesAfterRestore", "FTMB301", "self.started = True"),
    Mutant("exactness_mutants.py:LoopsAfterRestore", "FTMB301", "self.started = True"),
    Mutant("exactness_mutants.py:SetOrderDeclare", "FTMB211", "for name in set(CLASSES)"),
    Mutant("library_mutants.py:FirewallDirectRuleHits", "FTMB411", "hits = self.rule_hits.data"),
    Mutant("library_mutants.py:RateLimitWallClock", "FTMB101", "now = time.time()"),
    Mutant("library_mutants.py:LoadBalancerPyRandom", "FTMB111", "draw = random.random()"),
    Mutant("monitor_mutants.py:MonitorDirectWrite", "FTMB411", "data = self.protocols.data"),
    Mutant("monitor_mutants.py:MonitorWallClock", "FTMB101", "self._capacity, time.time())"),
    Mutant("monitor_mutants.py:MonitorRandomSample", "FTMB111", "draw = random.getrandbits(32)"),
    Mutant("monitor_mutants.py:MonitorUnsnapshottedFlows", "FTMB301", "self._flows[flow] = [1, length]"),
    Mutant("monitor_mutants.py:MonitorRandomSkip", "FTMB111", "if random.random() < 0.5"),
    Mutant("nat_mutants.py:NatDirectPoolWrite", "FTMB411", "entry = self.ports.data.get(key, MISSING)"),
    Mutant("nat_mutants.py:NatWallClock", "FTMB101", "return time.time()"),
    Mutant("nat_mutants.py:NatRandomPort", "FTMB111", "start = random.randint("),
    Mutant("nat_mutants.py:NatUnsnapshottedIpId", "FTMB301", "self._ip_ids[flow] = ident"),
    Mutant("state_mutants.py:ListInSharedMap", "FTMB421", "[len(pkt.data)])"),
]
# Not determinism bugs, or no bug: the hooked bases and CorrectClass are the built-ins' own code;
# ExactLocalState keeps unusual but plain values; EnumInLocalState and ObjectInLocalState keep
# values a snapshot refuses (an IntEnum member, an object) in ctx.local, which the snapshot codec
# reports at record (exit 3), not something the source shows as non-deterministic.
CLEAN_MUTANTS = ["exactness_mutants.py:_Tagger", "exactness_mutants.py:CorrectClass",
                 "monitor_mutants.py:_HookedMonitor", "nat_mutants.py:_HookedNat",
                 "state_mutants.py:ExactLocalState", "state_mutants.py:EnumInLocalState",
                 "state_mutants.py:ObjectInLocalState"]


def test_every_mutant_is_classified() -> None:
    found = []
    for path in sorted(MUTANTS.glob("*_mutants.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                try:
                    resolve_middlebox(f"{path}:{node.name}")
                except BadInput:
                    continue  # a helper class, not a middlebox
                found.append(f"{path.name}:{node.name}")
    assert sorted(found) == sorted([m.spec for m in FLAGGED_MUTANTS] + CLEAN_MUTANTS)


@pytest.mark.parametrize("mutant", FLAGGED_MUTANTS, ids=lambda m: m.spec.split(":")[1])
def test_mutants_are_flagged_on_the_line_of_their_bug(mutant: Mutant) -> None:
    file, _, _cls = mutant.spec.partition(":")
    report = lint_spec(str(MUTANTS / mutant.spec))
    line = marked_line((MUTANTS / file).read_text(), mutant.marker)
    assert report.findings, f"{mutant.spec}: no finding"
    assert {f.code for f in report.findings} == {mutant.code}, [f.compiler_line() for f in report.findings]
    assert report.findings[0].line == line and report.findings[0].file == str((MUTANTS / file).resolve())


@pytest.mark.parametrize("spec", CLEAN_MUTANTS)
def test_mutants_without_a_visible_determinism_bug_are_clean(spec: str) -> None:
    report = lint_spec(str(MUTANTS / spec))
    assert report.clean, [f.compiler_line() for f in report.findings]


# ---------------------------------------------------------------- the command line

def test_cli_clean_builtins_exit_0() -> None:
    result = cli("lint", "--all-builtins")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert re.fullmatch(r"lint: clean: 7 middleboxes, \d+ functions checked\n", result.stderr), result.stderr


def test_cli_findings_in_compiler_form_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FLAGGED[0].source
    write(tmp_path, source)
    monkeypatch.chdir(tmp_path)
    result = cli("lint", "box.py:Box", "nat")
    assert result.exit_code == 1, result.output
    (line,) = result.stdout.splitlines()
    match = COMPILER_LINE.match(line)
    assert match, line
    assert match["file"] == "box.py" and int(match["line"]) == marked_line(source)  # relative to the cwd
    assert match["code"] == "FTMB101" and match["fix"] == RULES["FTMB101"].fix
    assert source.splitlines()[int(match["line"]) - 1][int(match["col"]) - 1:].startswith("time.time()")
    assert result.stderr == "lint: 1 finding in 2 middleboxes\n"


def test_cli_json(tmp_path: Path) -> None:
    path = write(tmp_path, SILENCED)
    result = cli("lint", f"{path}:Box", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"clean", "middleboxes", "functions", "findings", "silenced", "unused_silences"}
    assert doc["clean"] is False and doc["middleboxes"] == [f"{path}:Box"]
    for finding in doc["findings"] + doc["silenced"]:
        assert set(finding) == {"file", "line", "col", "code", "rule", "message", "fix", "cause"}
        assert finding["file"] == str(path.resolve()) and finding["rule"] == RULES[finding["code"]].name
    assert [u["code"] for u in doc["unused_silences"]] == ["FTMB211", "FTMB301", "FTMB101"]
    assert [u["line"] for u in doc["unused_silences"]] == [f["line"] for f in doc["findings"] if f["code"] == "FTMB900"]
    assert all(set(u) == {"file", "line", "col", "code"} for u in doc["unused_silences"])


def test_cli_json_clean() -> None:
    result = cli("lint", "nat", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["clean"] is True and doc["findings"] == [] and doc["middleboxes"] == ["nat"]


def one_sentence_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("args", [[], ["--json"], ["no-such-box"], ["nat", "firewall.py"]],
                         ids=["nothing", "only-options", "unknown-name", "no-class"])
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    line = one_sentence_error(cli("lint", *args), 2)
    assert "middlebox" in line


def test_cli_syntax_error_exit_3(tmp_path: Path) -> None:
    path = write(tmp_path, "from ftmbctl.middlebox import Middlebox\n\nclass Box(Middlebox:\n    pass\n", "broken.py")
    line = one_sentence_error(cli("lint", f"{path}:Box"), 3)
    assert str(path) in line and "SyntaxError" in line and "line 3" in line


def test_cli_not_a_middlebox_exit_3(tmp_path: Path) -> None:
    path = write(tmp_path, "class Box:\n    def process(self, ctx, pkt):\n        pass\n", "plain.py")
    line = one_sentence_error(cli("lint", f"{path}:Box"), 3)
    assert "'Box' is not a Middlebox subclass" in line


def test_cli_unimportable_module_exit_3() -> None:
    line = one_sentence_error(cli("lint", "no_such_package.boxes:Box"), 3)
    assert "cannot import middlebox module 'no_such_package.boxes'" in line


def test_cli_module_that_raises_on_import_exit_3(tmp_path: Path) -> None:
    path = write(tmp_path, "raise RuntimeError('no config here')\n", "raises.py")
    line = one_sentence_error(cli("lint", f"{path}:Box"), 3)
    assert "RuntimeError: no config here" in line


def test_cli_missing_file_exit_3(tmp_path: Path) -> None:
    line = one_sentence_error(cli("lint", f"{tmp_path / 'missing.py'}:Box"), 3)
    assert "does not exist" in line


def test_library_errors_are_the_error_tree(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        lint_spec("no-such-box")
    plain = write(tmp_path, "x = 1\n", "plain.py")
    with pytest.raises(BadInput):
        lint_spec(f"{plain}:x")


def test_cli_help_names_the_exit_codes() -> None:
    result = cli("lint", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "0 clean, 1 findings, 2 usage error" in text and "--all-builtins" in text and "ftmb: ignore" in text
