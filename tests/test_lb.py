"""The built-in load balancer: a flow stays on its backend, new connections go to the least loaded
one, rewrites are exact (checksums recomputed by dpkt agree), replies from a backend come back
from the VIP, connections end by FIN, RST or idleness, and no frame makes it raise."""

from __future__ import annotations

import itertools
import socket
from collections import Counter
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftmbctl import codec
from ftmbctl.direct import run_direct
from ftmbctl.errors import BadInput, UsageError
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.middleboxes.lb import LoadBalancer
from ftmbctl.pcapio import iter_packets

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT.parent / "shared" / "pcaps"
SPEC = "ftmbctl.middleboxes.lb:LoadBalancer"
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
VIP, VPORT = "203.0.113.80", 80
BACKENDS = ["10.1.0.1", "10.1.0.2:8080", "10.1.0.3"]
OPTS = {"vip": f"{VIP}:{VPORT}", "backends": ",".join(BACKENDS)}
SYN, ACK, FIN, RST, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH
T0 = 1_767_225_600.0


def ip_frame(src, dst, seg, proto=6, ident=99) -> bytes:
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, id=ident, data=seg)
    return MAC_B + MAC_A + b"\x08\x00" + bytes(ip)


def tcp(src, dst, sport, dport, flags=ACK, payload=b"", seq=1) -> bytes:
    return ip_frame(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=7, flags=flags, data=payload))


def to_vip(client, cport, flags=ACK, payload=b"") -> bytes:
    return tcp(client, VIP, cport, VPORT, flags, payload)


def run(frames, times=None, queues=1, seed=0, **opts):
    times = times if times is not None else [i * 0.001 for i in range(len(frames))]
    packets = [Packet(i, int((T0 + t) * 1e9), 1, f) for i, (f, t) in enumerate(zip(frames, times))]
    return run_direct(LoadBalancer(**{**OPTS, **opts}), packets, queues=queues, seed=seed)


def out(result, i) -> bytes | None:
    outs = result.outputs[i]
    assert len(outs) <= 1
    return outs[0][1] if outs else None


def dst_of(frame: bytes) -> str:
    ip = dpkt.ethernet.Ethernet(frame).data
    return f"{socket.inet_ntoa(ip.dst)}:{ip.data.dport}"


def backend_addr(label: str) -> str:
    return label if ":" in label else f"{label}:{VPORT}"


def checksums_valid(frame: bytes) -> bool:
    """Zero both checksums, let dpkt recompute them, compare with what was sent."""
    ip = dpkt.ethernet.Ethernet(frame).data
    again = dpkt.ip.IP(bytes(ip))
    again.sum = 0
    again.data.sum = 0
    return bytes(again) == bytes(ip)


def active(result) -> dict:
    return next(v.dump() for v in result.shared.variables if v.name == "active")


def drops(result) -> dict:
    return next(v.dump() for v in result.shared.variables if v.name == "drops")


# ---- rewrites ----

def test_a_flow_stays_on_one_backend_and_each_rewrite_is_what_dpkt_builds():
    frames = [to_vip("192.0.2.7", 5555, SYN), to_vip("192.0.2.7", 5555, ACK),
              to_vip("192.0.2.7", 5555, ACK | PSH, b"GET"), to_vip("192.0.2.7", 5555, FIN | ACK)]
    result = run(frames)
    chosen = {dst_of(out(result, i)) for i in range(4)}
    assert len(chosen) == 1 and chosen <= {backend_addr(b) for b in BACKENDS}
    ip, port = chosen.pop().split(":")
    for i, flags, payload in ((0, SYN, b""), (2, ACK | PSH, b"GET")):
        assert out(result, i) == tcp("192.0.2.7", ip, 5555, int(port), flags, payload)
    assert all(checksums_valid(out(result, i)) for i in range(4))


def test_replies_from_a_backend_come_back_from_the_vip():
    frames = [tcp("10.1.0.2", "192.0.2.7", 8080, 5555, SYN | ACK), tcp("10.1.0.1", "192.0.2.7", 80, 5555, ACK, b"x"),
              tcp("10.1.0.1", "192.0.2.7", 22, 5555, ACK), tcp("10.1.0.2", "192.0.2.7", 80, 5555, ACK)]
    result = run(frames, queues=4)
    assert out(result, 0) == tcp(VIP, "192.0.2.7", VPORT, 5555, SYN | ACK)
    assert out(result, 1) == tcp(VIP, "192.0.2.7", VPORT, 5555, ACK, b"x")
    assert out(result, 2) == frames[2] and out(result, 3) == frames[3]  # not a backend's service port
    assert sum(local["counts"]["from_backend"] for local in result.local) == 2


@settings(max_examples=200, deadline=None)
@given(client=st.integers(0x01000000, 0xDFFFFFFF), cport=st.integers(1, 65535), payload=st.binary(max_size=64),
       bport=st.integers(1, 65535), ident=st.integers(0, 65535), seed=st.integers(0, 3))
def test_checksums_are_valid_after_every_rewrite(client, cport, payload, bport, ident, seed):
    client_ip = socket.inet_ntoa(client.to_bytes(4, "big"))
    if client_ip in (VIP, "10.9.0.1", "10.9.0.2"):
        return
    frames = [ip_frame(client_ip, VIP, dpkt.tcp.TCP(sport=cport, dport=VPORT, flags=SYN, seq=3, data=payload),
                       ident=ident),
              ip_frame(client_ip, VIP, dpkt.tcp.TCP(sport=cport, dport=VPORT, flags=ACK, data=payload), ident=ident),
              ip_frame("10.9.0.2", client_ip, dpkt.tcp.TCP(sport=bport, dport=cport, flags=ACK, data=payload))]
    result = run(frames, seed=seed, backends=f"10.9.0.1,10.9.0.2:{bport}")
    for i in range(3):
        assert out(result, i) != frames[i] and checksums_valid(out(result, i))
    assert dst_of(out(result, 0)) == dst_of(out(result, 1))


# ---- balancing ----

def test_least_connections_fills_the_idle_backends_first_and_reuses_a_freed_one():
    clients = [("192.0.2.1", 1001), ("192.0.2.2", 1002), ("192.0.2.3", 1003), ("192.0.2.4", 1004)]
    frames = [to_vip(ip, port, SYN) for ip, port in clients[:3]]  # three at once: one each
    frames += [to_vip(*clients[1], FIN | ACK), to_vip(*clients[3], SYN)]  # the second ends; the fourth takes its place
    for seed in range(6):
        result = run(frames, queues=3, seed=seed)
        first = [dst_of(out(result, i)) for i in range(3)]
        assert sorted(first) == sorted(backend_addr(b) for b in BACKENDS)
        assert dst_of(out(result, 4)) == first[1]
        labels = {backend_addr(b): b for b in BACKENDS}
        assert active(result) == {labels[first[0]]: (1, 1), labels[first[1]]: (1, 2), labels[first[2]]: (1, 1)}


def test_ties_are_broken_by_the_logged_random_draw():
    firsts = Counter(dst_of(out(run([to_vip("192.0.2.1", 1000, SYN)], seed=seed), 0)) for seed in range(40))
    assert set(firsts) == {backend_addr(b) for b in BACKENDS}  # every backend gets first connections


def test_a_retransmitted_syn_keeps_its_backend():
    frames = [to_vip("192.0.2.1", 1000, SYN)] * 3 + [to_vip("192.0.2.2", 1000, SYN)]
    result = run(frames)
    assert len({dst_of(out(result, i)) for i in range(3)}) == 1
    assert dst_of(out(result, 3)) != dst_of(out(result, 0))
    assert sorted(active(result).values()) == [(1, 1), (1, 1)]


# ---- connections end ----

def test_fin_or_rst_from_either_side_ends_a_connection_once():
    frames = [to_vip("192.0.2.1", 1000, SYN), tcp(VIP, "192.0.2.1", VPORT, 1000, SYN | ACK),
              tcp(VIP, "192.0.2.1", VPORT, 1000, RST | ACK), to_vip("192.0.2.1", 1000, ACK),
              to_vip("192.0.2.1", 1000, FIN | ACK), to_vip("192.0.2.2", 2000, SYN), to_vip("192.0.2.2", 2000, RST)]
    result = run(frames, queues=2)
    assert out(result, 1) == frames[1] and out(result, 2) == frames[2]  # from the VIP: unchanged
    assert dst_of(out(result, 3)) == dst_of(out(result, 0))  # an ended flow keeps its backend for its last segments
    assert [a for a, _total in active(result).values()] in ([0], [0, 0])
    assert sum(total for _a, total in active(result).values()) == 2


def test_idle_flows_end_and_their_segments_are_dropped_afterwards():
    frames = [to_vip("192.0.2.1", 1000, SYN), to_vip("192.0.2.2", 1000, SYN), to_vip("192.0.2.1", 1000, ACK),
              to_vip("192.0.2.3", 1000, SYN), to_vip("192.0.2.2", 1000, ACK), to_vip("192.0.2.1", 1000, SYN)]
    times = [0.0, 0.5, 5.0, 12.0, 12.1, 30.0]
    result = run(frames, times, timeout=10)
    # 12.0: the sweep ends 192.0.2.2's flow (idle 11.5 s): the new connection sees 1 and 0 active
    assert out(result, 4) is None and drops(result) == {"no_flow": 1}
    assert result.local[0]["flows"].keys() == {(socket.inet_aton("192.0.2.1"), 1000)}
    # 30.0: the sweep ends the other two flows (idle 25 s and 18 s); a new connection opens
    assert sum(a for a, _total in active(result).values()) == 1
    assert sum(total for _a, total in active(result).values()) == 4


def test_a_segment_without_a_flow_is_dropped_and_other_traffic_passes_unchanged():
    udp = ip_frame("192.0.2.1", VIP, dpkt.udp.UDP(sport=1, dport=VPORT, data=b"x"), 17)
    v6 = MAC_B + MAC_A + b"\x86\xdd" + bytes(dpkt.ip6.IP6(src=bytes(16), dst=bytes(16), nxt=59, hlim=1, plen=0))
    arp = MAC_B + MAC_A + b"\x08\x06" + bytes(28)
    others = [to_vip("192.0.2.1", 1000, ACK), tcp("192.0.2.1", VIP, 1000, 443, SYN), udp, v6, arp,
              tcp("192.0.2.1", "198.51.100.1", 1000, VPORT, SYN), tcp(VIP, "192.0.2.1", VPORT, 1000, ACK)]
    result = run(others, queues=2)
    assert out(result, 0) is None and drops(result) == {"no_flow": 1}
    assert [out(result, i) for i in range(1, len(others))] == others[1:]
    assert active(result) == {}


# ---- broken frames ----

def test_malformed_and_fragmented_frames_for_the_vip_are_dropped_and_counted():
    good = bytes(dpkt.ip.IP(src=socket.inet_aton("192.0.2.1"), dst=socket.inet_aton(VIP), p=6,
                            data=dpkt.tcp.TCP(sport=1, dport=VPORT, flags=SYN)))
    frag = bytearray(good)
    frag[6] |= 0x20
    frames = [b"", good[:12], b"\x44" + good[1:], b"\x55" + good[1:], good[:30], good[:2] + b"\x00\x20" + good[4:],
              bytes(frag)]
    result = run([MAC_B + MAC_A + b"\x08\x00" + f for f in frames], queues=2)
    assert all(out(result, i) is None for i in range(len(frames)))
    assert drops(result) == {"malformed": 6, "fragment": 1}


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=80), linktype=st.sampled_from([0, 1, 101, 113, 229, 276]), dress=st.integers(0, 3))
def test_arbitrary_bytes_never_raise(raw, linktype, dress):
    if dress & 1 and len(raw) >= 20:  # make it IPv4 TCP to the VIP (or from a backend)
        addresses = socket.inet_aton("10.1.0.1") + socket.inet_aton(VIP)
        raw = b"\x45" + raw[1:9] + b"\x06" + raw[10:12] + addresses + raw[20:]
    if dress & 2 and len(raw) >= 24:
        raw = raw[:22] + VPORT.to_bytes(2, "big") + raw[24:]
    packets = [Packet(0, 0, linktype, raw), Packet(1, 1, 1, MAC_B + MAC_A + b"\x08\x00" + raw)]
    result = run_direct(LoadBalancer(**OPTS), packets, queues=2)
    assert sorted(result.outputs) == [0, 1] and all(len(o) <= 1 for o in result.outputs.values())


def test_options_are_checked():
    for bad in (["vip=1.2.3.4"], ["vip=1.2.3.4:0"], ["vip=host:80"], ["backends="], ["backends=10.0.0.1,10.0.0.1:81"],
                ["backends=10.0.0.300"], ["timeout=0"], ["vip=10.0.0.1:80", "backends=10.0.0.1"], ["nope=1"]):
        with pytest.raises(UsageError):
            build_middlebox(SPEC, bad)
    mb = build_middlebox(SPEC, ["vip= 10.0.0.1:443", "backends=10.0.0.2, 10.0.0.3:8443 ,"])
    assert mb.opts["vip"] == "10.0.0.1:443" and mb.labels == ("10.0.0.2", "10.0.0.3:8443")
    assert build_middlebox("ftmbctl.middleboxes.lb:LoadBalancer").labels  # the defaults construct


def test_state_is_codec_encodable():
    result = run([to_vip(f"192.0.2.{i}", 1000 + i, SYN) for i in range(10)], queues=3)
    assert codec.decode(codec.encode(result.local)) == result.local
    assert codec.decode(codec.encode(result.shared.dump())) == result.shared.dump()


# ---- traces ----

def busiest_server(packets: list[Packet], default: str = "192.0.2.80:80") -> str:
    """``ip:port`` of the server most connected to (TCP SYNs without ACK over IPv4/Ethernet)."""
    syns: Counter[str] = Counter()
    for p in packets:
        try:
            ip = dpkt.ethernet.Ethernet(p.data).data if p.linktype == 1 else None
        except (dpkt.UnpackError, IndexError, ValueError):  # dpkt gives up on some damaged frames
            continue
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.flags & (SYN | ACK) == SYN:
            syns[f"{socket.inet_ntoa(ip.dst)}:{ip.data.dport}"] += 1
    if not syns:
        return default
    return min(syns.items(), key=lambda item: (-item[1], item[0]))[0]  # ties by text, never by order


@pytest.mark.parametrize("path", [ROOT / "traces" / "mixed.pcap", PCAPS / "chrissanders-packets" / "evilprogram.pcap"],
                         ids=["mixed", "evilprogram"])
def test_a_trace_server_made_a_vip_is_balanced_flow_by_flow(path):
    if not path.exists():
        pytest.skip(f"{path} is not here")
    pkts = [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in itertools.islice(iter_packets(path), 3000)]
    vip = busiest_server(pkts)
    backends = "100.64.1.1,100.64.1.2:8443,100.64.1.3"
    result = run_direct(LoadBalancer(vip=vip, backends=backends), pkts, queues=4)
    vip_ip, vip_port = vip.split(":")
    per_flow: dict[tuple, set] = {}
    rewritten = 0
    for p in pkts:
        outs = result.outputs[p.id]
        ip = dpkt.ethernet.Ethernet(p.data).data
        if not (isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP)
                and socket.inet_ntoa(ip.dst) == vip_ip and ip.data.dport == int(vip_port)):
            assert outs == [(p.linktype, p.data)]  # from the VIP, and everything else: unchanged
            continue
        if not outs:
            continue  # a segment of a connection whose SYN the capture does not show
        sent = outs[0][1]
        assert checksums_valid(sent) or not checksums_valid(p.data)
        per_flow.setdefault((ip.src, ip.data.sport), set()).add(dst_of(sent))
        rewritten += 1
    assert rewritten > 20
    assert all(len(dsts) == 1 for dsts in per_flow.values())  # connections reuse client ports only after a FIN
    used = Counter(next(iter(dsts)) for dsts in per_flow.values())
    assert len(used) >= 2, used


def test_every_shared_capture_runs_without_raising():
    if not PCAPS.exists():
        pytest.skip(f"{PCAPS} is not here")
    ran = 0
    for path in sorted(PCAPS.rglob("*.pcap*")):
        pkts = []
        try:
            for p in itertools.islice(iter_packets(path), 1500):
                pkts.append(Packet(p.index, p.ts_ns, p.linktype, p.data))
        except BadInput:
            pass  # a damaged file: run what could be read
        mb = LoadBalancer(vip=busiest_server(pkts), backends="100.64.1.1,100.64.1.2:8080")
        result = run_direct(mb, pkts, queues=2)
        assert sorted(result.outputs) == [p.id for p in pkts]
        ran += len(pkts)
    assert ran > 5000
