"""The bundled traces are reproducible and hold what traces/README.md claims.

The README's commands are re-run into a tmp dir and must give byte-identical files;
its table of counts, sizes and sha256s is recomputed from the committed pcaps by
parsing them back with dpkt; every checksum must verify and every TCP connection
must be well-formed (exact seq/ack, both directions, cleanly closed).
"""
import hashlib
import shlex
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dpkt
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "traces"
README = TRACES / "README.md"
TRACE_NAMES = ["mixed.pcap", "small.pcap"]
START_2026 = 1767225600  # 2026-01-01T00:00:00Z
PRIVATE = ("10.", "192.168.")
U32 = 1 << 32


def readme_commands():
    """{pcap name: argv} for every `python traces/make_trace.py ...` line of the README."""
    cmds = {}
    for line in README.read_text().splitlines():
        if line.startswith("python traces/make_trace.py "):
            argv = shlex.split(line)[2:]
            cmds[Path(argv[argv.index("--out") + 1]).name] = argv
    return cmds


def readme_table():
    """{pcap name: {row label: cell}} from the README table whose header names the pcaps."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("|")]
    split = [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in rows]
    header = next(r for r in split if all(n in r for n in TRACE_NAMES))
    start = split.index(header)
    table = {name: {} for name in TRACE_NAMES}
    for r in split[start + 2:]:
        if r[0] in ("", "---") or set(r[0]) <= set("-:"):
            break
        for name in TRACE_NAMES:
            table[name][r[0]] = r[header.index(name)]
    return table


def read_pcap(path):
    data = path.read_bytes()
    magic, vmaj, vmin, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, vmaj, vmin, linktype) == (0xA1B2C3D4, 2, 4, 1)
    off, out = 24, []
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig and usec < 10**6
        out.append((sec * 10**6 + usec, data[off + 16: off + 16 + incl]))
        off += 16 + incl
    assert off == len(data)
    return out


def l4_checksum_ok(src, dst, proto, seg):
    if len(src) == 4:
        pseudo = struct.pack("!4s4sxBH", src, dst, proto, len(seg))
    else:
        pseudo = struct.pack("!16s16sxBH", src, dst, proto, len(seg))
    return dpkt.in_cksum(pseudo + seg) == 0


def check_frame(frame):
    """Assert every checksum in the frame; return (protocol label, dpkt Ethernet)."""
    eth = dpkt.ethernet.Ethernet(frame)
    if eth.type == dpkt.ethernet.ETH_TYPE_ARP:
        return "arp", eth
    ip = eth.data
    if eth.type == dpkt.ethernet.ETH_TYPE_IP:
        hl = ip.hl * 4
        assert dpkt.in_cksum(frame[14:14 + hl]) == 0, "IPv4 header checksum"
        assert ip.len == len(frame) - 14
        seg, label = frame[14 + hl:14 + ip.len], {6: "tcp", 17: "udp", 1: "icmp"}[ip.p]
        if ip.p == 1:
            assert dpkt.in_cksum(seg) == 0, "ICMP checksum"
            return label, eth
    else:
        assert eth.type == dpkt.ethernet.ETH_TYPE_IP6 and ip.nxt in (6, 17)
        assert ip.plen == len(frame) - 54
        seg, label = frame[54:], "ipv6"
    proto = ip.p if eth.type == dpkt.ethernet.ETH_TYPE_IP else ip.nxt
    assert l4_checksum_ok(ip.src, ip.dst, proto, seg), f"{label} L4 checksum"
    if proto == 17:
        assert ip.data.sum != 0 and ip.data.ulen == len(seg)
    return label, eth


def addr(raw):
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class TcpTracker:
    """Follows each TCP connection (a new one per SYN) and checks seq/ack exactly."""

    def __init__(self):
        self.open, self.done = {}, []

    def packet(self, ts, ip, tcp):
        key = (addr(ip.src), tcp.sport, addr(ip.dst), tcp.dport)
        rkey = key[2:] + key[:2]
        if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
            assert key not in self.open and rkey not in self.open, f"SYN on a live 4-tuple {key}"
            self.open[key] = {"client": key, "nxt": {}, "acked": {}, "pkts": Counter(), "fin": set(),
                              "synack": False, "end": None, "start": ts, "data": 0}
        conn_key = key if key in self.open else rkey
        c = self.open[conn_key]
        me, peer = ("c", "s") if key == c["client"] else ("s", "c")
        c["pkts"][me] += 1
        refusal = tcp.flags & dpkt.tcp.TH_RST and not c["synack"] and me == "s"
        if me in c["nxt"] and not refusal:
            assert tcp.seq == c["nxt"][me], f"seq gap in {conn_key}"
        if tcp.flags & dpkt.tcp.TH_ACK:
            assert peer in c["nxt"]
            assert (c["nxt"][peer] - tcp.ack) % U32 < U32 // 2, "ACK of unsent data"
            assert (tcp.ack - c["acked"].get(me, tcp.ack)) % U32 < U32 // 2, "ACK went backwards"
            c["acked"][me] = tcp.ack
        syn_fin = bool(tcp.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN))
        c["nxt"][me] = (tcp.seq + len(tcp.data) + syn_fin) % U32
        c["data"] += len(tcp.data)
        c["synack"] |= bool(tcp.flags & dpkt.tcp.TH_SYN and tcp.flags & dpkt.tcp.TH_ACK)
        if tcp.flags & dpkt.tcp.TH_FIN:
            c["fin"].add(me)
        if tcp.flags & dpkt.tcp.TH_RST:
            c["end"] = "refused" if refusal else "rst"
        elif c["fin"] == {"c", "s"} and not tcp.flags & dpkt.tcp.TH_FIN:
            assert tcp.ack == c["nxt"][peer], "last ACK must cover the FIN"
            c["end"] = "fin"
        if c["end"]:
            c["stop"] = ts
            self.done.append(self.open.pop(conn_key))


def analyze(path):
    """The README's table rows, recomputed from a pcap (asserting well-formedness on the way)."""
    pkts = read_pcap(path)
    stats, tcp = Counter(), TcpTracker()
    dns_q, echo_q, mac_of, last_ts = {}, {}, {}, -1
    inside, outside = set(), set()
    for ts, frame in pkts:
        assert ts > last_ts, "timestamps must increase strictly"
        last_ts = ts
        label, eth = check_frame(frame)
        stats[label] += 1
        if label == "arp":
            continue
        ip = eth.data
        assert mac_of.setdefault(ip.src, eth.src) == eth.src, "one MAC per host"
        if label != "ipv6":
            for a in (addr(ip.src), addr(ip.dst)):
                (inside if a.startswith(PRIVATE) else outside).add(a)
        l4 = ip.data
        if isinstance(l4, dpkt.tcp.TCP):
            tcp.packet(ts, ip, l4)
        elif isinstance(l4, dpkt.udp.UDP):
            msg = dpkt.dns.DNS(l4.data)
            if msg.qr == dpkt.dns.DNS_Q:
                dns_q[(ip.src, l4.sport, msg.id)] = False
            else:
                key = (ip.dst, l4.dport, msg.id)
                assert dns_q[key] is False and msg.qd[0].name
                dns_q[key] = True
        elif l4.type == dpkt.icmp.ICMP_ECHO:
            echo_q[(ip.src, ip.dst, l4.echo.id, l4.echo.seq)] = False
        else:
            assert l4.type == dpkt.icmp.ICMP_ECHOREPLY
            key = (ip.dst, ip.src, l4.echo.id, l4.echo.seq)
            assert echo_q[key] is False
            echo_q[key] = True
    assert not tcp.open, f"unfinished TCP connections: {list(tcp.open)}"
    conns = tcp.done
    for c in conns:
        assert c["pkts"]["c"] and c["pkts"]["s"], "both directions of every connection"
    ends = Counter(c["end"] for c in conns)
    edges = sorted([(c["start"], 1) for c in conns] + [(c["stop"], -1) for c in conns])
    running = [0]
    for _, d in edges:
        running.append(running[-1] + d)
    data = path.read_bytes()
    return {
        "packets": len(pkts),
        "IPv4 TCP packets": stats["tcp"],
        "IPv4 UDP (DNS) packets": stats["udp"],
        "IPv4 ICMP packets": stats["icmp"],
        "IPv6 (TCP+UDP) packets": stats["ipv6"],
        "ARP frames": stats["arp"],
        "TCP connections": len(conns),
        "... opened from outside": sum(not c["client"][0].startswith(PRIVATE) and ":" not in c["client"][0]
                                       for c in conns),
        "... refused (SYN, RST)": ends["refused"],
        "... closed by FIN": ends["fin"],
        "... reset after data": ends["rst"],
        "max concurrent TCP connections": max(running),
        "DNS queries": len(dns_q),
        "DNS queries unanswered": sum(not v for v in dns_q.values()),
        "ICMP echo requests": len(echo_q),
        "ICMP echo requests unanswered": sum(not v for v in echo_q.values()),
        "inside IPv4 hosts": len(inside),
        "outside IPv4 hosts": len(outside),
        "duration (s)": f"{(pkts[-1][0] - pkts[0][0]) / 1e6:.3f}",
        "file size (bytes)": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


_analyzed = {}


def analyzed(name):
    if name not in _analyzed:
        _analyzed[name] = {k: str(v) for k, v in analyze(TRACES / name).items()}
    return _analyzed[name]


def run_script(argv, cwd):
    proc = subprocess.run([sys.executable, str(TRACES / "make_trace.py"), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, "only one summary line on stderr"
    return lines[0]


def test_readme_commands():
    cmds = readme_commands()
    assert sorted(cmds) == sorted(TRACE_NAMES)
    assert cmds["mixed.pcap"] == ["--seed", "1", "--packets", "3000", "--out", "traces/mixed.pcap"]
    assert cmds["small.pcap"] == ["--seed", "2", "--packets", "300", "--out", "traces/small.pcap"]


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_rerun_gives_identical_bytes(name, tmp_path):
    argv = readme_commands()[name]
    argv[argv.index("--out") + 1] = str(tmp_path / name)
    summary = run_script(argv, cwd=tmp_path)  # nothing depends on the working directory
    assert (tmp_path / name).read_bytes() == (TRACES / name).read_bytes()
    counts = dict(item.split("=") for item in summary.split(": ")[-1].split())
    table = readme_table()[name]
    assert counts == {"tcp": table["IPv4 TCP packets"], "udp": table["IPv4 UDP (DNS) packets"],
                      "icmp": table["IPv4 ICMP packets"], "ipv6": table["IPv6 (TCP+UDP) packets"],
                      "arp": table["ARP frames"]}


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_readme_table_matches_trace(name):
    """Counts, checksums, seq/ack, timestamps: analyze() asserts, the table must agree."""
    assert analyzed(name) == readme_table()[name]


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_trace_shape(name):
    stats, pkts = analyzed(name), read_pcap(TRACES / name)
    assert pkts[0][0] // 10**6 == START_2026  # fixed start: 2026-01-01T00:00:00Z
    tcp, total = int(stats["IPv4 TCP packets"]), int(stats["packets"])
    assert tcp > total / 2, "TCP is the majority"
    for row in ("IPv4 UDP (DNS) packets", "IPv4 ICMP packets", "IPv6 (TCP+UDP) packets", "ARP frames",
                "... refused (SYN, RST)", "... closed by FIN", "DNS queries unanswered"):
        assert int(stats[row]) > 0, row
    assert int(stats["IPv6 (TCP+UDP) packets"]) < total / 10, "IPv6 is a small share"
    assert max(len(f) for _, f in pkts) == 1514, "some segments fill the MTU"


def test_mixed_has_everything():
    stats = analyzed("mixed.pcap")
    for row in ("... opened from outside", "... reset after data", "ICMP echo requests unanswered"):
        assert int(stats[row]) > 0, row
    assert int(stats["max concurrent TCP connections"]) >= 10
    assert int(stats["inside IPv4 hosts"]) >= 24 and int(stats["outside IPv4 hosts"]) >= 12


def test_seed_matters(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    run_script(["--seed", "3", "--packets", "40", "--out", str(a)], cwd=tmp_path)
    run_script(["--seed", "4", "--packets", "40", "--out", str(b)], cwd=tmp_path)
    assert a.read_bytes() != b.read_bytes()
    assert len(read_pcap(a)) == len(read_pcap(b)) == 40
    analyze(a), analyze(b)
