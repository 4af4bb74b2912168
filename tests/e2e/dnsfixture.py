"""DNS helpers for the end-to-end tests (standard library only): build queries
and read responses by hand with struct, send them over UDP and TCP, and run
upstream servers on loopback: dnsmasq (a real server that logs every query it
receives) and a small scripted Python server for what dnsmasq cannot do
(answer slowly, answer garbage, count queries exactly)."""
import os
import socket
import struct
import subprocess
import threading
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "SVCB": 64, "HTTPS": 65, "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
DNSMASQ = "/usr/sbin/dnsmasq"


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\0"


def build_query(name, qtype="A", qid=0x1234, edns=None, do=False, rd=True, opcode=0,
                qdcount=1, qclass=1, cd=False):
    """A query; edns=None: no OPT, else the UDP size to advertise."""
    t = TYPES[qtype] if isinstance(qtype, str) else qtype
    flags = (opcode << 11) | (0x0100 if rd else 0) | (0x0010 if cd else 0)
    q = encode_name(name) + struct.pack("!HH", t, qclass)
    msg = struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, 1 if edns else 0) + q * qdcount
    if edns:
        msg += b"\0" + struct.pack("!HHBBHH", 41, edns, 0, 0, 0x8000 if do else 0, 0)
    return msg


def read_name(msg, off):
    labels, jumped, end = [], False, None
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if not jumped:
                end = off + 2
            jumped = True
            off = ptr
            continue
        labels.append(msg[off + 1:off + 1 + n].decode("latin-1"))
        off += 1 + n
    return ".".join(labels), (end if jumped else off)


class RR:
    def __init__(self, name, rtype, rclass, ttl, rdata, msg, rdoff):
        self.name, self.type, self.rclass, self.ttl, self.rdata = name, rtype, rclass, ttl, rdata
        self._msg, self._rdoff = msg, rdoff

    def addr(self):
        if self.type == 1:
            return socket.inet_ntop(socket.AF_INET, self.rdata)
        if self.type == 28:
            return socket.inet_ntop(socket.AF_INET6, self.rdata)
        return None

    def soa_mname(self):
        return read_name(self._msg, self._rdoff)[0]

    def edns_options(self):
        """OPT: list of (code, data)."""
        out, i = [], 0
        while i + 4 <= len(self.rdata):
            code, ln = struct.unpack("!HH", self.rdata[i:i + 4])
            out.append((code, self.rdata[i + 4:i + 4 + ln]))
            i += 4 + ln
        return out

    def svc_keys(self):
        """SVCB/HTTPS: the SvcParamKeys present."""
        _, off = read_name(self.rdata, 2)
        keys = []
        while off + 4 <= len(self.rdata):
            k, ln = struct.unpack("!HH", self.rdata[off:off + 4])
            keys.append(k)
            off += 4 + ln
        return keys

    def __repr__(self):
        return "RR(%s %d %d %r)" % (self.name, self.type, self.ttl, self.addr() or self.rdata)


class Response:
    def __init__(self, msg):
        self.raw = msg
        (self.id, self.flags, qd, an, ns, ar) = struct.unpack("!HHHHHH", msg[:12])
        off = 12
        self.qname = None
        for _ in range(qd):
            self.qname, off = read_name(msg, off)
            self.qtype, self.qclass = struct.unpack("!HH", msg[off:off + 4])
            off += 4
        self.answer, self.authority, self.additional = [], [], []
        for sect, n in ((self.answer, an), (self.authority, ns), (self.additional, ar)):
            for _ in range(n):
                name, off = read_name(msg, off)
                t, c, ttl, ln = struct.unpack("!HHIH", msg[off:off + 10])
                off += 10
                sect.append(RR(name, t, c, ttl, msg[off:off + ln], msg, off))
                off += ln

    rcode = property(lambda s: s.flags & 0xF)
    rcode_name = property(lambda s: RCODES.get(s.flags & 0xF, str(s.flags & 0xF)))
    aa = property(lambda s: bool(s.flags & 0x0400))
    tc = property(lambda s: bool(s.flags & 0x0200))
    qr = property(lambda s: bool(s.flags & 0x8000))

    def opt(self):
        for rr in self.additional:
            if rr.type == 41:
                return rr
        return None

    def ede(self):
        o = self.opt()
        if not o:
            return None
        for code, data in o.edns_options():
            if code == 15:
                return struct.unpack("!H", data[:2])[0]
        return None

    def ede_codes(self):
        """Every Extended DNS Error code in the OPT record, in order."""
        o = self.opt()
        return [struct.unpack("!H", d[:2])[0] for c, d in (o.edns_options() if o else [])
                if c == 15]

    def addrs(self):
        return sorted(rr.addr() for rr in self.answer if rr.type in (1, 28))


def udp_exchange(port, msg, host="127.0.0.1", timeout=3.0):
    """Send msg, return the raw reply or None on timeout."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, (host, port))
        try:
            return s.recvfrom(65535)[0]
        except socket.timeout:
            return None


def udp_query(port, name, qtype="A", host="127.0.0.1", timeout=3.0, **kw):
    raw = udp_exchange(port, build_query(name, qtype, **kw), host, timeout)
    if raw is None:
        raise AssertionError("no answer for %s %s" % (name, qtype))
    return Response(raw)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def tcp_exchange(port, msgs, host="127.0.0.1", timeout=5.0):
    """Send every message in one write (pipelined); return the replies in the
    order they arrive."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(b"".join(struct.pack("!H", len(m)) + m for m in msgs))
        out = []
        for _ in msgs:
            ln = struct.unpack("!H", recv_exact(s, 2))[0]
            out.append(Response(recv_exact(s, ln)))
        return out


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port answering from its command line only, logging
    every query it receives to a file."""

    def __init__(self, tmpdir, port, args):
        self.log = os.path.join(tmpdir, "dnsmasq-%d.log" % port)
        open(self.log, "w").close()
        self.proc = subprocess.Popen(
            [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
             "--port=%d" % port, "--listen-address=127.0.0.1", "--bind-interfaces",
             *(["--user=root"] if os.getuid() == 0 else []), "--pid-file=",
             "--cache-size=0", "--log-queries", "--log-facility=" + self.log, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: %s" % self.proc.stderr.read().decode())
            if udp_exchange(port, build_query("ping.invalid"), timeout=0.2) is not None:
                return
        raise RuntimeError("dnsmasq did not answer")

    def queries(self, name, qtype=None):
        """How many queries for name (any case) dnsmasq logged."""
        n = 0
        with open(self.log, errors="replace") as f:
            for line in f:
                if "query[" not in line:
                    continue
                rest = line.split("query[", 1)[1]
                t, rest = rest.split("]", 1)
                qn = rest.split()[0]
                if qn.lower() == name.lower() and (qtype is None or t == qtype):
                    n += 1
        return n

    def logged_names(self):
        names = []
        with open(self.log, errors="replace") as f:
            for line in f:
                if "query[" in line:
                    name = line.split("query[", 1)[1].split("]", 1)[1].split()[0].lower()
                    if name != "ping.invalid":  # our own start-up probe
                        names.append(name)
        return names

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stderr.close()


class UdpUpstream:
    """A UDP server on 127.0.0.1:port: each datagram goes to
    self.received_query(msg, peer) on the server's thread; self.reply(out,
    peer) sends, unless the server is stopping."""

    def __init__(self, port):
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                msg, peer = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            self.received_query(msg, peer)

    def received_query(self, msg, peer):
        raise NotImplementedError

    def reply(self, out, peer):
        """Send out to peer; False when stopping or the send failed."""
        if self._stop:
            return False
        try:
            self.sock.sendto(out, peer)
        except OSError:
            return False
        return True

    def stop(self):
        self._stop = True
        self._t.join(timeout=2)
        self.sock.close()


class ScriptedUpstream(UdpUpstream):
    """A UDP DNS server on 127.0.0.1:port whose answer is handler(query bytes)
    -> bytes or None (no answer), after delay seconds. Counts queries by
    (lowercased name, type)."""

    def __init__(self, port, handler, delay=0.0):
        self.handler, self.delay = handler, delay
        self.counts = {}
        super().__init__(port)

    def received_query(self, msg, peer):
        try:
            q = Response(msg)
            key = (q.qname.lower(), q.qtype)
        except Exception:
            key = ("?", 0)
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
        if self.delay:
            threading.Timer(self.delay, self._answer, (msg, peer)).start()
        else:
            self._answer(msg, peer)

    def _answer(self, msg, peer):
        out = self.handler(msg)
        if out is not None:
            self.reply(out, peer)

    def count(self, name, qtype="A"):
        with self._lock:
            return self.counts.get((name.lower(), TYPES[qtype]), 0)


def answer_a(query, addr, ttl=300):
    """A response to query with one A record (owner: a pointer to the question)."""
    q = Response(query)
    qid, flags = struct.unpack("!HH", query[:4])
    qend = 12 + len(encode_name(q.qname)) + 4
    hdr = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1, 0, 0)
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(addr)
    return hdr + query[12:qend] + rr
