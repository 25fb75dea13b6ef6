"""The chain middlebox: members in order, outputs of one the inputs of the next, prefixed shared
variables, options routed to members, and recovery of the whole chain."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path

import dpkt
import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.context import ALERT_LINKTYPE
from ftmbctl.direct import run_direct
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.middlebox import Middlebox, Packet, build_middlebox
from ftmbctl.middleboxes.chain import Chain, PrefixedShared
from ftmbctl.pcapio import iter_packets
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import RunDir
from ftmbctl.shared import SharedState
from ftmbctl.verify import SweepConfig, sweep
from runreader import recorded_middlebox

CHAIN = "ftmbctl.middleboxes.chain:Chain"
IDS = "ftmbctl.middleboxes.ids:Ids"
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
PACKETS = 150
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", flags: int = dpkt.tcp.TH_SYN) -> bytes:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=1, flags=flags, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, data=seg)
    return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip))


def attack_frames(start: int, t0_ns: int) -> list[Packet]:
    """Outbound flows carrying a signature, an unsolicited inbound one, and a scan from inside."""
    frames = [frame("10.0.0.50", "93.184.216.34", 45000, 80),
              frame("10.0.0.50", "93.184.216.34", 45000, 80, b"GET /etc/passwd", dpkt.tcp.TH_ACK),
              frame("192.0.2.9", "10.0.0.50", 80, 45999, b"<script>", dpkt.tcp.TH_ACK)]  # no mapping: dropped by the NAT
    frames += [frame("10.0.0.51", "203.0.113.9", 46000 + p, p) for p in range(20, 26)]
    return [Packet(start + i, t0_ns + i * 1000, 1, f) for i, f in enumerate(frames)]


@pytest.fixture(scope="module")
def packets(small_trace: Path) -> list[Packet]:
    first = [Packet(r.index, r.ts_ns, r.linktype, r.data) for r in itertools.islice(iter_packets(small_trace), PACKETS)]
    return first + attack_frames(len(first), first[-1].ts_ns + 1000)


@pytest.fixture(scope="module")
def trace(small_trace_head) -> Path:
    return small_trace_head(PACKETS)


def one_after_the_other(members: list[Middlebox], packets: list[Packet]):
    """Run each member with run_direct on what the previous one emitted; alerts leave at once."""
    expected: dict[int, list[tuple[int, bytes]]] = {p.id: [] for p in packets}
    runs, batch = [], packets
    for member in members:
        result = run_direct(member, batch)
        runs.append(result)
        passed = []
        for p in batch:
            for linktype, data in result.outputs[p.id]:
                if linktype == ALERT_LINKTYPE:
                    expected[p.id].append((linktype, data))
                else:
                    passed.append(Packet(p.id, p.ts_ns, linktype, data))
        batch = passed
    for p in batch:
        expected[p.id].append((p.linktype, p.data))
    return expected, runs


@pytest.mark.parametrize("boxes", ["nat,monitor", f"nat,{IDS},monitor", f"{IDS},nat", "monitor"])
def test_outputs_equal_running_the_members_one_after_the_other(packets, boxes):
    ids_opts = {"ids.scan_threshold": 4, "ids.signatures": "/etc/passwd,<script>"} if IDS in boxes else {}
    chain = Chain(boxes=boxes, **ids_opts)
    result = run_direct(chain, packets)
    fresh = [type(member)(**member.opts) for _name, member in chain.members]
    expected, runs = one_after_the_other(fresh, packets)
    assert result.outputs == expected
    for (name, _member), alone in zip(chain.members, runs):
        for var in alone.shared.variables:
            mine = next(v for v in result.shared.variables if v.name == f"{name}/{var.name}")
            assert (mine.dump(), mine.count) == (var.dump(), var.count), var.name
        assert result.local[0][name] == alone.local[0]
    if "ids" in boxes:
        texts = [d.decode() for pid in sorted(result.outputs) for lt, d in result.outputs[pid] if lt == ALERT_LINKTYPE]
        scanner = "10.0.0.51" if boxes.startswith(IDS) else "100.64.0.1"  # after the NAT: its public address
        assert any("/etc/passwd" in t for t in texts) and any(f"port scan from {scanner}:" in t for t in texts)
        # the inbound frame the NAT drops reaches the IDS only when the IDS comes first
        assert any("<script>" in t for t in texts) == boxes.startswith(IDS)
    assert sum(len(v) for v in result.outputs.values()) > 0


def test_the_documented_chain_with_the_firewall(packets):
    """``boxes=firewall,nat,monitor``, once the firewall exists (it is written in parallel)."""
    firewall = pytest.importorskip("ftmbctl.middleboxes.firewall")
    chain = Chain(boxes="ftmbctl.middleboxes.firewall:Firewall,nat,monitor")
    assert [name for name, _m in chain.members] == [firewall.Firewall.name, "nat", "monitor"]
    expected, _runs = one_after_the_other([type(m)(**m.opts) for _n, m in chain.members], packets)
    assert run_direct(chain, packets).outputs == expected


def test_a_member_that_drops_ends_the_packet_and_alerts_pass_through(packets):
    chain = Chain(boxes=f"{IDS},nat", **{"ids.signatures": "<script>"})
    result = run_direct(chain, packets)
    dropped = next(p.id for p in packets if p.data[26:30] == socket.inet_aton("192.0.2.9"))
    assert [lt for lt, _d in result.outputs[dropped]] == [ALERT_LINKTYPE]  # the alert left, the packet did not


def test_shared_variable_names_are_prefixed_and_unique():
    chain = Chain(boxes=f"nat,monitor,{IDS}")
    shared = SharedState()
    chain.declare(shared)
    names = [v.name for v in shared.variables]
    assert len(names) == len(set(names)) and [v.var_id for v in shared.variables] == list(range(len(names)))
    expected = []
    for member_name, member in chain.members:
        alone = SharedState()
        type(member)().declare(alone)
        expected += [f"{member_name}/{v.name}" for v in alone.variables]
    assert names == expected
    assert "nat/ports" in names and "nat/mappings[15]" in names and "monitor/talkers" in names
    assert "ids/scans[0]" in names
    assert chain.new_local_state().keys() == {"nat", "monitor", "ids"}
    # the members' handles are the prefixed variables
    assert chain.member("nat").ports is shared.variables[names.index("nat/ports")]


def test_prefixed_shared_forwards_only_declarations():
    shared = SharedState()
    proxy = PrefixedShared(shared, "m")
    proxy.counter("c", 5)
    proxy.sharded_map("s", shards=2)
    assert [v.name for v in shared.variables] == ["m/c", "m/s[0]", "m/s[1]"] and shared.variables[0].value == 5
    for attr in ("dump", "by_id", "load", "_claim", "variables"):
        with pytest.raises(AttributeError):
            getattr(proxy, attr)
    with pytest.raises(UsageError, match="declared twice"):
        proxy.map("c")


def test_options_reach_the_members_and_bad_ones_are_named():
    chain = build_middlebox(CHAIN, ["boxes=nat, monitor", "nat.public_ip=198.51.100.1", "nat.timeout=30",
                                    "monitor.top_n=3"])
    assert chain.opts["boxes"] == "nat,monitor"
    assert chain.member("nat").opts["public_ip"] == "198.51.100.1" and chain.member("nat").opts["timeout"] == 30.0
    assert chain.member("monitor").opts["top_n"] == 3
    assert build_middlebox(CHAIN, []).opts["boxes"] == "nat,monitor"
    assert Chain(**{"nat.timeout": 5.0}).member("nat").opts["timeout"] == 5.0  # typed values from Python
    cases = [(["boxes="], "at least one"), (["boxes=nat,nat"], "appears twice"),
             (["nat.colour=red"], "no option 'colour'"), (["ids.nocase=true"], "names no member"),
             (["nat.timeout=-1"], "timeout"), (["colour=red"], "no option 'colour'"), (["boxes=nosuch"], "nosuch")]
    for pairs, needle in cases:
        with pytest.raises(UsageError, match=needle):
            build_middlebox(CHAIN, pairs)
    with pytest.raises(BadInput):
        build_middlebox(CHAIN, ["boxes=nat,/nonexistent/box.py:Box"])


def record_chain(trace: Path, out: Path, queues: int, opts: list[str]) -> Path:
    record(RecordConfig(trace=trace, out=out, middlebox=CHAIN, mb_opts=opts, queues=queues, seed=1,
                        snapshot_every=50, flush_every=8))
    return out


@pytest.mark.parametrize("queues,opts", [(1, ["boxes=nat,monitor"]), (4, ["boxes=nat,monitor"]),
                                         (2, [f"boxes=nat,{IDS},monitor", "ids.scan_threshold=3"])],
                         ids=["nat-monitor-q1", "nat-monitor-q4", "nat-ids-monitor-q2"])
def test_recovery_sweep_of_a_chain_is_consistent(trace, tmp_path, queues, opts):
    run_dir = record_chain(trace, tmp_path / "run", queues, opts)
    names = RunDir(run_dir).variable_names().values()
    assert {n.partition("/")[0] for n in names} == {"nat", "monitor"} | ({"ids"} if "ids" in opts[0] else set())
    report = sweep(run_dir, SweepConfig(middlebox=recorded_middlebox(run_dir), every=3, torn=True, jobs=2))
    failed = [(p["event"], p["variant"], p["violations"]) for p in report.points if not p["consistent"]]
    assert report.consistent and not failed, failed[:3]
    assert len(report.points) >= 40 and any(p["recovery"]["snapshot"] >= 2 for p in report.points)


def test_chain_through_the_cli_with_member_options(trace, tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner(env=ENV).invoke(app, ["record", str(trace), "-m", CHAIN, "--mb-opt", "boxes=nat,monitor",
                                             "--mb-opt", "nat.public_ip=198.51.100.1", "--queues", "2",
                                             "--snapshot-every", "50", "--out", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["middlebox"].pop("source_sha256")) == 64  # what replays must run (trust.py)
    assert manifest["middlebox"] == {"spec": CHAIN, "options": ["boxes=nat,monitor", "nat.public_ip=198.51.100.1"]}
    sources = {dpkt.ethernet.Ethernet(o.data).data.src for o in RunDir(run_dir).outputs()
               if dpkt.ethernet.Ethernet(o.data).type == 0x0800}
    assert socket.inet_aton("198.51.100.1") in sources and socket.inet_aton("100.64.0.1") not in sources
    result = CliRunner(env=ENV).invoke(app, ["crash-replay", str(run_dir), "--every", "5", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    bad = CliRunner(env=ENV).invoke(app, ["record", str(trace), "-m", CHAIN, "--mb-opt", "nat.colour=red",
                                          "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "no option 'colour'" in bad.stderr


def test_member_file_options_are_made_absolute_like_top_level_ones(tmp_path, monkeypatch):
    """A recovery may run from another directory: the manifest must name a member's rules file
    absolutely, as it does a top-level one; other options are kept as given."""
    (tmp_path / "rules.txt").write_text("allow tcp any any\n")
    monkeypatch.chdir(tmp_path)
    pairs = ["boxes=firewall,nat", "firewall.rules=rules.txt", "nat.timeout=30"]
    assert Chain.canonical_pairs(pairs) == ["boxes=firewall,nat", f"firewall.rules={tmp_path / 'rules.txt'}",
                                            "nat.timeout=30"]
    assert Chain.canonical_pairs(["boxes=nosuch", "nosuch.x=1"]) == ["boxes=nosuch", "nosuch.x=1"]
