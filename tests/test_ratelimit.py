"""The built-in rate limiter: a burst, then the rate; never more than rate * T + burst frames of a
prefix through in any T seconds, however the frames arrive and whichever queues they land on;
drops counted per prefix; and no frame, however broken, that makes it raise."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftmbctl import codec
from ftmbctl.direct import run_direct
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.flowhash import flow_queue
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.middleboxes.ratelimit import RateLimit

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT.parent / "shared" / "pcaps"
SPEC = "ftmbctl.middleboxes.ratelimit:RateLimit"
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
SERVER = "93.184.216.34"
T0 = 1_767_225_600.0


def udp(src: str, sport: int = 1000, dst: str = SERVER) -> bytes:
    seg = dpkt.udp.UDP(sport=sport, dport=53, data=b"q")
    if ":" in src:
        ip = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), nxt=17, hlim=64, data=seg,
                          dst=socket.inet_pton(socket.AF_INET6, "2001:db8::1"), plen=len(bytes(seg)))
        return MAC_B + MAC_A + b"\x86\xdd" + bytes(ip)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, ttl=64, data=seg)
    return MAC_B + MAC_A + b"\x08\x00" + bytes(ip)


def run(frames, times, queues=1, **opts):
    packets = [Packet(i, int(round((T0 + t) * 1e9)), 1, f) for i, (f, t) in enumerate(zip(frames, times))]
    result = run_direct(RateLimit(**opts), packets, queues=queues)
    for p in packets:
        assert result.outputs[p.id] in ([], [(1, p.data)])  # passed unchanged or dropped
    result.clock = [p.ts_ns / 1e9 for p in packets]  # what ctx.clock() gave each frame
    return result


def passed(result) -> list[bool]:
    return [bool(result.outputs[i]) for i in sorted(result.outputs)]


def buckets(result) -> dict[str, tuple]:
    merged: dict[str, tuple] = {}
    for v in result.shared.variables:
        if v.name.startswith("buckets["):
            merged.update(v.dump())
    return merged


def test_a_burst_passes_then_the_rate():
    frames = [udp("10.0.0.1")] * 40
    times = [0.0] * 30 + [1.0] * 10  # 30 at once, then 10 a second later: 5 tokens have grown back
    result = run(frames, times, rate=5, burst=10)
    assert passed(result) == [True] * 10 + [False] * 20 + [True] * 5 + [False] * 5
    tokens, last, admitted, dropped = buckets(result)["10.0.0.0/24"]
    assert (tokens, admitted, dropped) == (0.0, False, 25) and last == pytest.approx(T0 + 1.0)


def test_hosts_of_one_prefix_share_a_bucket_other_prefixes_have_their_own():
    frames = [udp("10.0.0.1"), udp("10.0.0.2"), udp("10.0.0.3"), udp("10.0.1.1"), udp("2001:db8:1::1"),
              udp("2001:db8:1::2"), udp("2001:db8:2::1")]
    result = run(frames, [0.0] * len(frames), rate=1, burst=2)
    assert passed(result) == [True, True, False, True, True, True, True]
    assert sorted(buckets(result)) == ["10.0.0.0/24", "10.0.1.0/24", "2001:db8:1::/64", "2001:db8:2::/64"]
    per_host = run(frames, [0.0] * len(frames), rate=1, burst=1, prefix=32, prefix6=48)
    assert passed(per_host) == [True, True, True, True, True, False, True]
    everyone = run(frames, [0.0] * len(frames), rate=1, burst=3, prefix=0, prefix6=0)
    assert passed(everyone) == [True, True, True, False, True, True, True]
    assert sorted(buckets(everyone)) == ["0.0.0.0/0", "::/0"]


def test_a_clock_that_steps_back_adds_no_tokens():
    frames = [udp("10.0.0.1")] * 4
    clock = iter([int((T0 + t) * 1e9) for t in (10.0, 9.0, 10.0, 10.5)])
    packets = [Packet(i, 0, 1, f) for i, f in enumerate(frames)]
    result = run_direct(RateLimit(rate=2, burst=1), packets, clock_ns=lambda: next(clock))
    assert [bool(result.outputs[i]) for i in range(4)] == [True, False, False, True]


def test_non_ip_passes_unlimited_and_malformed_is_dropped_and_counted():
    arp = MAC_B + MAC_A + b"\x08\x06" + bytes(28)
    malformed = [MAC_B + MAC_A + b"\x08\x00", MAC_B + MAC_A + b"\x08\x00" + b"\x44" + bytes(30),
                 MAC_B + MAC_A + b"\x08\x00" + b"\x55" + bytes(30), MAC_B + MAC_A + b"\x86\xdd" + b"\x60" + bytes(20)]
    frames = [arp] * 5 + malformed
    result = run(frames, [0.0] * len(frames), rate=1, burst=1)
    assert passed(result) == [True] * 5 + [False] * len(malformed)
    assert next(v.dump() for v in result.shared.variables if v.name == "malformed") == len(malformed)
    assert result.local[0]["passed"] == {"limited": 0, "non_ip": 5}


def test_options_are_checked():
    for bad in (["rate=0"], ["rate=-1"], ["rate=inf"], ["burst=0.5"], ["prefix=33"], ["prefix6=129"], ["prefix=x"],
                ["nope=1"]):
        with pytest.raises(UsageError):
            build_middlebox(SPEC, bad)
    mb = build_middlebox(SPEC, ["rate=2.5", "burst=4", "prefix=16"])
    assert (mb.opts["rate"], mb.opts["burst"], mb.opts["prefix"]) == (2.5, 4.0, 16)
    assert mb.prefix_of(socket.inet_aton("10.1.2.3")) == "10.1.0.0/16"


# ---- the limit, as a property ----

def windows_hold(times: list[float], ok: list[bool], rate: float, burst: float) -> None:
    """In every window [t_i, t_j] between two passed frames, at most rate * (t_j - t_i) + burst passed."""
    through = [t for t, good in zip(times, ok) if good]
    for i, j in itertools.combinations(range(len(through)), 2):
        assert j - i + 1 <= rate * (through[j] - through[i]) + burst + 1e-6, (through[i], through[j], j - i + 1)


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=60),
       rate=st.floats(0.5, 40), burst=st.integers(1, 12))
def test_never_more_than_rate_times_t_plus_burst(gaps, rate, burst):
    times = list(itertools.accumulate(gaps))
    result = run([udp("10.0.0.1")] * len(times), times, rate=rate, burst=burst)
    ok = passed(result)
    windows_hold(result.clock, ok, rate, burst)
    assert sum(ok) >= min(len(times), burst)  # a full bucket lets the first `burst` frames through
    assert buckets(result)["10.0.0.0/24"][3] == ok.count(False)


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.tuples(st.floats(0, 0.5, allow_nan=False), st.integers(1, 254), st.integers(1, 65535)),
                         min_size=1, max_size=60),
       rate=st.floats(1, 30), burst=st.integers(1, 8))
def test_the_limit_holds_across_queues(arrivals, rate, burst):
    """Many hosts of one /24, many flows, four queues: the bucket is shared, the limit is global."""
    arrivals = sorted(arrivals)
    frames = [udp(f"10.0.0.{host}", port) for _t, host, port in arrivals]
    times = [t for t, _host, _port in arrivals]
    result = run(frames, times, queues=4, rate=rate, burst=burst)
    windows_hold(result.clock, passed(result), rate, burst)


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 100), burst=st.integers(1, 5), count=st.integers(1, 40))
def test_frames_spaced_by_a_token_all_pass(rate, burst, count):
    times = [i * (1.0 / rate) * 1.0001 for i in range(count)]
    assert all(passed(run([udp("10.0.0.1")] * count, times, rate=rate, burst=burst)))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=90), linktype=st.sampled_from([0, 1, 101, 113, 229, 276]), dress=st.integers(0, 3))
def test_arbitrary_bytes_never_raise(raw, linktype, dress):
    if dress & 1 and raw:
        raw = bytes([0x45 if dress & 2 else 0x60]) + raw[1:]
    packets = [Packet(0, 0, linktype, raw), Packet(1, 1, 1, MAC_B + MAC_A + b"\x08\x00" + raw)]
    result = run_direct(RateLimit(), packets, queues=2)
    assert [result.outputs[p.id] in ([], [(p.linktype, p.data)]) for p in packets] == [True, True]


def test_state_is_codec_encodable_and_the_same_for_any_queue_count():
    frames = [udp(f"10.0.{i % 3}.{i}", 1000 + i) for i in range(60)]
    times = [i * 0.01 for i in range(60)]
    one, four = run(frames, times, rate=20, burst=5), run(frames, times, queues=4, rate=20, burst=5)
    assert one.outputs == four.outputs and buckets(one) == buckets(four)
    assert codec.decode(codec.encode(four.shared.dump())) == four.shared.dump()
    assert codec.decode(codec.encode(four.local)) == four.local


# ---- real captures ----

def test_real_capture_is_limited_per_source_prefix():
    path = PCAPS / "chrissanders-packets/evilprogram.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    from ftmbctl.pcapio import iter_packets
    pkts = [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in itertools.islice(iter_packets(path), 3000)]
    mb = RateLimit(rate=2, burst=5)
    result = run_direct(mb, pkts, queues=4)
    by_prefix: dict[str, list[tuple[float, bool]]] = {}
    for p in pkts:
        ip = dpkt.ethernet.Ethernet(p.data).data
        if not isinstance(ip, dpkt.ip.IP):
            assert result.outputs[p.id] == [(1, p.data)]
            continue
        assert result.outputs[p.id] in ([], [(1, p.data)])
        by_prefix.setdefault(mb.prefix_of(ip.src), []).append((p.ts_ns / 1e9, bool(result.outputs[p.id])))
    for seen in by_prefix.values():
        windows_hold([t for t, _ok in seen], [ok for _t, ok in seen], 2, 5)
    dropped = {key: bucket[3] for key, bucket in buckets(result).items()}
    assert dropped == {key: sum(not ok for _t, ok in seen) for key, seen in by_prefix.items()}
    assert sum(dropped.values()) > 100
    assert len({flow_queue(p.linktype, p.data, 4) for p in pkts}) == 4


def test_every_shared_capture_runs_without_raising():
    if not PCAPS.exists():
        pytest.skip(f"{PCAPS} is not here")
    from ftmbctl.pcapio import iter_packets
    ran = 0
    for path in sorted(PCAPS.rglob("*.pcap*")):
        pkts = []
        try:
            for p in itertools.islice(iter_packets(path), 1500):
                pkts.append(Packet(p.index, p.ts_ns, p.linktype, p.data))
        except BadInput:
            pass  # a damaged file: run what could be read
        result = run_direct(RateLimit(rate=50, burst=10), pkts, queues=2)
        assert sorted(result.outputs) == [p.id for p in pkts]
        assert all(outs in ([], [(p.linktype, p.data)]) for p, outs in zip(pkts, result.outputs.values()))
        ran += len(pkts)
    assert ran > 5000
