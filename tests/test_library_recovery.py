"""Recovery of the built-in firewall, rate limiter and load balancer: crashed anywhere on a cut of
the small trace (1 and 4 queues, two chaos seeds, torn tails too), every recovery is consistent;
and each one with one classic FTMB bug (tests/mutants/library_mutants.py) is caught by verify,
which names the right invariant and variable.

The options make each middlebox really work on the trace (asserted, on the recorded run itself):
the firewall denies DNS to one resolver and connections opened from outside, the rate limiter
drops bursts of the busy /24s, the load balancer spreads the connections to one outside server
(made its VIP) over four backends.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dpkt
import pytest

from ftmbctl.direct import run_direct
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.pcapio import iter_packets
from ftmbctl.record import RecordConfig, RecordResult, record
from ftmbctl.rundir import RunDir
from ftmbctl.verify import SweepConfig, SweepReport, sweep
from runreader import recorded_middlebox

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "firewall-rules.txt"
MUTANTS = Path(__file__).resolve().parent / "mutants" / "library_mutants.py"
CUT = 150  # packets of traces/small.pcap
SNAPSHOT_EVERY = 50
FLUSH_EVERY = 8
BACKENDS = "100.64.1.1,100.64.1.2:8443,100.64.1.3,100.64.1.4"  # RFC 6598: not in the trace

FIREWALL = "ftmbctl.middleboxes.firewall:Firewall"
RATELIMIT = "ftmbctl.middleboxes.ratelimit:RateLimit"
LB = "ftmbctl.middleboxes.lb:LoadBalancer"


@pytest.fixture(scope="module")
def cut_trace(small_trace: Path, small_trace_head) -> Path:
    if small_trace.name != "small.pcap":
        pytest.skip("the options below are made for the bundled traces/small.pcap")
    return small_trace_head(CUT)


@pytest.fixture(scope="module")
def packets(cut_trace: Path) -> list[Packet]:
    return [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in iter_packets(cut_trace)]


def busiest_server(packets: list[Packet]) -> tuple[str, int]:
    """("ip:port", connections) of the outside server most connected to (SYNs) in ``packets``."""
    syns: Counter[str] = Counter()
    for p in packets:
        ip = dpkt.ethernet.Ethernet(p.data).data
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
            if ip.data.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK) == dpkt.tcp.TH_SYN and ip.dst[0] != 10:
                syns[f"{'.'.join(map(str, ip.dst))}:{ip.data.dport}"] += 1
    # most connections, ties by text: the choice never depends on hash or insertion order
    return min(syns.items(), key=lambda item: (-item[1], item[0]))


def options(middlebox: str, packets: list[Packet]) -> list[str]:
    if middlebox == FIREWALL:
        return [f"rules={RULES}"]
    if middlebox == RATELIMIT:
        return ["rate=20", "burst=10"]
    return [f"vip={busiest_server(packets)[0]}", f"backends={BACKENDS}"]


def record_run(trace: Path, out: Path, middlebox: str, opts: list[str], queues: int, seed: int) -> RecordResult:
    return record(RecordConfig(trace=trace, out=out, middlebox=middlebox, mb_opts=opts, queues=queues,
                               snapshot_every=SNAPSHOT_EVERY, flush_every=FLUSH_EVERY, scheduler="chaos", seed=seed))


def sweep_run(run: Path) -> SweepReport:
    return sweep(run, SweepConfig(middlebox=recorded_middlebox(run), every=3, torn=True, jobs=2))


def rewritten(run: Path, packets: list[Packet]) -> int:
    """Outputs of a run that differ from their input frame."""
    return sum(1 for o in RunDir(run).outputs() if o.data != packets[o.input_id].data)


# ---------------------------------------------------------------- the correct built-ins

def values(result, name: str) -> dict:
    """A shared map's entries after a direct run (a sharded map's shards merged)."""
    merged: dict = {}
    for var in result.shared.variables:
        if var.name == name or var.name.startswith(name + "["):
            merged.update(var.dump())
    return merged


def test_the_options_make_every_middlebox_work_on_the_cut(packets: list[Packet]) -> None:
    vip, connections = busiest_server(packets)
    assert connections >= 2, vip
    fw = run_direct(build_middlebox(FIREWALL, options(FIREWALL, packets)), packets)
    drops = values(fw, "drops")
    assert drops["denied"] >= 5 and drops["invalid"] >= 1, drops
    rl = run_direct(build_middlebox(RATELIMIT, options(RATELIMIT, packets)), packets, queues=4)
    dropped = sum(bucket[3] for bucket in values(rl, "buckets").values())
    assert 20 <= dropped <= CUT - 40, dropped
    lb = run_direct(build_middlebox(LB, options(LB, packets)), packets, queues=4)
    active = values(lb, "active")
    assert sum(total for _active, total in active.values()) == connections
    assert len(active) == connections  # least connections: concurrent connections on distinct backends


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("queues", [1, 4])
@pytest.mark.parametrize("middlebox", [FIREWALL, RATELIMIT, LB], ids=["firewall", "ratelimit", "lb"])
def test_recovery_from_every_crash_point_is_consistent(cut_trace: Path, packets: list[Packet], tmp_path: Path,
                                                       middlebox: str, queues: int, seed: int) -> None:
    run = tmp_path / "run"
    result = record_run(cut_trace, run, middlebox, options(middlebox, packets), queues, seed)
    if middlebox == LB:
        assert result.dropped == 0 and rewritten(run, packets) >= 10
    else:
        assert result.dropped >= 10
    report = sweep_run(run)
    failing = [(p["event"], p["variant"], p["violations"]) for p in report.points if not p["consistent"]]
    assert report.consistent and not failing, failing[:2]
    assert len(report.points) >= 40
    assert any(p["recovery"]["snapshot"] >= 1 for p in report.points)  # recoveries from a snapshot too
    assert any(p["variant"] != "clean" for p in report.points)  # and torn tails


# ---------------------------------------------------------------- the mutants

@dataclass(frozen=True)
class Mutant:
    name: str
    base: str  # the built-in whose options it takes
    queues: int
    variable: str  # regex the logged-prefix-state variable name must match
    cause: str  # the likely cause (ftmbctl.causes code) verify must name
    also: frozenset[str]  # other invariants the bug may break


_AFTER = frozenset({"full-state", "snapshot-chain"})
MUTANT_CASES = [
    Mutant("FirewallDirectRuleHits", FIREWALL, 1, r"rule_hits \(id 0\)", "bypass-write", _AFTER),
    Mutant("RateLimitWallClock", RATELIMIT, 4, r"buckets\[\d+\] \(id \d+\)", "clock",
           _AFTER | {"output-commit"}),
    Mutant("LoadBalancerPyRandom", LB, 4, r"active \(id 0\)", "random", _AFTER | {"output-commit"}),
]


@contextlib.contextmanager
def seeded_random(seed: str) -> Iterator[None]:
    """Seed Python's global ``random`` (which the random mutant misuses); restore it afterwards.
    Record and sweep get different seeds, as two processes would."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


@pytest.mark.parametrize("mutant", MUTANT_CASES, ids=lambda m: m.name)
def test_mutant_is_caught(cut_trace: Path, packets: list[Packet], tmp_path: Path, mutant: Mutant) -> None:
    run = tmp_path / "run"
    spec = f"{MUTANTS}:{mutant.name}"
    with seeded_random(f"record:{mutant.name}"):
        record_run(cut_trace, run, spec, options(mutant.base, packets), mutant.queues, 1)
    with seeded_random(f"replay:{mutant.name}"):
        report = sweep_run(run)
    assert not report.consistent, "verify did not catch the bug"
    assert all("error" not in p for p in report.points), [p["error"] for p in report.points if "error" in p]
    violations = [v for p in report.points for v in p["violations"]]
    seen = {v["invariant"] for v in violations}
    assert "logged-prefix-state" in seen, seen
    assert seen <= {"logged-prefix-state"} | mutant.also, seen
    logged = [v for v in violations if v["invariant"] == "logged-prefix-state"]
    assert all(re.fullmatch(mutant.variable, v["variable"]) for v in logged), {v["variable"] for v in logged}
    assert all(mutant.cause in v["likely_causes"] for v in logged), [v["likely_cause"] for v in logged][:3]
    flagged = sum(1 for p in report.points if not p["consistent"])
    assert flagged >= 5, f"only {flagged} crash points caught the bug"


# ---------------------------------------------------------------- what the engine does not do yet

def test_recovery_from_another_directory_reads_the_rules_the_record_read(cut_trace: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    recorded_in, recovered_in = tmp_path / "a", tmp_path / "b"
    recorded_in.mkdir()
    recovered_in.mkdir()
    (recorded_in / "rules.txt").write_text(RULES.read_text())
    monkeypatch.chdir(recorded_in)
    record_run(cut_trace, tmp_path / "run", FIREWALL, ["rules=rules.txt"], 1, 1)
    monkeypatch.chdir(recovered_in)
    report = sweep(tmp_path / "run", SweepConfig(middlebox=recorded_middlebox(tmp_path / "run"), every=40, jobs=1, chain=False))
    assert all("error" not in p for p in report.points), report.points[0].get("error")
