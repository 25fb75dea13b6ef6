"""The built-in NAT: exact rewrites, mappings that live and die by the clock, a pool that never
hands a live port out twice, and no frame, however broken, that makes it raise."""

from __future__ import annotations

import itertools
import socket
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftmbctl import codec
from ftmbctl.context import VanillaContext
from ftmbctl.direct import run_direct
from ftmbctl.errors import UsageError
from ftmbctl.flowhash import flow_queue
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.middleboxes.nat import Nat
from ftmbctl.middleboxes.packets import csum_adjust, delta16, delta32, internet_checksum
from ftmbctl.shared import Map, SharedState

PCAPS = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps"
PUBLIC = "100.64.0.1"
SERVER = "93.184.216.34"
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
PROTO = {"tcp": 6, "udp": 17, "icmp": 1}


# ---- building frames with dpkt ----

def l4(kind, sport, dport, payload=b"data", flags=dpkt.tcp.TH_SYN):
    """A fresh dpkt L4 object (dpkt fills in its checksum when the IP is serialized)."""
    if kind == "tcp":
        return dpkt.tcp.TCP(sport=sport, dport=dport, seq=1000, ack=2000, flags=flags, data=payload)
    return dpkt.udp.UDP(sport=sport, dport=dport, data=payload)


def echo(icmp_type, ident, payload=b"ping"):
    return dpkt.icmp.ICMP(type=icmp_type, data=dpkt.icmp.ICMP.Echo(id=ident, seq=7, data=payload))


def ip_bytes(src, dst, seg, proto, opts=b"", ident=4321):
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=63, id=ident, opts=opts,
                    data=seg)
    if opts:
        ip.hl = 5 + len(opts) // 4
    return bytes(ip)


LINKS = {  # name -> (linktype, header bytes before the IPv4 header)
    "eth": (1, MAC_B + MAC_A + b"\x08\x00"),
    "vlan": (1, MAC_B + MAC_A + b"\x81\x00\x00\x2a\x08\x00"),
    "qinq": (1, MAC_B + MAC_A + b"\x88\xa8\x00\x0b\x81\x00\x00\x2a\x08\x00"),
    "raw": (101, b""),
    "sll": (113, struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\x00\x00", 0x0800)),
    "sll2": (276, struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, MAC_A + b"\x00\x00")),
}


def frame(ip, link="eth"):
    return LINKS[link][1] + ip


def pkt(i, data, t=0.0, link="eth"):
    return Packet(i, int(t * 1e9), LINKS[link][0], data)


def run(packets, queues=1, **opts):
    return run_direct(Nat(**opts), packets, queues=queues)


def var(result, name):
    """The value of a shared variable (a sharded map's shards merged)."""
    merged = {}
    for v in result.shared.variables:
        if v.name == name:
            return v.dump()
        if v.name.startswith(name + "["):
            merged.update(v.dump())
    return merged


def out(result, i):
    return [data for _lt, data in result.outputs[i]]


def ip_of(data, linktype):
    header = len(LINKS["eth"][1]) if linktype == 1 else {101: 0, 113: 16, 276: 20}[linktype]
    if linktype == 1:
        while data[header - 2:header] in (b"\x81\x00", b"\x88\xa8"):
            header += 4
    return dpkt.ip.IP(data[header:])


def checksums_valid(ip: dpkt.ip.IP) -> bool:
    """Recompute with dpkt (zero the sums, re-serialize) and compare with what was sent."""
    sent = bytes(ip)
    again = dpkt.ip.IP(sent)
    again.sum = 0
    if isinstance(again.data, (dpkt.tcp.TCP, dpkt.udp.UDP, dpkt.icmp.ICMP)):
        if not (isinstance(again.data, dpkt.udp.UDP) and ip.data.sum == 0):
            again.data.sum = 0
    return bytes(again) == sent


# ---- translation is exact ----

@pytest.mark.parametrize("link", sorted(LINKS))
@pytest.mark.parametrize("kind", ["tcp", "udp", "icmp"])
def test_outbound_and_reply_equal_frames_built_by_dpkt(link, kind):
    """The NAT's output is byte for byte what dpkt builds for the translated header: so both the
    IP header checksum and the L4 checksum (pseudo-header with the new address) are right."""
    proto = PROTO[kind]
    if kind == "icmp":  # the echo identifier plays the inside port
        go, back = (lambda port: echo(8, port)), (lambda port: echo(0, port, b"pong"))
    else:
        go, back = (lambda port: l4(kind, port, 443)), (lambda port: l4(kind, 443, port, b"reply"))
    outbound = frame(ip_bytes("10.1.2.3", SERVER, go(40000), proto), link)
    reply = frame(ip_bytes(SERVER, PUBLIC, back(1024), proto), link)
    result = run([pkt(0, outbound, 1.0, link), pkt(1, reply, 2.0, link)])
    assert out(result, 0) == [frame(ip_bytes(PUBLIC, SERVER, go(1024), proto), link)]
    assert out(result, 1) == [frame(ip_bytes(SERVER, "10.1.2.3", back(40000), proto), link)]
    linktype = LINKS[link][0]
    for data in out(result, 0) + out(result, 1):
        assert checksums_valid(ip_of(data, linktype))
    assert var(result, "translated_out") == 1 and var(result, "translated_in") == 1


def test_pseudo_header_uses_the_new_source_address():
    """Checked without dpkt: the TCP checksum of the output verifies over a pseudo-header made
    of the public address, and would not verify over the inside one."""
    data = frame(ip_bytes("192.168.7.9", SERVER, l4("tcp", 5555, 80, b"x" * 33), 6))
    sent = out(run([pkt(0, data)]), 0)[0]
    ip = sent[14:]
    segment = ip[20:]
    def verifies(src):
        pseudo = socket.inet_aton(src) + socket.inet_aton(SERVER) + struct.pack("!BBH", 0, 6, len(segment))
        return internet_checksum(pseudo + segment) == 0
    assert verifies(PUBLIC) and not verifies("192.168.7.9")
    assert internet_checksum(ip[:20]) == 0


def test_ip_options_trailer_padding_and_snaplen_cut_are_kept():
    """The L4 header is found past IP options; an Ethernet trailer and a frame cut short by the
    capture survive (the checksum is adjusted, not recomputed over missing payload)."""
    opts = b"\x94\x04\x00\x00"  # router alert
    full = frame(ip_bytes("10.0.0.2", SERVER, l4("udp", 3000, 53, b"q" * 10), 17, opts=opts))
    padded = full + b"\x00" * 6
    cut_tcp = frame(ip_bytes("10.0.0.3", SERVER, l4("tcp", 3001, 80, b"p" * 400), 6))[:14 + 20 + 20 + 10]
    result = run([pkt(0, padded), pkt(1, cut_tcp)])
    expected = frame(ip_bytes(PUBLIC, SERVER, l4("udp", 1024, 53, b"q" * 10), 17, opts=opts))
    assert out(result, 0) == [expected + b"\x00" * 6]
    whole = frame(ip_bytes(PUBLIC, SERVER, l4("tcp", 1024, 80, b"p" * 400), 6))  # cursor: tcp has its own
    assert out(result, 1) == [whole[:len(cut_tcp)]]


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["tcp", "udp"]), host=st.integers(0, 0xFFFFFF), sport=st.integers(0, 65535),
       payload=st.binary(max_size=40), low=st.integers(1, 65535), ident=st.integers(0, 65535))
def test_translation_matches_full_recomputation(kind, host, sport, payload, low, ident):
    inside = socket.inet_ntoa(struct.pack("!I", 0x0A000000 | host))
    data = frame(ip_bytes(inside, SERVER, l4(kind, sport, 8080, payload), PROTO[kind], ident=ident))
    sent = out(run([pkt(0, data)], port_min=low, port_max=low), 0)
    assert sent == [frame(ip_bytes(PUBLIC, SERVER, l4(kind, low, 8080, payload), PROTO[kind], ident=ident))]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0 and any(b)),
       at=st.integers(0, 31), new=st.integers(0, 0xFFFF), wide=st.booleans())
def test_incremental_checksum_equals_full_recomputation(data, at, new, wide):
    words = len(data) // 2
    at = at % words
    if wide and at + 1 < words:
        old = struct.unpack_from("!I", data, at * 2)[0]
        new32 = (new << 16) | (new ^ 0x5A5A)
        changed = data[:at * 2] + struct.pack("!I", new32) + data[at * 2 + 4:]
        delta = delta32(old, new32)
    else:
        old = struct.unpack_from("!H", data, at * 2)[0]
        changed = data[:at * 2] + struct.pack("!H", new) + data[at * 2 + 2:]
        delta = delta16(old, new)
    if not any(changed):
        return
    assert csum_adjust(internet_checksum(data), delta) == internet_checksum(changed)


def test_incremental_checksum_normalizes_minus_zero():
    """0xFFFF is a checksum no full computation gives for data that is not all zeros; replacing a
    0xFFFF word by 0x0000 under it leaves a zero sum, which a full computation writes as 0x0000."""
    assert csum_adjust(0xFFFF, delta16(0xFFFF, 0x0000)) == 0x0000


def test_udp_without_checksum_stays_without():
    seg = l4("udp", 7000, 53, b"abc")
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton(SERVER), p=17, data=seg)
    raw = bytearray(bytes(ip))
    raw[26:28] = b"\x00\x00"  # UDP checksum 0: none sent
    sent = out(run([pkt(0, frame(bytes(raw)))]), 0)[0]
    assert sent[14 + 26:14 + 28] == b"\x00\x00"
    assert internet_checksum(sent[14:34]) == 0


def test_bad_checksum_stays_bad_by_the_same_amount():
    raw = bytearray(ip_bytes("10.0.0.1", SERVER, l4("tcp", 1234, 80), 6))
    raw[36] ^= 0x01  # corrupt the TCP checksum
    sent = out(run([pkt(0, frame(bytes(raw)))]), 0)[0]
    good = frame(ip_bytes(PUBLIC, SERVER, l4("tcp", 1024, 80), 6))
    assert sent[:50] == good[:50] and sent[50] != good[50] and sent[52:] == good[52:]


# ---- mappings ----

def test_endpoint_independent_mapping_and_replies_from_any_host():
    a = frame(ip_bytes("10.0.0.5", SERVER, l4("udp", 5000, 53), 17))
    b = frame(ip_bytes("10.0.0.5", "203.0.113.9", l4("udp", 5000, 123), 17))
    other = frame(ip_bytes("10.0.0.6", SERVER, l4("udp", 5000, 53), 17))
    reply = frame(ip_bytes("198.51.100.77", PUBLIC, l4("udp", 999, 1024), 17))  # EIF: any outside host
    result = run([pkt(0, a), pkt(1, b, 1), pkt(2, other, 2), pkt(3, reply, 3)])
    ports = [dpkt.ethernet.Ethernet(out(result, i)[0]).data.data.sport for i in range(3)]
    assert ports == [1024, 1024, 1025]
    assert out(result, 3) == [frame(ip_bytes("198.51.100.77", "10.0.0.5", l4("udp", 999, 5000), 17))]


def test_unsolicited_inbound_is_dropped_and_counted():
    to_public = frame(ip_bytes(SERVER, PUBLIC, l4("tcp", 80, 2000, flags=dpkt.tcp.TH_SYN), 6))
    to_inside = frame(ip_bytes(SERVER, "10.0.0.9", l4("tcp", 80, 22, flags=dpkt.tcp.TH_SYN), 6))
    ping_in = frame(ip_bytes(SERVER, PUBLIC, echo(0, 1024), 1))
    result = run([pkt(0, to_public), pkt(1, to_inside), pkt(2, ping_in)])
    assert all(out(result, i) == [] for i in range(3))
    assert var(result, "drops") == {"no_mapping": 3}
    assert var(result, "translated_in") == 0


def test_reply_seen_inside_passes_only_with_a_live_mapping():
    """A capture taken inside the NAT shows replies addressed to the inside host."""
    go = frame(ip_bytes("10.0.0.5", SERVER, l4("tcp", 40000, 80), 6))
    back = frame(ip_bytes(SERVER, "10.0.0.5", l4("tcp", 80, 40000, b"r"), 6))
    result = run([pkt(0, back, 0), pkt(1, go, 1), pkt(2, back, 2), pkt(3, back, 200)], timeout=60)
    assert out(result, 0) == [] and out(result, 2) == [back] and out(result, 3) == []
    assert var(result, "drops") == {"no_mapping": 1, "expired": 1}


def unsolicited_connection():
    """A connection opened from outside to an inside service, as a capture inside the NAT shows it."""
    syn, ack, psh = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
    remote, service = "192.0.2.50", "10.0.0.10"
    return [
        frame(ip_bytes(remote, service, l4("tcp", 50000, 22, b"", syn), 6)),
        frame(ip_bytes(service, remote, l4("tcp", 22, 50000, b"", syn | ack), 6)),
        frame(ip_bytes(remote, service, l4("tcp", 50000, 22, b"", ack), 6)),
        frame(ip_bytes(service, remote, l4("tcp", 22, 50000, b"SSH-2.0", psh), 6)),
        frame(ip_bytes(remote, service, l4("tcp", 50000, 22, b"SSH-2.0", psh), 6)),
    ]


def test_a_connection_opened_from_outside_is_dropped_as_a_whole():
    frames = unsolicited_connection()
    result = run([pkt(i, f, i) for i, f in enumerate(frames)])
    assert all(out(result, i) == [] for i in range(len(frames)))
    assert var(result, "drops") == {"no_mapping": 5} and var(result, "ports") == {}


def test_new_tcp_any_lets_mid_connection_segments_create_mappings():
    """For captures that start mid-connection; then only the unsolicited SYN is dropped."""
    frames = unsolicited_connection()
    result = run([pkt(i, f, i) for i, f in enumerate(frames)], new_tcp="any")
    assert [bool(out(result, i)) for i in range(len(frames))] == [False, True, True, True, True]
    assert out(result, 2) == [frames[2]]  # the reply seen inside, passed unchanged
    mid = frame(ip_bytes("10.0.0.7", SERVER, l4("tcp", 4444, 80, b"x", dpkt.tcp.TH_ACK), 6))
    assert out(run([pkt(0, mid)]), 0) == [] and out(run([pkt(0, mid)], new_tcp="any"), 0) != []


def test_expired_mapping_is_not_used_and_its_port_is_reused():
    first = frame(ip_bytes("10.0.0.1", SERVER, l4("udp", 1111, 53), 17))
    second = frame(ip_bytes("10.0.0.2", SERVER, l4("udp", 2222, 53), 17))
    reply = frame(ip_bytes(SERVER, PUBLIC, l4("udp", 53, 1024, b"r"), 17))
    packets = [pkt(0, first, 0), pkt(1, reply, 50), pkt(2, second, 100),  # 1024 busy until 50+60
               pkt(3, reply, 111), pkt(4, second, 112), pkt(5, reply, 113)]
    result = run(packets, port_min=1024, port_max=1024, timeout=60)
    assert out(result, 1) == [frame(ip_bytes(SERVER, "10.0.0.1", l4("udp", 53, 1111, b"r"), 17))]
    assert out(result, 2) == []  # pool of one, still held by 10.0.0.1
    assert out(result, 3) == []  # 61 s idle: expired, not used
    assert out(result, 4) == [frame(ip_bytes(PUBLIC, SERVER, l4("udp", 1024, 53), 17))]  # reused
    assert out(result, 5) == [frame(ip_bytes(SERVER, "10.0.0.2", l4("udp", 53, 2222, b"r"), 17))]
    assert var(result, "drops") == {"pool_exhausted": 1, "expired": 1}
    # the reclaimed owner's forward entry is gone, the new one is there
    assert var(result, "mappings") == {(17, "10.0.0.2", 2222): (1024, 2)}


def test_traffic_in_either_direction_keeps_a_mapping_alive():
    go = frame(ip_bytes("10.0.0.1", SERVER, l4("tcp", 1111, 80), 6))
    back = frame(ip_bytes(SERVER, PUBLIC, l4("tcp", 80, 1024, b"r"), 6))
    other = frame(ip_bytes("10.0.0.2", SERVER, l4("tcp", 2222, 80), 6))
    times = [0, 50, 100, 150, 200]
    packets = [pkt(i, back if i else go, t) for i, t in enumerate(times)] + [pkt(9, other, 230)]
    result = run(packets, port_min=1024, port_max=1024, timeout=60)
    assert all(out(result, i) for i in range(5))
    assert out(result, 9) == [] and var(result, "drops") == {"pool_exhausted": 1}


# ---- the pool never hands out a live port twice (model check) ----

ENDPOINTS = [(proto, f"10.0.0.{1 + i % 3}", 40000 + i // 3) for proto in (6, 17) for i in range(5)]
LOW, HIGH, TIMEOUT = 2000, 2003, 30


def event_frame(event):
    kind, who, _dt = event
    if kind == "out":
        proto, host, port = ENDPOINTS[who]
        return frame(ip_bytes(host, SERVER, l4({6: "tcp", 17: "udp"}[proto], port, 443), proto))
    proto = (6, 17)[who % 2]
    public = LOW - 1 + who // 2  # one port below the range and the four in it
    return frame(ip_bytes(SERVER, PUBLIC, l4({6: "tcp", 17: "udp"}[proto], 443, public, b"r"), proto))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.tuples(st.sampled_from(["out", "out", "in"]), st.integers(0, 9), st.integers(0, 20)),
                       min_size=1, max_size=80),
       queues=st.sampled_from([1, 3, 4]))
def test_pool_agrees_with_a_model_where_live_ports_are_exclusive(events, queues):
    """Model: a port is live while its owner has been seen within the timeout; an endpoint with
    a live port keeps it; a new mapping takes any non-live port, and only if none is left is the
    frame dropped; a reply reaches exactly the live owner of its port."""
    t, packets, times = 0, [], []
    for i, event in enumerate(events):
        t += event[2]
        times.append(t)
        packets.append(pkt(i, event_frame(event), t))
    result = run(packets, queues=queues, port_min=LOW, port_max=HIGH, timeout=TIMEOUT)
    owner: dict[tuple[int, int], tuple[tuple, float]] = {}  # (proto, port) -> (endpoint, last seen)
    for i, (event, now) in enumerate(zip(events, times)):
        sent = out(result, i)
        live = {key: who for key, (who, last) in owner.items() if now - last <= TIMEOUT}
        if event[0] == "out":
            endpoint = ENDPOINTS[event[1]]
            proto = endpoint[0]
            held = [key for key, who in live.items() if who == endpoint]
            free = [p for p in range(LOW, HIGH + 1) if (proto, p) not in live]
            if not held and not free:
                assert sent == [], "dropped only when every port is live"
                continue
            assert len(sent) == 1
            port = dpkt.ethernet.Ethernet(sent[0]).data.data.sport
            if held:
                assert [(proto, port)] == held, "a live mapping is kept"
            else:
                assert port in free, "a new mapping never takes a live port"
            owner[(proto, port)] = (endpoint, now)
        else:
            proto, public = (6, 17)[event[1] % 2], LOW - 1 + event[1] // 2
            who = live.get((proto, public))
            if who is None:
                assert sent == []
            else:
                ip = dpkt.ethernet.Ethernet(sent[0]).data
                assert (socket.inet_ntoa(ip.dst), ip.data.dport) == who[1:]
                owner[(proto, public)] = (who, now)
    if queues != 1:  # run_direct is sequential: the queue count changes nothing observable
        assert run(packets, port_min=LOW, port_max=HIGH, timeout=TIMEOUT).outputs == result.outputs


# ---- queues ----

def test_replies_land_on_other_queues_and_the_result_does_not_depend_on_queues():
    packets, moved = [], 0
    for i in range(40):
        host, port = f"10.0.{i % 5}.{i}", 30000 + 7 * i
        go = frame(ip_bytes(host, SERVER, l4("tcp", port, 443), 6))
        back = frame(ip_bytes(SERVER, PUBLIC, l4("tcp", 443, 1024 + i, b"r"), 6))
        packets += [pkt(2 * i, go, i), pkt(2 * i + 1, back, i + 0.5)]
        moved += flow_queue(1, go, 4) != flow_queue(1, back, 4)
    assert moved >= 10
    one, four = run(packets), run(packets, queues=4)
    assert four.outputs == one.outputs
    assert var(four, "translated_in") == 40 and var(four, "drops") == {}
    assert [var(four, name) for name in ("ports", "mappings")] == [var(one, name) for name in ("ports", "mappings")]


class FixedClock:
    """A live source for a hand-driven VanillaContext: the clock stands at 5 s."""

    def value(self, kind, *_packet_time):
        return 5 * 10**9


class RacingContext(VanillaContext):
    """Runs ``before_allocation`` just before this context's first pool allocation: another
    queue's packet slipping in between our lookup and our install."""

    def __init__(self, queue, local, live, before_allocation):
        super().__init__(queue, local, live)
        self.before_allocation = before_allocation

    def _access(self, v, op, a, b):
        if op is Map.op_apply and self.before_allocation:
            hook, self.before_allocation = self.before_allocation, None
            hook()
        return super()._access(v, op, a, b)


def test_losing_an_allocation_race_uses_the_winners_port_and_frees_its_own():
    nat, shared = Nat(), SharedState()
    nat.declare(shared)
    live = FixedClock()
    p1 = pkt(1, frame(ip_bytes("10.0.0.5", SERVER, l4("udp", 5000, 53), 17)), 5)
    p2 = pkt(2, frame(ip_bytes("10.0.0.5", "203.0.113.9", l4("udp", 5000, 123), 17)), 5)
    other = VanillaContext(1, nat.new_local_state(), live)

    def racer():
        other.packet, other.outputs = p2, []
        nat.process(other, p2)

    ctx = RacingContext(0, nat.new_local_state(), live, racer)
    ctx.packet, ctx.outputs = p1, []
    nat.process(ctx, p1)
    ports = [dpkt.ethernet.Ethernet(o[1]).data.data.sport for o in other.outputs + ctx.outputs]
    assert ports == [1024, 1024]
    pool = shared.variables[[v.name for v in shared.variables].index("ports")].dump()
    assert sorted(k for k in pool if isinstance(k[0], int)) == [(17, 1024)]  # 1025 given back
    assert pool[("cursor", 17)] == 1026


# ---- what is not ours, and what is broken ----

def test_frames_that_do_not_cross_pass_unchanged():
    arp = MAC_B + MAC_A + b"\x08\x06" + bytes(28)
    v6 = dpkt.ip6.IP6(src=b"\x20" + bytes(15), dst=b"\x20" + bytes(14) + b"\x01", nxt=17, hlim=64,
                      data=l4("udp", 1, 2))
    v6.plen = len(v6.data)
    ipv6 = MAC_B + MAC_A + b"\x86\xdd" + bytes(v6)
    inside = frame(ip_bytes("10.0.0.1", "192.168.1.1", l4("tcp", 1, 2), 6))
    outside = frame(ip_bytes(SERVER, "203.0.113.5", l4("tcp", 1, 2), 6))
    mcast = frame(ip_bytes("10.0.0.1", "224.0.0.251", l4("udp", 5353, 5353), 17))
    frag_inside = bytearray(ip_bytes("10.0.0.1", "10.0.0.2", l4("udp", 1, 2), 17))
    frag_inside[6] |= 0x20  # more fragments
    frames = [arp, ipv6, inside, outside, mcast, frame(bytes(frag_inside)), b"\x00" * 5]
    result = run([pkt(i, f) for i, f in enumerate(frames)], queues=2)
    for i, f in enumerate(frames):
        assert out(result, i) == [f]
    passed = [local["passed"] for local in result.local]
    assert {k: sum(p[k] for p in passed) for k in passed[0]} == {
        "non_ip": 2, "ipv6": 1, "inside": 2, "outside": 1, "multicast": 1}
    assert var(result, "drops") == {}


def test_frames_crossing_that_cannot_be_translated_are_dropped_by_reason():
    frag = bytearray(ip_bytes("10.0.0.1", SERVER, l4("udp", 1, 2, b"x" * 16), 17))
    frag[6:8] = b"\x00\x02"  # offset 16 bytes: a non-first fragment
    first = bytearray(ip_bytes("10.0.0.1", SERVER, l4("udp", 1, 2, b"x" * 16), 17))
    first[6] |= 0x20
    unreachable = dpkt.icmp.ICMP(type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=bytes(28)))
    gre = ip_bytes("10.0.0.1", SERVER, b"\x00\x00\x08\x00" + bytes(20), 47)
    hairpin = ip_bytes("10.0.0.1", PUBLIC, l4("tcp", 1, 2), 6)
    ping_reply_out = ip_bytes("10.0.0.1", SERVER, echo(0, 9), 1)
    frames = [bytes(frag), bytes(first), ip_bytes("10.0.0.1", SERVER, unreachable, 1), gre, hairpin, ping_reply_out]
    result = run([pkt(i, frame(f)) for i, f in enumerate(frames)])
    assert all(out(result, i) == [] for i in range(len(frames)))
    assert var(result, "drops") == {"fragment": 2, "icmp_type": 2, "protocol": 1, "hairpin": 1}


def malformed_frames():
    good = ip_bytes("10.0.0.1", SERVER, l4("tcp", 1234, 80, b"payload"), 6)
    def patched(at, value):
        raw = bytearray(good)
        raw[at] = value
        return bytes(raw)
    def total(n):
        return good[:2] + struct.pack("!H", n) + good[4:]
    return {
        "ethertype ipv4, nothing after": b"",
        "truncated ip header": good[:12],
        "ihl 4": patched(0, 0x44),
        "ihl 15, header cut": patched(0, 0x4F),
        "version 5": patched(0, 0x55),
        "truncated tcp header": good[:20 + 12],
        "total length below ihl": total(16),
        "total length cuts tcp header": total(30),
        "truncated udp header": ip_bytes("10.0.0.1", SERVER, l4("udp", 1, 2), 17)[:25],
        "truncated icmp header": ip_bytes("10.0.0.1", SERVER, echo(8, 3), 1)[:24],
        "truncated reply": ip_bytes(SERVER, PUBLIC, l4("tcp", 80, 1024), 6)[:30],
    }


@pytest.mark.parametrize("link", ["eth", "raw", "sll"])
def test_malformed_frames_are_dropped_and_counted_never_raised(link):
    frames = malformed_frames()
    result = run([pkt(i, frame(f, link), link=link) for i, f in enumerate(frames.values())], queues=3)
    for i, name in enumerate(frames):
        assert out(result, i) == [], name
    assert var(result, "drops") == {"malformed": len(frames)}


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=80), link=st.sampled_from(sorted(LINKS)), mask=st.integers(0, 3))
def test_arbitrary_bytes_never_raise(raw, link, mask):
    """Random bytes behind each link header, half of them dressed as IPv4 with an inside or outside source."""
    if mask & 1 and raw:
        raw = bytes([0x45]) + raw[1:]
    if mask & 2 and len(raw) >= 20:
        raw = raw[:12] + socket.inet_aton("10.9.8.7") + raw[16:]
    result = run([pkt(0, frame(raw, link), link=link), pkt(1, raw, link="raw")])
    assert len(result.outputs) == 2


# ---- options, state, real captures ----

def test_options_are_parsed_and_checked():
    nat = build_middlebox("nat", ["inside=10.1.0.0/16, 192.168.5.7/24", "public_ip=203.0.113.200",
                                  "port_min=5000", "port_max=5009", "timeout=30", "new_tcp=ANY"])
    assert nat.opts == {"inside": "10.1.0.0/16,192.168.5.0/24", "public_ip": "203.0.113.200",
                        "port_min": 5000, "port_max": 5009, "timeout": 30.0, "new_tcp": "any"}
    for bad in (["public_ip=10.0.0.1"], ["port_min=9", "port_max=8"], ["inside=nope"], ["port_max=70000"],
                ["timeout=0"], ["timeout=nan"], ["inside=2001:db8::/32"], ["new_tcp=fin"], ["colour=red"]):
        with pytest.raises(UsageError):
            build_middlebox("nat", bad)
    with pytest.raises(UsageError):
        Nat(inside="")


def test_state_is_codec_encodable_and_deterministic():
    packets = [pkt(i, frame(ip_bytes(f"10.0.0.{i % 7}", SERVER, l4("udp", 1000 + i, 53), 17)), i) for i in range(30)]
    a, b = run(packets, queues=4), run(packets, queues=4)
    assert a.shared.dump() == b.shared.dump() and a.local == b.local
    assert codec.decode(codec.encode(a.shared.dump())) == a.shared.dump()
    assert codec.decode(codec.encode(a.local)) == a.local


def real_capture(name, limit):
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    try:
        from ftmbctl.pcapio import iter_packets
        raw = [(p.ts_ns, p.linktype, p.data) for p in itertools.islice(iter_packets(path), limit)]
    except ImportError:
        with open(path, "rb") as f:
            reader = dpkt.pcap.Reader(f)
            raw = [(int(ts * 1e9), reader.datalink() & 0xFFFF, bytes(buf))
                   for ts, buf in itertools.islice(reader, limit)]
    return [Packet(i, ts, lt, data) for i, (ts, lt, data) in enumerate(raw)]


def residuals(ip_raw: bytes) -> tuple[int, int]:
    """How far the IP header and TCP/UDP checksums are from verifying (0, 0 when both are right)."""
    ihl, total, proto = (ip_raw[0] & 15) * 4, struct.unpack_from("!H", ip_raw, 2)[0], ip_raw[9]
    segment = ip_raw[ihl:total]
    pseudo = ip_raw[12:20] + struct.pack("!BBH", 0, proto, len(segment)) if proto in (6, 17) else b""
    return internet_checksum(ip_raw[:ihl]), internet_checksum(pseudo + segment)


@pytest.mark.parametrize("name, inside, limit", [
    ("chrissanders-packets/evilprogram.pcap", "24.6.125.19/32", 3000),  # checksums right
    ("chrissanders-packets/ftp-crack.pcap", "10.234.125.254/32", 3000),  # every TCP checksum wrong
])
def test_real_capture_translates_and_keeps_checksums_as_right_as_they_were(name, inside, limit):
    packets = real_capture(name, limit)
    result = run(packets, queues=4, inside=inside)
    translated = var(result, "translated_out")
    assert translated > 100 and var(result, "translated_in") > 100
    checked = valid = 0
    for p in packets:
        sent = out(result, p.id)
        if not sent or sent[0] == p.data:
            continue
        before, after = dpkt.ethernet.Ethernet(p.data).data, dpkt.ethernet.Ethernet(sent[0]).data
        assert socket.inet_ntoa(after.src) == PUBLIC
        assert residuals(p.data[14:]) == residuals(sent[0][14:])
        checked += 1
        if checksums_valid(before):
            assert checksums_valid(after)
            valid += 1
    assert checked == translated  # the replies in these captures come addressed to the inside host: unchanged
    assert valid == (checked if "evil" in name else 0)


def test_bundled_trace_drops_exactly_what_outside_hosts_opened():
    """traces/mixed.pcap (see its README): remote clients in 192.0.2.0/24 open connections and
    pings towards the inside; everything else is opened from the inside and must get through."""
    path = Path(__file__).resolve().parents[1] / "traces" / "mixed.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    from ftmbctl.pcapio import iter_packets
    packets = [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in iter_packets(path)]
    result = run(packets, queues=4)
    assert result.outputs == run(packets).outputs
    remote = socket.inet_aton("192.0.2.0")[:3]
    dropped = rewritten = 0
    for p in packets:
        sent = out(result, p.id)
        ip = dpkt.ethernet.Ethernet(p.data).data
        if not isinstance(ip, dpkt.ip.IP):  # ARP, IPv6
            assert sent == [p.data]
        elif not sent:
            assert remote in (ip.src[:3], ip.dst[:3]), p.id
            dropped += 1
        elif sent[0] != p.data:
            assert socket.inet_ntoa(dpkt.ethernet.Ethernet(sent[0]).data.src) == PUBLIC
            assert checksums_valid(dpkt.ethernet.Ethernet(sent[0]).data)
            rewritten += 1
        else:
            assert remote not in (ip.src[:3], ip.dst[:3]), p.id
    assert dropped > 50 and rewritten > 1000
    assert rewritten == var(result, "translated_out")


def test_every_shared_capture_runs_without_raising():
    if not PCAPS.exists():
        pytest.skip(f"{PCAPS} is not here")
    from ftmbctl.errors import BadInput
    from ftmbctl.pcapio import iter_packets
    ran = 0
    for path in sorted(PCAPS.rglob("*.pcap*")):
        packets = []
        try:
            for p in itertools.islice(iter_packets(path), 1500):
                packets.append(Packet(p.index, p.ts_ns, p.linktype, p.data))
        except BadInput:
            pass  # a damaged file: run what could be read
        result = run(packets, queues=2, inside="10.0.0.0/8,192.168.0.0/16,24.6.125.19/32")
        assert sorted(result.outputs) == [p.id for p in packets]
        ran += len(packets)
    assert ran > 5000
