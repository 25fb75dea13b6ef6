#!/usr/bin/env python3
"""Synthesize a deterministic mixed-traffic pcap from a seed.

Why this exists: ``traces/mixed.pcap`` (made by this script) is the bundled sample
trace that ``ftmbctl demo`` and the benchmarks push through the middleboxes (NAT,
monitor, firewall, ...) while recording, crashing and replaying them. Real captures
cannot be shipped and cannot be rebuilt byte for byte, so we synthesize one: an
inside network (RFC 1918) talking to outside hosts (documentation ranges) with many
interleaved TCP connections (handshake, data with exact seq/ack, FIN or RST close,
refused and unsolicited inbound connections), DNS over UDP, ICMP echo, ARP and a
little IPv6 -- enough that every middlebox builds real per-flow state.

The output depends only on the arguments: randomness comes from random.Random(seed)
and the clock starts at 2026-01-01T00:00:00Z. Every generated conversation is
complete; the packet budget is met exactly by dropping the last-started
conversations and filling the gap with small complete ones.
"""
import argparse
import calendar
import random
import socket
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field

import dpkt
from dpkt.tcp import TH_ACK, TH_FIN, TH_PUSH, TH_RST, TH_SYN

START_US = calendar.timegm((2026, 1, 1, 0, 0, 0)) * 1_000_000
BROADCAST = b"\xff" * 6
NAMES = ["www.example.com", "api.example.com", "cdn.example.net", "static.example.net",
         "mail.example.org", "updates.example.org", "news.example.com", "video.example.net",
         "git.example.org", "shop.example.com", "maps.example.net", "chat.example.org",
         "files.example.com", "status.example.net"]
OUTSIDE_NETS = ["93.184.216", "198.51.100", "203.0.113"]
FLOW_KINDS = {"web": 34, "refused": 3, "inbound": 5, "dns": 16, "ping": 7, "arp": 4, "v6": 2}


@dataclass
class Host:
    ip: str
    mac: bytes
    rtt: int  # µs from the capture point (the NAT) to this host and back
    ttl: int = 64
    next_port: int = 0
    port_free_at: dict = field(default_factory=dict)  # client port -> µs its last flow ended
    reusable: dict = field(default_factory=dict)  # --reuse-ports: protocol -> {port or echo id: µs free at}


@dataclass
class Side:
    host: Host
    port: int
    seq: int
    ipid: int
    win: int


class Flow:
    """One conversation: (µs offset, frame) pairs in causal order."""

    def __init__(self, t):
        self.t, self.pkts = t, []

    def add(self, gap, frame):
        self.t += max(1, int(gap))
        self.pkts.append((self.t, frame))


def ip_frame(src, dst, proto, l4, ipid):
    """Ethernet + IPv4/IPv6 around a dpkt L4 object; dpkt fills in lengths and checksums."""
    if ":" in src.ip:
        pton = lambda a: socket.inet_pton(socket.AF_INET6, a)  # noqa: E731
        ip = dpkt.ip6.IP6(src=pton(src.ip), dst=pton(dst.ip), nxt=proto, hlim=64,
                          plen=len(l4), data=l4)
        raw = bytes(ip)
        if proto == 17 and l4.sum == 0:  # UDP over IPv6 may not send a zero checksum
            l4.sum = 0xFFFF
            raw = bytes(ip)
        eth_type = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(src.ip), dst=socket.inet_aton(dst.ip), p=proto,
                        ttl=src.ttl, id=ipid & 0xFFFF, data=l4)
        ip.df = int(proto == 6)
        raw, eth_type = bytes(ip), dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=src.mac, dst=dst.mac, type=eth_type, data=raw))


class TcpConn:
    """Both ends of one TCP connection; send() keeps seq/ack exact."""

    def __init__(self, rng, flow, cli, cport, srv, sport):
        self.rng, self.flow = rng, flow
        self.mss = 1440 if ":" in cli.ip else 1460
        wins = [502, 501, 1026, 29200, 64240, 65535]
        self.side = {True: Side(cli, cport, rng.getrandbits(32), rng.getrandbits(16), rng.choice(wins)),
                     False: Side(srv, sport, rng.getrandbits(32), rng.getrandbits(16), rng.choice(wins))}

    def delay(self, to_cli):
        """Gap between a packet passing the capture point and the reaction of its receiver."""
        return self.side[to_cli].host.rtt + self.rng.randint(20, 400)

    def send(self, from_cli, flags, payload=b"", gap=0, opts=b"", ack=None):
        a, b = self.side[from_cli], self.side[not from_cli]
        if ack is None:
            ack = b.seq if flags & TH_ACK else 0
        seg = dpkt.tcp.TCP(sport=a.port, dport=b.port, seq=a.seq, ack=ack, flags=flags,
                           win=64240 if flags & TH_SYN else a.win, off=5 + len(opts) // 4,
                           opts=opts, data=payload)
        a.seq = (a.seq + len(payload) + bool(flags & (TH_SYN | TH_FIN))) & 0xFFFFFFFF
        a.ipid += 1
        self.flow.add(gap, ip_frame(a.host, b.host, 6, seg, a.ipid))


class TraceBuilder:
    """The hosts of both networks plus one builder per kind of conversation."""

    def __init__(self, seed, reuse_ports=False):
        self.rng = r = random.Random(seed)
        # Conversations overlap only a few at a time, but a new source port (or echo id) for each
        # one makes the endpoints a NAT maps grow with the trace. Reusing them keeps that number
        # at the most a host ever has open at once. Off, every trace keeps the bytes it had before.
        self.reuse_ports = reuse_ports
        self.filling = False  # conversations slotted in at earlier times take never-used values
        self.gateways = [self.host(ip, 0, 300) for ip in ("10.0.0.1", "192.168.1.1")]
        self.inside = ([self.host(f"10.0.0.{10 + i}", 0, r.randint(150, 900)) for i in range(24)] +
                       [self.host(f"192.168.1.{100 + i}", 0, r.randint(300, 2500), r.choice([64, 128]))
                        for i in range(12)])
        self.services = [(self.inside[0], 22), (self.inside[1], 443), (self.inside[24], 3389)]
        octets = r.sample([o for o in range(2, 250) if o != 53], 30)
        self.servers = {n: self.outside(f"{OUTSIDE_NETS[i % 3]}.{octets[i]}") for i, n in enumerate(NAMES)}
        self.resolvers = [self.outside("198.51.100.53", 3000), self.outside("203.0.113.53", 9000)]
        self.remote_clients = [self.outside(f"192.0.2.{o}") for o in octets[20:26]]
        self.dead_hosts = [self.outside(f"203.0.113.{o}") for o in octets[26:29]]
        self.inside6 = [Host(f"2001:db8:1::{i + 10:x}", h.mac, h.rtt, 64, r.randint(32768, 50000))
                        for i, h in enumerate(self.inside[:8])]  # dual-stack twins, same MAC
        self.outside6 = [Host(f"2001:db8:beef::{n}", bytes([2, 6, 0, 0, 0, n]), r.randint(8000, 90000))
                         for n in (0x10, 0x20, 0x53)]
        self.used = set()  # (host ip, proto, port or ICMP id) never reused

    def host(self, ip, side, rtt, ttl=64):
        return Host(ip, bytes([2, side]) + socket.inet_aton(ip), rtt, ttl, self.rng.randint(32768, 50000))

    def outside(self, ip, rtt=None):
        r = self.rng
        return self.host(ip, 1, rtt or r.randint(4000, 140000), r.choice([47, 50, 52, 55, 57, 113, 116, 242]))

    # -- helpers -------------------------------------------------------------------------
    def reused(self, host, proto, t, new):
        """With --reuse-ports: of the host's values for proto, the one freed last before t (the
        most recently used, so a NAT's mapping of it is still alive), or a new one (from ``new``)
        when all are busy at t. None without the option, or while filling (the caller then
        picks as it always did)."""
        if not self.reuse_ports or self.filling:
            return None
        values = host.reusable.setdefault(proto, {})
        idle = [(end, v) for v, end in values.items() if end < t]
        value = max(idle)[1] if idle else new()
        values[value] = float("inf")  # busy until ``free`` says when its conversation ended
        return value

    def free(self, host, proto, value, t):
        values = host.reusable.get(proto)
        if values is not None and value in values:
            values[value] = t

    def unique(self, host, proto, pick):
        while True:
            v = pick()
            if (host.ip, proto, v) not in self.used:
                self.used.add((host.ip, proto, v))
                return v

    def client_port(self, host, t, fresh):
        """An ephemeral port: sometimes one whose previous flow is over, else the next free one.
        fresh=True (conversations slotted in at an earlier time) takes a never-used port."""
        free = sorted(p for p, end in host.port_free_at.items() if end < t)
        if free and not fresh and self.rng.random() < 0.25:
            return self.rng.choice(free)
        while True:  # Linux-like range 32768-60999, wrapping around
            host.next_port = 32768 + (host.next_port - 32768 + self.rng.randint(1, 5)) % 28232
            end = host.port_free_at.get(host.next_port)
            if end is None or (end < t and not fresh):
                return host.next_port

    def new_port(self, host):
        """A client port never used before, for --reuse-ports."""
        while True:
            host.next_port = 32768 + (host.next_port - 32768 + self.rng.randint(1, 5)) % 28232
            if host.next_port not in host.port_free_at and host.next_port not in host.reusable.get(6, ()):
                return host.next_port

    def think(self):
        """Idle time inside a connection: mostly ms, sometimes up to seconds."""
        r, roll = self.rng, self.rng.random()
        if roll < 0.6:
            return r.randint(1000, 50000)
        return r.randint(50000, 800000) if roll < 0.9 else r.randint(1, 5) * 10**6

    def message(self, from_cli, port, name, size):
        r = self.rng
        if port != 80:
            return r.randbytes(size)  # TLS / SSH / RDP: opaque bytes
        if from_cli:
            path = r.choice(["", "index.html", "api/v1/items", "img/logo.png"])
            head = f"GET /{path} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: ftmb-trace/1.0\r\n"
            return (head + "X-Pad: " + "a" * max(0, size - len(head) - 11) + "\r\n\r\n").encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
        return head + r.randbytes(size)

    # -- conversations -------------------------------------------------------------------
    def transfer(self, c, sender, data, gap, final_ack=True):
        """Data segments in bursts of up to 10; the receiver ACKs every second segment."""
        r, off = self.rng, 0
        while off < len(data):
            ends = []
            for _ in range(10):
                chunk, off = data[off:off + c.mss], off + c.mss
                c.send(sender, TH_ACK | (TH_PUSH if off >= len(data) else 0), chunk, gap)
                ends.append(c.side[sender].seq)
                gap = r.randint(12, 120)
                if off >= len(data):
                    break
            acks = ends[1::2] + ends[-1:] * (len(ends) % 2)
            if off >= len(data) and not final_ack and acks[-1] == ends[-1]:
                acks.pop()  # the reply will carry this ACK
            gap = c.delay(not sender)
            for a in acks:
                c.send(not sender, TH_ACK, gap=gap, ack=a)
                gap = r.randint(12, 120)
            gap = c.delay(sender)

    def tcp_session(self, flow, cli, srv, sport, name="", fresh=False, refused=False, max_big=5):
        """Handshake, 1-5 request/response exchanges, FIN or RST close; or SYN -> RST if refused."""
        r = self.rng
        cport = None if fresh else self.reused(cli, 6, flow.t, lambda: self.new_port(cli))
        if cport is None:
            cport = self.client_port(cli, flow.t, fresh)
        c = TcpConn(r, flow, cli, cport, srv, sport)
        syn_opts = struct.pack("!BBH", 2, 4, c.mss) + b"\x01\x03\x03\x07\x04\x02\x01\x01"  # MSS WS SACK-OK
        c.send(True, TH_SYN, opts=syn_opts, gap=r.randint(1, 3000))
        if refused:  # closed port
            c.side[False].seq = 0
            c.send(False, TH_RST | TH_ACK, gap=c.delay(False))
        else:
            c.send(False, TH_SYN | TH_ACK, opts=syn_opts, gap=c.delay(False))
            c.send(True, TH_ACK, gap=c.delay(True))
            gap = r.randint(30, 400)
            for _ in range(r.choices([1, 2, 3, 5], [55, 25, 12, 8])[0]):
                req = r.randint(2000, 12000) if r.random() < 0.1 else r.randint(120, 900)
                lo, hi = r.choices([(80, 1400), (1500, 8000), (8000, 25000), (25000, 70000)],
                                   [40, 35, 20, max_big])[0]
                resp, req = min(r.randint(lo, hi), self.max_bytes), min(req, self.max_bytes)
                self.transfer(c, True, self.message(True, sport, name, req), gap, final_ack=False)
                self.transfer(c, False, self.message(False, sport, name, resp), r.randint(200, 30000))
                gap = self.think()
            closer = r.random() < 0.75
            if r.random() < 0.15:  # abortive close
                c.send(closer, TH_RST | TH_ACK, gap=gap)
            else:
                c.send(closer, TH_FIN | TH_ACK, gap=gap)
                c.send(not closer, TH_FIN | TH_ACK, gap=c.delay(not closer))
                c.send(closer, TH_ACK, gap=c.delay(closer))
        cli.port_free_at[cport] = flow.t
        self.free(cli, 6, cport, flow.t)

    def dns_lookup(self, flow, cli, name, gap, answer=True):
        """A (AAAA over IPv6) query; answered with the name's server, NXDOMAIN, or not at all."""
        r = self.rng
        resolver = self.outside6[2] if ":" in cli.ip else r.choice(self.resolvers)
        qtype = dpkt.dns.DNS_AAAA if ":" in cli.ip else dpkt.dns.DNS_A
        q = dpkt.dns.DNS(id=r.getrandbits(16), rd=1, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
        pick = lambda: self.unique(cli, 17, lambda: r.randint(1024, 65535))  # noqa: E731
        sport = self.reused(cli, 17, flow.t + max(1, int(gap)), pick)
        if sport is None:
            sport = pick()
        udp = dpkt.udp.UDP(sport=sport, dport=53, ulen=8 + len(bytes(q)), data=bytes(q))
        flow.add(gap, ip_frame(cli, resolver, 17, udp, r.getrandbits(16)))
        if not answer:
            self.free(cli, 17, sport, flow.t)
            return
        a = dpkt.dns.DNS(id=q.id, qr=dpkt.dns.DNS_R, rd=1, ra=1, qd=q.qd)
        server = self.servers.get(name)
        if server is None:
            a.rcode = dpkt.dns.DNS_RCODE_NXDOMAIN
        elif qtype == dpkt.dns.DNS_AAAA:
            ip6 = self.outside6[NAMES.index(name) % 2].ip
            a.an = [dpkt.dns.DNS.RR(name=name, type=qtype, ttl=300,
                                    rdata=socket.inet_pton(socket.AF_INET6, ip6))]
        else:
            a.an = [dpkt.dns.DNS.RR(name=name, ttl=r.choice([60, 300, 3600]),
                                    rdata=socket.inet_aton(server.ip))]
        udp = dpkt.udp.UDP(sport=53, dport=sport, ulen=8 + len(bytes(a)), data=bytes(a))
        flow.add(resolver.rtt + r.randint(50, 20000), ip_frame(resolver, cli, 17, udp, r.getrandbits(16)))
        self.free(cli, 17, sport, flow.t)

    def ping_session(self, flow, src, dst, count, loss):
        """count echo requests one second apart, same id, seq 1..count; each lost with p=loss."""
        r = self.rng
        pick = lambda: self.unique(src, 1, lambda: r.getrandbits(16))  # noqa: E731
        ident = self.reused(src, 1, flow.t + 1, pick)
        if ident is None:
            ident = pick()
        gap = r.randint(1, 3000)
        for seq in range(1, count + 1):
            t = START_US + flow.t + gap
            stamp = struct.pack("<qq", t // 10**6, t % 10**6)  # like Linux ping: timeval + pattern
            echo = dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=stamp + bytes(range(16, 56)))
            flow.add(gap, ip_frame(src, dst, 1, dpkt.icmp.ICMP(type=8, data=echo), r.getrandbits(16)))
            gap = 10 ** 6 + r.randint(-3000, 3000)
            if r.random() >= loss:
                rtt = dst.rtt + r.randint(20, 900)
                reply = dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=echo.data)
                flow.add(rtt, ip_frame(dst, src, 1, dpkt.icmp.ICMP(type=0, data=reply), r.getrandbits(16)))
                gap -= rtt
        self.free(src, 1, ident, flow.t)

    def arp_exchange(self, flow, asker, target, gap):
        def arp(op, src, dst, dst_mac):
            pkt = dpkt.arp.ARP(op=op, sha=src.mac, spa=socket.inet_aton(src.ip),
                               tha=dst_mac.replace(BROADCAST, bytes(6)), tpa=socket.inet_aton(dst.ip))
            eth = dpkt.ethernet.Ethernet(src=src.mac, dst=dst_mac, type=dpkt.ethernet.ETH_TYPE_ARP, data=pkt)
            return bytes(eth)
        flow.add(gap, arp(dpkt.arp.ARP_OP_REQUEST, asker, target, BROADCAST))
        if target is not asker:  # gratuitous ARP has no reply
            flow.add(self.rng.randint(40, 400), arp(dpkt.arp.ARP_OP_REPLY, target, asker, asker.mac))

    def random_flow(self, t, fresh=False):
        """One conversation starting at t, its kind drawn from FLOW_KINDS."""
        r, flow = self.rng, Flow(t)
        kind = r.choices(list(FLOW_KINDS), list(FLOW_KINDS.values()))[0]
        cli = r.choice(self.inside)
        if kind == "web":
            name = r.choice(NAMES)
            if r.random() < 0.5:
                self.dns_lookup(flow, cli, name, 0)
            port = r.choices([443, 80, 22, 993, 8080], [62, 25, 5, 5, 3])[0]
            self.tcp_session(flow, cli, self.servers[name], port, name, fresh)
        elif kind == "refused":
            srv = r.choice(list(self.servers.values()))
            self.tcp_session(flow, cli, srv, r.choice([5000, 8443, 8888]), fresh=fresh, refused=True)
        elif kind == "inbound":  # unsolicited: opened by an outside host, often to a closed port
            srv, port = r.choice(self.services)
            refused = r.random() < 0.3
            self.tcp_session(flow, r.choice(self.remote_clients), srv, port, fresh=fresh, refused=refused)
        elif kind == "dns":
            bogus = r.choice(["wpad.example.invalid", "nas.corp.test"])  # -> NXDOMAIN
            name = r.choice(NAMES) if r.random() < 0.9 else bogus
            answered = r.random() < 0.9
            self.dns_lookup(flow, cli, name, 0, answer=answered)
            if not answered and r.random() < 0.5:  # the stub resolver retries after a timeout
                self.dns_lookup(flow, cli, name, 10 ** 6 + r.randint(0, 10 ** 6))
        elif kind == "ping":
            roll = r.random()
            if roll < 0.7:
                self.ping_session(flow, cli, r.choice(list(self.servers.values())), r.randint(3, 8), 0.03)
            elif roll < 0.87:
                self.ping_session(flow, cli, r.choice(self.dead_hosts), r.randint(2, 4), 1.0)
            else:
                src = r.choice(self.remote_clients)  # pinged from outside
                self.ping_session(flow, src, r.choice(self.inside), r.randint(2, 5), 0.0)
        elif kind == "arp":
            gw = self.gateways[cli.ip.startswith("192.168")]
            peer = r.choice([h for h in self.inside if h.ip.rsplit(".", 1)[0] == cli.ip.rsplit(".", 1)[0]])
            self.arp_exchange(flow, cli, r.choice([gw, gw, gw, peer, cli]), 0)
        else:  # IPv6, a small share
            i = r.randrange(len(self.inside6))
            if r.random() < 0.6:
                self.dns_lookup(flow, self.inside6[i], r.choice(NAMES), 0)
            else:
                srv = self.outside6[r.randrange(2)]
                self.tcp_session(flow, self.inside6[i], srv, 443, fresh=fresh, max_big=0)
        return flow

    def prelude(self):
        """Every trace, however small, starts with ARP (incl. a gratuitous one) and some IPv6."""
        flow, (h10, h192) = Flow(0), (self.inside[2], self.inside[26])
        self.arp_exchange(flow, h10, self.gateways[0], 0)
        self.arp_exchange(flow, h192, self.gateways[1], self.rng.randint(100, 3000))
        self.arp_exchange(flow, h192, h192, self.rng.randint(100, 3000))
        self.dns_lookup(flow, self.inside6[0], NAMES[0], self.rng.randint(100, 3000))
        return flow

    def build(self, packets):
        self.max_bytes = 25 * packets  # so that short traces still hold many connections
        flows = [self.prelude()]
        total, t = len(flows[0].pkts), flows[0].t
        while total < packets:
            t += int(self.rng.expovariate(1 / 30000))
            flows.append(self.random_flow(t))
            total += len(flows[-1].pkts)
        while total > packets:  # drop whole conversations, newest first ...
            total -= len(flows.pop().pkts)
        end = max((f.t for f in flows), default=0)
        self.filling = True
        while total < packets:  # ... and fill the gap with small complete ones
            for _ in range(40):
                f = self.random_flow(self.rng.randint(0, end), fresh=True)
                if len(f.pkts) <= packets - total:
                    break
            else:
                f = Flow(self.rng.randint(0, end))
                h = self.rng.choice(self.inside)
                self.arp_exchange(f, h, h, 0)
            flows.append(f)
            total += len(f.pkts)
        events = sorted((ts, i, j, fr) for i, fl in enumerate(flows) for j, (ts, fr) in enumerate(fl.pkts))
        out, last = [], -1
        for ts, _, _, frame in events:  # strictly increasing timestamps
            last = max(ts, last + 1)
            out.append((last, frame))
        return out


def protocol_of(frame):
    eth_type = struct.unpack_from("!H", frame, 12)[0]
    if eth_type == dpkt.ethernet.ETH_TYPE_IP:
        return {1: "icmp", 6: "tcp", 17: "udp"}.get(frame[23], "ip-other")
    return {dpkt.ethernet.ETH_TYPE_ARP: "arp", dpkt.ethernet.ETH_TYPE_IP6: "ipv6"}.get(eth_type, "other")


def write_pcap(path, packets):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, dpkt.pcap.DLT_EN10MB))
        for ts, frame in packets:
            t = START_US + ts
            f.write(struct.pack("<IIII", t // 10 ** 6, t % 10 ** 6, len(frame), len(frame)) + frame)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1,
                   help="seed for random.Random: the same seed and --packets give the same bytes (default 1)")
    p.add_argument("--packets", type=int, default=3000,
                   help="exact number of packets (frames) to write (default 3000)")
    p.add_argument("--out", default="traces/mixed.pcap",
                   help="output pcap path, overwritten (default traces/mixed.pcap)")
    p.add_argument("--reuse-ports", action="store_true",
                   help="a host starts a conversation from the source port (or ICMP echo id) it freed last, "
                        "taking a new one only when all of its own are busy, so the endpoints a NAT maps stay "
                        "as few on a long trace as on a short one (default: a new one per conversation, as "
                        "in the bundled traces)")
    args = p.parse_args(argv)
    if args.packets < 1:
        p.error("--packets must be at least 1")
    packets = TraceBuilder(args.seed, args.reuse_ports).build(args.packets)
    write_pcap(args.out, packets)
    counts = Counter(protocol_of(f) for _, f in packets)
    by_proto = " ".join(f"{k}={counts[k]}" for k in ("tcp", "udp", "icmp", "ipv6", "arp"))
    print(f"{args.out}: {len(packets)} packets: {by_proto}", file=sys.stderr)


if __name__ == "__main__":
    main()
