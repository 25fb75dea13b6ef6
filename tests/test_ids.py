"""The IDS: signatures found across TCP segment boundaries (and, by policy, not across out-of-order
ones), per-source port-scan windows, alerts that come out of a real record, frames that never make
it raise, and a recovery sweep that stays consistent while a wall-clock mutant is caught.

``IdsWallClock`` below is a mutant loaded by path (``tests/test_ids.py:IdsWallClock``)."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.context import ALERT_LINKTYPE
from ftmbctl.direct import run_direct
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.middleboxes.ids import (DEFAULT_SIGNATURES, Automaton, Ids, _observe, decode_signature,
                                     show_signature)
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import RunDir
from ftmbctl.verify import SweepConfig, sweep
from runreader import recorded_middlebox

IDS = "ftmbctl.middleboxes.ids:Ids"
MUTANT = f"{Path(__file__).resolve()}:IdsWallClock"
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
T0 = 1_767_225_600.0
SYN, ACK, PSH, FIN, RST = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST


# ---------------------------------------------------------------- frames

def ip_frame(src: str, dst: str, seg: Any, proto: int) -> bytes:
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=seg)
    return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip))


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, flags: int = ACK, payload: bytes = b"") -> bytes:
    return ip_frame(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=1, flags=flags, data=payload), 6)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    return ip_frame(src, dst, dpkt.udp.UDP(sport=sport, dport=dport, data=payload), 17)


def run(frames: list[bytes], times: list[float] | None = None, queues: int = 1, **opts: Any):
    times = times or [float(i) for i in range(len(frames))]
    packets = [Packet(i, int((T0 + t) * 1e9), 1, f) for i, (f, t) in enumerate(zip(frames, times))]
    return run_direct(Ids(**opts), packets, queues=queues)


def alerts(result) -> list[str]:
    return [data.decode() for pid in sorted(result.outputs) for lt, data in result.outputs[pid] if lt == ALERT_LINKTYPE]


def var(result, name: str) -> Any:
    merged: dict = {}
    for v in result.shared.variables:
        if v.name == name:
            return v.dump()
        if v.name.startswith(name + "["):
            merged.update(v.dump())
    return merged


CLIENT, SERVER = "10.0.0.5", "93.184.216.34"


def stream(*segments: tuple[int, bytes], syn: bool = True, isn: int = 999) -> list[bytes]:
    """A client's stream: a SYN (ISN ``isn``, data starts at isn + 1), then ``(offset, payload)``
    segments in the given order (offset from the first data byte)."""
    frames = [tcp(CLIENT, SERVER, 40000, 80, isn, SYN)] if syn else []
    first = (isn + 1) % (1 << 32)
    frames += [tcp(CLIENT, SERVER, 40000, 80, (first + off) % (1 << 32), ACK | PSH, data) for off, data in segments]
    return frames


# ---------------------------------------------------------------- the automaton and signature text

@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(st.binary(min_size=1, max_size=5).map(lambda b: bytes(x % 3 + 97 for x in b)),
                         min_size=1, max_size=6, unique=True),
       text=st.binary(max_size=60).map(lambda b: bytes(x % 3 + 97 for x in b)))
def test_automaton_finds_exactly_what_a_naive_search_finds(patterns, text):
    automaton = Automaton(patterns)
    state, hits = 0, []
    for i, byte in enumerate(text):  # one byte at a time: the state carries every partial match
        state, found = automaton.scan(bytes([byte]), state)
        hits += [(i, index) for index in found]
    naive = [(i + len(p) - 1, index) for i in range(len(text)) for index, p in enumerate(patterns)
             if text.startswith(p, i)]
    assert sorted(hits) == sorted(naive)
    assert sorted(automaton.scan(text)[1]) == sorted(index for _i, index in naive)


@settings(max_examples=200, deadline=None)
@given(sigs=st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=5))
def test_signature_text_round_trips_through_an_option(sigs):
    texts = [show_signature(sig) for sig in sigs]
    assert [decode_signature(text) for text in texts] == sigs
    assert all(0x20 <= ord(c) < 0x7F for text in texts for c in text)
    option = " , ".join(texts)  # a comma-separated list, spaces around the items
    assert Ids(signatures=option, scan_threshold=0).signatures == tuple(dict.fromkeys(sigs))


@pytest.mark.parametrize("bad", ["", "\\", "ab\\x4", "\\q", "\\xzz"])
def test_bad_signature_text_is_refused(bad):
    with pytest.raises(ValueError):
        decode_signature(bad)


# ---------------------------------------------------------------- streams

def test_signature_split_across_two_segments_is_found():
    frames = stream((0, b"GET /../../etc/pas"), (18, b"swd HTTP/1.1\r\n"))
    result = run(frames, signatures="/etc/passwd")
    assert alerts(result) == [f'ids: signature "/etc/passwd" in tcp {CLIENT}:40000 -> {SERVER}:80, packet 2']
    assert var(result, "alerts") == {"/etc/passwd": 1}
    assert [data for _lt, data in result.outputs[1]] == [frames[1]]  # passed unchanged, alert after it
    assert [out[0] for out in result.outputs[2]] == [1, ALERT_LINKTYPE]


def test_split_signature_is_not_found_when_the_second_segment_comes_first():
    """Documented policy: an out-of-order segment is matched on its own, from a fresh state."""
    first, second = (0, b"GET /../../etc/pas"), (18, b"swd HTTP/1.1\r\n")
    result = run(stream(second, first), signatures="/etc/passwd")
    assert alerts(result) == [] and var(result, "alerts") == {}
    stats = result.local[0]["stats"]
    assert stats["gap"] == 1 and stats["late"] == 1
    # ... and a later in-order segment continues the stream from the out-of-order one's end
    result = run(stream(second, first, (32, b"/etc/passwd")), signatures="/etc/passwd")
    assert len(alerts(result)) == 1 and "packet 3" in alerts(result)[0]


def test_late_segment_holding_a_whole_signature_is_found_once():
    """The late segment fills the hole: its bytes are matched; a retransmission is not matched
    again (no duplicate alert)."""
    a, b = (0, b"xx/etc/passwdyy"), (15, b"zzzz")
    result = run(stream(b, a, a), signatures="/etc/passwd")
    assert [re.search(r"packet (\d+)", text).group(1) for text in alerts(result)] == ["2"]
    assert result.local[0]["stats"]["retransmitted"] == 1


def test_overlapping_retransmission_matches_only_new_bytes_and_continues_the_stream():
    result = run(stream((0, b"abc/etc/"), (4, b"etc/pass"), (12, b"wd")), signatures="/etc/passwd")
    assert len(alerts(result)) == 1 and "packet 3" in alerts(result)[0]
    assert result.local[0]["stats"]["overlap"] == 1


def test_stream_picked_up_mid_connection_and_sequence_wraparound():
    isn = (1 << 32) - 6  # data starts at 2**32 - 5 and wraps after five bytes
    result = run(stream((0, b"...cm"), (5, b"d.exe"), isn=isn, syn=True), signatures="cmd.exe")
    assert len(alerts(result)) == 1
    result = run(stream((0, b"...cm"), (5, b"d.exe"), syn=False), signatures="cmd.exe")
    assert len(alerts(result)) == 1


def test_directions_are_separate_streams_and_fin_ends_one():
    frames = [tcp(CLIENT, SERVER, 40000, 80, 100, ACK, b"/etc/pa"),
              tcp(SERVER, CLIENT, 80, 40000, 500, ACK, b"sswd"),  # the other direction: no match
              tcp(CLIENT, SERVER, 40000, 80, 107, ACK | FIN, b"ss"),
              tcp(CLIENT, SERVER, 40000, 80, 109, ACK, b"wd")]  # after FIN: picked up afresh
    result = run(frames, signatures="/etc/passwd")
    assert alerts(result) == [] and result.local[0]["flows"].keys() == {(f"{CLIENT}:40000", f"{SERVER}:80"),
                                                                      (f"{SERVER}:80", f"{CLIENT}:40000")}


def test_snaplen_cut_segment_restarts_the_stream_after_it():
    cut = tcp(CLIENT, SERVER, 40000, 80, 1000, ACK, b"/etc/pa" + b"x" * 20)[:-20]  # 20 bytes not captured
    frames = stream(syn=False) + [cut, tcp(CLIENT, SERVER, 40000, 80, 1027, ACK, b"sswd"),
                                  tcp(CLIENT, SERVER, 40000, 80, 1031, ACK, b"/etc/passwd")]
    result = run(frames, signatures="/etc/passwd")
    assert len(alerts(result)) == 1 and "packet 2" in alerts(result)[0]
    assert result.local[0]["stats"]["truncated"] == 1


def test_flow_table_is_bounded_oldest_evicted():
    frames = [tcp(CLIENT, SERVER, 40000 + i, 80, 1, ACK, b"x") for i in range(5)]
    result = run(frames, max_flows=3)
    assert list(result.local[0]["flows"]) == [(f"{CLIENT}:{40000 + i}", f"{SERVER}:80") for i in (2, 3, 4)]
    assert result.local[0]["stats"]["evicted"] == 2


def test_udp_several_signatures_nocase_and_counts():
    payload = b"id=1 union select * from t; ${JNDI:ldap://x} union select"
    result = run([udp(CLIENT, "198.51.100.53", 5353, 53, payload)], signatures="UNION SELECT,${jndi:", nocase="true")
    assert alerts(result) == [f'ids: signature "union select" (2 matches) in udp {CLIENT}:5353 -> 198.51.100.53:53, '
                              "packet 0", f'ids: signature "${{jndi:" in udp {CLIENT}:5353 -> 198.51.100.53:53, packet 0']
    assert var(result, "alerts") == {"union select": 1, "${jndi:": 1}
    assert run([udp(CLIENT, "198.51.100.53", 5353, 53, payload)], signatures="UNION SELECT").outputs[0][1:] == []


def test_ipv6_stream_and_fragments():
    def frame6(payload, seq):
        seg = dpkt.tcp.TCP(sport=1234, dport=80, seq=seq, flags=ACK, data=payload)
        ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                           dst=socket.inet_pton(socket.AF_INET6, "2001:db8::2"), nxt=6, hlim=64, data=seg)
        ip6.plen = len(bytes(seg))
        return bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x86DD, data=ip6))
    result = run([frame6(b"/bin", 1), frame6(b"/sh", 5)], signatures="/bin/sh")
    assert alerts(result) == ['ids: signature "/bin/sh" in tcp [2001:db8::1]:1234 -> [2001:db8::2]:80, packet 1']
    fragment = bytearray(tcp(CLIENT, SERVER, 1, 80, 1, ACK, b"/bin/sh"))
    fragment[14 + 6] = 0x20  # more fragments
    result = run([bytes(fragment)], signatures="/bin/sh")
    assert alerts(result) == [] and result.local[0]["stats"]["fragments"] == 1


# ---------------------------------------------------------------- port scans

SCANNER = "192.0.2.66"


def probes(source: str, ports: list[int], host: str = "10.0.0.10") -> list[bytes]:
    return [tcp(source, host, 50000, port, 7, SYN) for port in ports]


def test_scan_detection_per_source_and_window():
    frames = (probes(SCANNER, [22, 23, 80, 80, 443])  # 4 distinct: not yet
              + probes("192.0.2.77", [1, 2, 3, 4])  # another source, 4: never
              + probes(SCANNER, [8080, 8443, 9000])  # 5th distinct: one alert, then none in this window
              + [tcp(SCANNER, "10.0.0.11", 50000, 22, 7, SYN | ACK)]  # a SYN/ACK is no probe
              + probes(SCANNER, [1, 2, 3, 4, 5, 6]))  # after the window: a new window, a new alert
    times = [0, 1, 2, 3, 4] + [1, 2, 3, 4] + [5, 6, 7] + [8] + [20, 21, 22, 23, 24, 25]
    result = run(frames, times, queues=4, scan_threshold=5, scan_window=10)
    assert alerts(result) == [f"ids: port scan from {SCANNER}: 5 distinct destinations (ip:port) within 10s, "
                              f"packet {i}" for i in (9, 17)]
    assert var(result, "scan_alerts") == 2
    start, seen, alerted = var(result, "scans")[SCANNER]
    assert start == T0 + 20 and len(seen) == 5 and alerted  # the threshold caps what a window keeps
    assert var(result, "scans")["192.0.2.77"][1] == tuple(f"10.0.0.10:{p}" for p in (1, 2, 3, 4))


def test_udp_probes_count_but_service_replies_do_not():
    replies = [udp("198.51.100.53", f"10.0.0.{i}", 53, 40000 + i) for i in range(10, 20)]
    queries = [udp(SCANNER, "10.0.0.10", 40000, port) for port in (53, 123, 161)]
    result = run(replies + queries, scan_threshold=3)
    assert alerts(result) == [f"ids: port scan from {SCANNER}: 3 distinct destinations (ip:port) within 10s, "
                              "packet 12"]
    assert "198.51.100.53" not in var(result, "scans")


def test_scan_table_is_bounded_and_evicts_the_oldest_window():
    mb = Ids(scan_sources=16)  # one source per shard
    sources = [f"192.0.2.{i}" for i in range(100)]
    frames = [tcp(src, "10.0.0.10", 5000, 80, 1, SYN) for src in sources]
    result = run_direct(mb, [Packet(i, int((T0 + i) * 1e9), 1, f) for i, f in enumerate(frames)])
    shards = [v.dump() for v in result.shared.variables if v.name.startswith("scans[")]
    assert len(shards) == 16 and all(len(s) <= 1 for s in shards)
    newest = {mb.scans.shard_for(src).name: src for src in sources}  # the last source of each shard stays
    assert {src for s in shards for src in s} == set(newest.values())

    class View(dict):
        def put(self, key, value):
            self[key] = value

    table = View({"a": (5.0, (), False), "b": (3.0, (), False), "c": (3.0, (), False)})
    _observe("d", "x:1", 9.0, 10.0, 5, 3)(table)
    assert sorted(table) == ["a", "c", "d"]  # the oldest window goes ("b": tie with "c" broken by address)


def test_scan_threshold_zero_turns_detection_off():
    result = run(probes(SCANNER, list(range(1, 40))), scan_threshold=0)
    assert alerts(result) == [] and var(result, "scans") == {}
    assert all(v.count == 0 for v in result.shared.variables)


# ---------------------------------------------------------------- options

def test_options_signature_file_and_defaults(tmp_path):
    assert Ids().signatures == tuple(decode_signature(s) for s in DEFAULT_SIGNATURES)
    rules = tmp_path / "rules.txt"
    rules.write_text("# comment\n\nevil\\x2cthing\n  /etc/passwd  \n\\x00\\xff\n")
    mb = build_middlebox(IDS, [f"signature_file={rules}", "signatures=cmd.exe, /etc/passwd"])
    assert mb.signatures == (b"cmd.exe", b"/etc/passwd", b"evil,thing", b"\x00\xff")
    assert mb.names[-1] == "\\x00\\xff"
    rules.write_text("ok\nbad\\q\n")
    with pytest.raises(BadInput, match=r"rules.txt: line 2: bad escape"):
        Ids(signature_file=str(rules))
    with pytest.raises(BadInput, match="does not exist"):
        Ids(signature_file=str(tmp_path / "missing"))
    for bad in (["scan_window=0"], ["scan_threshold=-1"], ["nocase=maybe"], ["max_flows=0"], ["signatures=a\\"],
                ["colour=red"]):
        with pytest.raises(UsageError):
            build_middlebox(IDS, bad)


# ---------------------------------------------------------------- malformed frames

@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=90), linktype=st.sampled_from([0, 1, 101, 113, 229, 276]),
       dress=st.sampled_from([b"", b"\x45", b"\x46", b"\x60", b"\x4f", b"\x45\x00\x00\x28\x00\x00\x00\x00\x40\x06"]))
def test_arbitrary_bytes_pass_through_and_never_raise(raw, linktype, dress):
    data = dress + raw[len(dress):]
    result = run_direct(Ids(scan_threshold=2), [Packet(0, 0, linktype, data), Packet(1, 1, linktype, data)])
    assert result.outputs[0][0] == (linktype, data) and result.outputs[1][0] == (linktype, data)


@pytest.mark.parametrize("mangle", ["short_ip", "total_below_ihl", "tcp_cut", "offset_below_5", "options_cut",
                                    "udp_cut"])
def test_malformed_frames_are_passed_and_counted(mangle):
    good = bytearray(tcp(CLIENT, SERVER, 1, 80, 1, ACK, b"/etc/passwd"))
    if mangle == "short_ip":
        data = bytes(good[:14 + 12])
    elif mangle == "total_below_ihl":
        good[16:18] = b"\x00\x10"
        data = bytes(good)
    elif mangle == "tcp_cut":
        data = bytes(good[:14 + 20 + 12])
    elif mangle == "offset_below_5":
        good[14 + 20 + 12] = 0x40
        data = bytes(good)
    elif mangle == "options_cut":
        good[14 + 20 + 12] = 0xF0  # 60-byte header in a 31-byte segment
        data = bytes(good)
    else:
        data = udp(CLIENT, SERVER, 1, 80, b"")[:14 + 20 + 5]
    result = run([data])
    assert result.outputs[0] == [(1, data)] and var(result, "malformed") == 1


# ---------------------------------------------------------------- a trace with attacks, recorded

def make_attack_trace(path: Path) -> dict[str, Any]:
    """~160 packets over 40 s: HTTP flows carrying signatures split across segments, one with its
    segments out of order, UDP queries, background flows, and port scans in two windows from
    ``SCANNER`` and one from another source (some after each snapshot boundary)."""
    events: list[tuple[float, bytes]] = []
    sigs = [b"/etc/passwd", b"${jndi:", b"cmd.exe", b"<script>", b"/bin/sh", b"../../"]
    for i in range(12):
        client, port, start = f"10.0.0.{10 + i}", 41000 + i, 1.0 + i * 3.1
        server = ("93.184.216.34", "198.51.100.7", "203.0.113.9")[i % 3]
        sig = sigs[i % len(sigs)]
        body = b"GET /x?q=" + (sig if i % 4 else b"harmless") + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        cut = 9 + len(sig) // 2
        parts = [(0, body[:cut]), (cut, body[cut:])]
        if i == 5:
            parts.reverse()  # out of order: the split signature is not found
        seq = 1000 * i
        flow = [tcp(client, server, port, 80, seq, SYN), tcp(server, client, 80, port, 5000, SYN | ACK)]
        flow += [tcp(client, server, port, 80, seq + 1 + off, ACK | PSH, data) for off, data in parts]
        flow += [tcp(server, client, 80, port, 5001, ACK | PSH, b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * (40 + i)),
                 tcp(client, server, port, 80, seq + 1 + len(body), ACK | FIN),
                 tcp(server, client, 80, port, 5001 + 59 + i, ACK | FIN)]
        events += [(start + k * 0.05, f) for k, f in enumerate(flow)]
    for i in range(8):
        payload = b"SELECT name FROM t UNION SELECT pw" if i % 3 == 0 else b"query %d" % i
        events.append((2.5 + i * 4.3, udp(f"10.0.0.{30 + i}", "198.51.100.53", 40500 + i, 53, payload)))
        events.append((2.6 + i * 4.3, udp("198.51.100.53", f"10.0.0.{30 + i}", 53, 40500 + i, b"answer")))
    for k, port in enumerate(range(20, 32)):  # a scan early on
        events.append((3.0 + k * 0.3, tcp(SCANNER, "10.0.0.10", 52000, port, 77, SYN)))
    for k, port in enumerate(range(100, 112)):  # another scanner, mid-trace
        events.append((18.0 + k * 0.2, tcp("203.0.113.200", f"10.0.0.{10 + k % 4}", 53000, port, 77, SYN)))
    for k, port in enumerate(range(400, 412)):  # the first scanner again, in a new window
        events.append((30.0 + k * 0.2, tcp(SCANNER, "10.0.0.11", 52001, port, 77, SYN)))
    events.sort(key=lambda e: e[0])
    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, nano=True)
        for t, frame in events:
            writer.writepkt(frame, ts=T0 + t)
    return {"packets": len(events)}


SWEEP_OPTS = ["scan_threshold=8", "scan_window=10"]


@pytest.fixture(scope="module")
def attack_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "attacks.pcap"
    make_attack_trace(path)
    return path


def record_ids(trace: Path, out: Path, queues: int, middlebox: str = IDS, seed: int = 1) -> Path:
    record(RecordConfig(trace=trace, out=out, middlebox=middlebox, mb_opts=SWEEP_OPTS, queues=queues, seed=seed,
                        snapshot_every=50, flush_every=8))
    return out


def test_alerts_leave_through_output_log_and_export(attack_trace, tmp_path):
    run_dir = record_ids(attack_trace, tmp_path / "run", 2)
    outputs = list(RunDir(run_dir).outputs())
    texts = [o.data.decode() for o in outputs if o.linktype == ALERT_LINKTYPE]
    signatures = [t for t in texts if "signature" in t]
    scans = [t for t in texts if "port scan" in t]
    # 12 flows, every 4th harmless, the out-of-order one (i=5) missed: 12 - 3 - 1 = 8; plus 3 UDP
    assert len(signatures) == 8 + 3, texts
    assert sorted(re.search(r"from (\S+):", t).group(1) for t in scans) == sorted([SCANNER, SCANNER, "203.0.113.200"])
    assert all(re.search(r", packet \d+$", t) for t in texts)
    packets = [o for o in outputs if o.linktype != ALERT_LINKTYPE]
    assert len(packets) == make_attack_trace(tmp_path / "again.pcap")["packets"]  # every packet passed
    dest = tmp_path / "alerts.jsonl"
    result = CliRunner(env=ENV).invoke(app, ["export", str(run_dir), "--alerts", str(dest)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [line["alert"] for line in lines] == texts
    assert f"wrote {len(texts)} released alerts" in result.output


@pytest.mark.parametrize("queues", [1, 4])
def test_recovery_sweep_is_consistent(attack_trace, tmp_path, queues):
    run_dir = record_ids(attack_trace, tmp_path / "run", queues)
    report = sweep(run_dir, SweepConfig(middlebox=recorded_middlebox(run_dir), every=3, torn=True, jobs=2))
    failed = [(p["event"], p["variant"], p["violations"]) for p in report.points if not p["consistent"]]
    assert report.consistent and not failed, failed[:3]
    assert len(report.points) >= 30
    assert any(p["recovery"]["snapshot"] >= 1 for p in report.points)


# ---------------------------------------------------------------- a mutant verify must catch

class IdsWallClock(Ids):
    """BUG: the scan detector takes ``now`` from ``time.time()`` instead of ``ctx.clock()``: not
    logged, so a replay opens windows at other times than the record did."""

    name = "ids-wall-clock"

    def _probe(self, ctx: Any, pkt: Packet, source: str, destination: str) -> None:
        now = time.time()  # BUG: not ctx.clock()
        o = self.opts
        crossed = ctx.apply(self.scans.shard_for(source),
                            _observe(source, destination, now, o["scan_window"], o["scan_threshold"],
                                     self._scan_capacity))
        if crossed:
            ctx.add(self.scan_alerts)
            ctx.alert(f"ids: port scan from {source}: {crossed} destinations, packet {pkt.id}")


def test_wall_clock_mutant_is_caught(attack_trace, tmp_path):
    run_dir = record_ids(attack_trace, tmp_path / "run", 2, middlebox=MUTANT)
    report = sweep(run_dir, SweepConfig(middlebox=recorded_middlebox(run_dir), every=3, torn=True, jobs=2))
    assert not report.consistent
    violations = [v for p in report.points for v in p["violations"]]
    assert all(v["invariant"] in ("logged-prefix-state", "full-state", "snapshot-chain") for v in violations), \
        {v["invariant"] for v in violations}
    logged = [v for v in violations if v["invariant"] == "logged-prefix-state"]
    assert logged and all(re.fullmatch(r"scans\[\d+\] \(id \d+\)", v["variable"]) for v in logged), logged[:3]
    assert all({"clock", "random"} & set(v["likely_causes"]) for v in logged), [v["likely_cause"] for v in logged][:3]
    # seen whether the replay starts from the initial state or from a snapshot
    assert {p["recovery"]["snapshot"] for p in report.points if not p["consistent"]} >= {0, 1}
