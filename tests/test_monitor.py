"""The built-in monitor: every frame leaves exactly as it came, and the counts are right."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftmbctl import codec
from ftmbctl.direct import run_direct
from ftmbctl.errors import UsageError
from ftmbctl.middlebox import Packet, build_middlebox
from ftmbctl.middleboxes.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT.parent / "shared" / "pcaps"
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
V6_A, V6_B = "2001:db8::1", "2001:db8::2"


def eth(payload, ethertype=0x0800):
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + payload


def ip4(src, dst, proto, seg):
    return bytes(dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=seg))


def ip6(src, dst, nxt, seg):
    packet = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
                          nxt=nxt, hlim=64, data=seg)
    packet.plen = len(bytes(seg))
    return bytes(packet)


def tcp(sport, dport, payload=b""):
    return dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_ACK, data=payload)


def run(frames, queues=1, **opts):
    packets = [Packet(i, i * 1000, linktype, data) for i, (linktype, data) in enumerate(frames)]
    return run_direct(Monitor(**opts), packets, queues=queues)


def var(result, name):
    return next(v.dump() for v in result.shared.variables if v.name == name)


def flows(result):
    merged = {}
    for local in result.local:
        for key, counts in local["flows"].items():
            assert key not in merged, "both directions of a flow stay on one queue"
            merged[key] = tuple(counts)
    return merged


def handmade():
    """(name, linktype, frame) for one frame of every kind the monitor tells apart."""
    echo = lambda t: dpkt.icmp.ICMP(type=t, data=dpkt.icmp.ICMP.Echo(id=77, seq=1, data=b"x"))  # noqa: E731
    echo6 = dpkt.icmp6.ICMP6(type=128, data=dpkt.icmp6.ICMP6.Echo(id=5, seq=1, data=b"y"))
    return [
        ("tcp out", 1, eth(ip4("10.0.0.1", "93.184.216.34", 6, tcp(40000, 443, b"hello")))),
        ("tcp back", 1, eth(ip4("93.184.216.34", "10.0.0.1", 6, tcp(443, 40000, b"world!")))),
        ("tcp raw", 101, ip4("10.0.0.1", "93.184.216.34", 6, tcp(40000, 443))),
        ("udp vlan", 1, MAC_B + MAC_A + b"\x81\x00\x00\x07" + b"\x08\x00"
         + ip4("10.0.0.2", "198.51.100.53", 17, dpkt.udp.UDP(sport=5353, dport=53, data=b"q"))),
        ("ping", 1, eth(ip4("10.0.0.3", "203.0.113.9", 1, echo(8)))),
        ("pong", 1, eth(ip4("203.0.113.9", "10.0.0.3", 1, echo(0)))),
        ("ping6", 1, eth(ip6(V6_A, V6_B, 58, echo6), 0x86DD)),
        ("tcp6 sll", 113,
         struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\x00\x00", 0x86DD) + ip6(V6_B, V6_A, 6, tcp(443, 1234))),
        ("gre", 1, eth(ip4("10.0.0.4", "203.0.113.10", 47, b"\x00\x00\x08\x00" + bytes(8)))),
        ("arp", 1, eth(bytes(28), 0x0806)),
        ("runt", 1, b"\x01\x02\x03"),
        ("bad ihl", 1, eth(b"\x44" + bytes(30))),
        ("version 0", 1, eth(b"\x05" + bytes(60), 0x86DD)),
    ]


def test_counts_per_protocol_and_per_flow():
    frames = handmade()
    size = {name: len(data) for name, _lt, data in frames}
    result = run([(lt, data) for _name, lt, data in frames], queues=3)
    def total(*names):
        return (len(names), sum(size[n] for n in names))
    assert var(result, "protocols") == {
        "tcp": total("tcp out", "tcp back", "tcp raw", "tcp6 sll"),
        "udp": total("udp vlan"),
        "icmp": total("ping", "pong"),
        "icmpv6": total("ping6"),
        "other-ip": total("gre"),
        "non-ip": total("arp", "runt"),
        "malformed": total("bad ihl", "version 0"),
    }
    assert flows(result) == {
        (6, "10.0.0.1", 40000, "93.184.216.34", 443): total("tcp out", "tcp back", "tcp raw"),
        (17, "10.0.0.2", 5353, "198.51.100.53", 53): total("udp vlan"),
        (1, "10.0.0.3", 77, "203.0.113.9", 77): total("ping", "pong"),
        (58, V6_A, 5, V6_B, 5): total("ping6"),
        (6, V6_A, 1234, V6_B, 443): total("tcp6 sll"),
        (47, "10.0.0.4", 0, "203.0.113.10", 0): total("gre"),
    }
    assert var(result, "talkers") == {
        "10.0.0.1": (size["tcp out"] + size["tcp raw"], 2, 0), "93.184.216.34": (size["tcp back"], 1, 0),
        "10.0.0.2": (size["udp vlan"], 1, 0), "10.0.0.3": (size["ping"], 1, 0), "203.0.113.9": (size["pong"], 1, 0),
        V6_A: (size["ping6"], 1, 0), V6_B: (size["tcp6 sll"], 1, 0), "10.0.0.4": (size["gre"], 1, 0),
    }


def test_outputs_are_the_inputs_byte_for_byte():
    frames = [(lt, data) for _name, lt, data in handmade()]
    result = run(frames, queues=2)
    assert [result.outputs[i] for i in range(len(frames))] == [[frame] for frame in frames]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=90), linktype=st.sampled_from([0, 1, 101, 113, 229, 276, 147]),
       dress=st.sampled_from([b"", b"\x45", b"\x60", b"\x4f"]))
def test_arbitrary_bytes_pass_through_and_never_raise(raw, linktype, dress):
    data = dress + raw[len(dress):]
    result = run([(linktype, data)])
    assert result.outputs[0] == [(linktype, data)]
    assert sum(p for p, _b in var(result, "protocols").values()) == 1


def sized(src, length):
    """A raw-IPv4 UDP frame from ``src`` of exactly ``length`` bytes (length >= 28)."""
    return (101, ip4(src, "203.0.113.1", 17, dpkt.udp.UDP(sport=1, dport=2, data=bytes(length - 28))))


def test_top_talkers_evict_the_smallest_ties_by_address_and_newcomers_inherit():
    frames = [sized("10.0.0.4", 100), sized("10.0.0.2", 100), sized("10.0.0.3", 100), sized("10.0.0.1", 300),
              sized("10.0.0.9", 50),  # table full (top_n=1: 4 entries): the smallest, 10.0.0.2 (tie), goes
              sized("10.0.0.8", 40)]  # then 10.0.0.3 (100, tie with .4 broken by address)
    result = run(frames, top_n=1)
    assert var(result, "talkers") == {
        "10.0.0.4": (100, 1, 0), "10.0.0.1": (300, 1, 0), "10.0.0.9": (150, 1, 100), "10.0.0.8": (140, 1, 100)}
    monitor = Monitor(top_n=1)
    assert monitor.top(var(result, "talkers")) == [("10.0.0.1", 300, 1, 0)]


def test_a_late_heavy_talker_still_reaches_the_top():
    frames = [sized(f"10.1.{i // 250}.{i % 250}", 60 + i % 7) for i in range(300)]
    frames += [sized("192.0.2.99", 1400)] * 20 + [sized("192.0.2.98", 900)] * 10
    result = run(frames, top_n=2)
    talkers = var(result, "talkers")
    assert len(talkers) == 8
    top = Monitor(top_n=2).top(talkers)
    assert [row[0] for row in top] == ["192.0.2.99", "192.0.2.98"]
    assert top[0][1] - top[0][3] <= 28000 <= top[0][1]  # lower and upper bound of the truth


def test_queues_change_nothing_that_is_counted():
    frames = [(lt, data) for _name, lt, data in handmade()] * 3
    one, four = run(frames), run(frames, queues=4)
    for name in ("protocols", "talkers"):
        assert var(one, name) == var(four, name)
    assert flows(one) == flows(four)
    assert four.outputs == one.outputs


def test_options_and_state():
    assert build_middlebox("monitor", ["top_n=3"]).opts == {"top_n": 3}
    for bad in (["top_n=0"], ["top_n=x"], ["colour=red"]):
        with pytest.raises(UsageError):
            build_middlebox("monitor", bad)
    result = run([(lt, data) for _name, lt, data in handmade()], queues=2)
    assert codec.decode(codec.encode(result.local)) == result.local
    assert codec.decode(codec.encode(result.shared.dump())) == result.shared.dump()


def capture(name, limit=3000):
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    from ftmbctl.pcapio import iter_packets
    return [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in itertools.islice(iter_packets(path), limit)]


def test_real_capture_passes_unchanged_and_adds_up():
    packets = capture("chrissanders-packets/evilprogram.pcap")
    result = run_direct(Monitor(), packets, queues=4)
    assert [result.outputs[p.id] for p in packets] == [[(p.linktype, p.data)] for p in packets]
    protocols = var(result, "protocols")
    assert sum(n for n, _b in protocols.values()) == len(packets)
    assert sum(b for _n, b in protocols.values()) == sum(len(p.data) for p in packets)
    assert protocols["non-ip"][0] == 39 and protocols["icmp"][0] == 18 and protocols["udp"][0] == 36
    ip_flows = flows(result)
    assert sum(n for n, _b in ip_flows.values()) == len(packets) - 39
    truth: dict[str, int] = {}  # bytes per source, counted with dpkt
    for p in packets:
        ip = dpkt.ethernet.Ethernet(p.data).data
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            src = socket.inet_ntop(socket.AF_INET if len(ip.src) == 4 else socket.AF_INET6, ip.src)
            truth[src] = truth.get(src, 0) + len(p.data)
    assert len(truth) > 40  # more sources than the table holds: eviction happened
    ranked = sorted(truth.items(), key=lambda item: (-item[1], item[0]))
    top = Monitor(top_n=3).top(var(result, "talkers"))
    assert [(addr, b, over) for addr, b, _p, over in top] == [(addr, b, 0) for addr, b in ranked[:3]]


_HASHSEED_SCRIPT = """
import itertools, sys
from ftmbctl.direct import run_direct
from ftmbctl.middlebox import Packet
from ftmbctl.middleboxes.monitor import Monitor
from ftmbctl.pcapio import iter_packets
packets = [Packet(p.index, p.ts_ns, p.linktype, p.data) for p in itertools.islice(iter_packets(sys.argv[1]), 2000)]
result = run_direct(Monitor(top_n=2), packets, queues=3)
print(repr(result.shared.dump()), repr([sorted(l["flows"].items()) for l in result.local]))
"""


def test_state_does_not_depend_on_the_hash_seed():
    path = PCAPS / "chrissanders-packets/evilprogram.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    outputs = []
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-c", _HASHSEED_SCRIPT, str(path)], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and "talkers" in outputs[0]


def test_every_shared_capture_passes_unchanged():
    if not PCAPS.exists():
        pytest.skip(f"{PCAPS} is not here")
    from ftmbctl.errors import BadInput
    from ftmbctl.pcapio import iter_packets
    seen = 0
    for path in sorted(PCAPS.rglob("*.pcap*")):
        packets = []
        try:
            for p in itertools.islice(iter_packets(path), 1500):
                packets.append(Packet(p.index, p.ts_ns, p.linktype, p.data))
        except BadInput:
            pass  # a damaged file: run what could be read
        result = run_direct(Monitor(), packets, queues=2)
        assert [result.outputs[p.id] for p in packets] == [[(p.linktype, p.data)] for p in packets]
        seen += len(packets)
    assert seen > 5000
