"""Backends for the proxy's end-to-end tests (standard library only, plus the
nginx, openssl/certtool and ip binaries): a private network namespace, real
nginx with a self-signed certificate made at test time, and a Python
"bulk" server that checks bytes both ways.

The tests run in a network namespace of their own (the script re-executes
itself under `unshare --net`), so nginx can listen on ports 443 and 80 of
198.18.0.x (SPEC §2.4: ordinary destinations, not refused) without touching
the host or colliding with other test runs."""
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from dnsfixture import Dnsmasq
from moatlib import MoatTestCase, TempDir, close_all, free_port

NETNS_ENV = "MOAT_PX_NETNS"
ADDRS = {"a": "198.18.0.2", "b": "198.18.0.3", "bulk": "198.18.0.4"}
# The "guest": connections from this source are redirected to moat's
# transparent listener by nftables (Nft below); moat's own are not.
GUEST = "198.18.0.5"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def reexec_in_netns(argv):
    """Re-run this script in a new network namespace (root only). Returns a
    reason string when it cannot, else does not return."""
    if os.environ.get(NETNS_ENV):
        return None
    if os.geteuid() != 0:
        return "needs root (a network namespace and ports 443/80)"
    unshare = shutil.which("unshare")
    if not unshare or not shutil.which("ip"):
        return "needs unshare(1) and ip(8)"
    env = dict(os.environ, **{NETNS_ENV: "1"})
    os.execve(unshare, [unshare, "--net", "--", *argv], env)
    return None


def netns_skip(name, path):
    """For a test script at path whose module __name__ is name: run as the
    main script, it re-executes itself in a new network namespace (see
    reexec_in_netns); returns the reason to skip its namespace tests, or
    None."""
    if name != "__main__":
        return None
    return reexec_in_netns([sys.executable, os.path.abspath(path), *sys.argv[1:]])


def setup_netns():
    """Inside the namespace: loopback up, the backend addresses on it
    (`replace`: a second test class in the same namespace finds them)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for a in [*ADDRS.values(), GUEST]:
        subprocess.run(["ip", "addr", "replace", a + "/32", "dev", "lo"], check=True)


def make_cert(tmpdir, names):
    """A self-signed certificate for names in tmpdir (made if need be);
    returns (cert, key) paths."""
    os.makedirs(tmpdir, exist_ok=True)
    cert, key = os.path.join(tmpdir, "cert.pem"), os.path.join(tmpdir, "key.pem")
    san = ",".join("DNS:" + n for n in names)
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=" + names[0], "-addext",
                        "subjectAltName=" + san], check=True, capture_output=True, timeout=30)
    else:
        tmpl = os.path.join(tmpdir, "cert.tmpl")
        with open(tmpl, "w") as f:
            f.write("cn = %s\nexpiration_days = 2\ntls_www_server\nca\n" % names[0])
            for n in names:
                f.write("dns_name = %s\n" % n)
        subprocess.run(["certtool", "--generate-privkey", "--outfile", key], check=True,
                       capture_output=True, timeout=30)
        subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", key,
                        "--template", tmpl, "--outfile", cert], check=True,
                       capture_output=True, timeout=30)
    return cert, key


NGINX_CONF = """
user root;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/t_body;
  proxy_temp_path {d}/t_proxy;
  fastcgi_temp_path {d}/t_fcgi;
  uwsgi_temp_path {d}/t_uwsgi;
  scgi_temp_path {d}/t_scgi;
  keepalive_timeout 60s;
  ssl_certificate {cert};
  ssl_certificate_key {key};
{extra}{servers}}}
"""


class NginxServer:
    """nginx run by a test in the prefix dir d: `pages` maps a path under d to
    its content (str or bytes), `servers` is the text of the server blocks,
    `probes` the (address, port) pairs that must accept before it counts as
    started."""

    def __init__(self, d, cert, key, pages, servers, probes, workers=1, extra=""):
        self.dir = d
        os.makedirs(d)
        for rel, content in pages.items():
            path = os.path.join(d, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
        conf = NGINX_CONF.format(d=d, cert=cert, key=key, workers=workers, extra=extra,
                                 servers=servers)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-p", d, "-e", d + "/error.log", "-c", path, "-g",
                                      "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: %s" % self.proc.stderr.read().decode())
            try:
                for addr, port in probes:
                    socket.create_connection((addr, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stderr.close()


class Nginx(NginxServer):
    """nginx with TLS servers a.test on ADDRS[a]:443 and b.test on
    ADDRS[b]:443 (pages "server-a" / "server-b") and plain HTTP on
    ADDRS[a]:80 ("http-a")."""

    def __init__(self, tmpdir, cert, key):
        d = os.path.join(tmpdir, "nginx")
        a, b = ADDRS["a"], ADDRS["b"]
        servers = (
            "  server {{ listen {a}:443 ssl; server_name a.test; root {d}/a; }}\n"
            "  server {{ listen {b}:443 ssl; server_name b.test; root {d}/b; }}\n"
            "  server {{ listen {a}:80; server_name a.test; root {d}/h; }}\n"
        ).format(d=d, a=a, b=b)
        super().__init__(d, cert, key,
                         pages={"a/index.html": "server-a\n", "b/index.html": "server-b\n",
                                "h/index.html": "http-a\n"},
                         servers=servers, probes=[(a, 80), (b, 443)])


class NetnsTestCase(MoatTestCase):
    """A test class whose servers run in the network namespace the script
    re-executed itself in: start_servers() starts them and adds each with
    cls.serve(); they are stopped in reverse order, also when starting
    fails. One temporary directory for the class (cls.dir). Per test, as
    in MoatTestCase, self.socks and self.moat, and also self.nfts (nftables
    rules removed after the test) and self.threads (joined, at most
    THREAD_JOIN_S seconds each, before moat is stopped)."""

    PER_TEST_DIR = False
    THREAD_JOIN_S = 10

    @classmethod
    def start_servers(cls):
        raise NotImplementedError

    @classmethod
    def serve(cls, proc):
        """proc (anything with stop()), stopped after the class's tests."""
        cls.procs.append(proc)
        return proc

    @classmethod
    def start_dnsmasq(cls, args):
        """dnsmasq on a fresh loopback port (cls.up_port) with args."""
        cls.up_port = free_port()
        cls.dnsmasq = cls.serve(Dnsmasq(cls.dir, cls.up_port, args))
        return cls.dnsmasq

    @classmethod
    def setUpClass(cls):
        if not os.environ.get(NETNS_ENV):
            raise unittest.SkipTest("run as a script (it enters a network namespace)")
        cls._tmp = TempDir()
        cls.dir = cls._tmp.__enter__()
        cls.procs = []
        try:
            cls.start_servers()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in reversed(cls.procs):
            try:
                p.stop()
            except Exception:
                pass
        cls._tmp.__exit__(None, None, None)

    def setUp(self):
        super().setUp()
        self.nfts = []
        self.threads = []

    def tearDown(self):
        close_all(self.socks)
        for n in self.nfts:
            n.stop()
        for t in self.threads:
            t.join(self.THREAD_JOIN_S)
        self.stop_moat()


def address_args(names):
    """dnsmasq arguments answering each (name, address) pair."""
    return ["--address=/%s/%s" % na for na in names]


def closed_within(s, timeout):
    """Wait for the peer to close s (EOF or reset), discarding bytes.
    Returns 'eof', 'reset', or None when it is still open at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return "reset"
        if not d:
            return "eof"


def unverified_context():
    """A TLS client context that checks no certificate (the tests that use
    it look at moat's answer to the hello, not the server's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello(name):
    """A real TLS ClientHello (python's ssl) naming name, as bytes."""
    return TlsDriver(None, unverified_context(), name).first_flight()


def echo_back(s, data):
    """Send data on s and read until as many bytes came back or s ends;
    returns what came back."""
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        d = s.recv(100)
        if not d:
            break
        got += d
    return got


def block(seed, size=1 << 20):
    """A deterministic 1 MiB block of bytes."""
    out, h = bytearray(), hashlib.sha256(seed).digest()
    while len(out) < size:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:size])


UP_BLOCK = block(b"up")
DOWN_BLOCK = block(b"down")


class TcpServer:
    """A TCP server on (addr, port) in the test's namespace: every accepted
    connection is passed to self.accepted(c), then served by self._serve(c)
    on a thread of its own. Subclasses set their attributes before calling
    this __init__ (the accept thread starts in it)."""

    def __init__(self, addr, port, backlog=64):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def accepted(self, c):
        pass

    def _serve(self, c):
        raise NotImplementedError

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def read_head(c, size=4096):
    """Read from c (size bytes at a time) until the end of an HTTP head:
    (head, the bytes after it), or None when c ends first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(size)
        if not d:
            return None
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def read_while(s, more, take):
    """Pass what s receives to take(d) while more() holds, until s ends."""
    while more():
        d = s.recv(65536)
        if not d:
            break
        take(d)


def read_to_end(s, take, chunk, pause=0.0, before_recv=None):
    """Pass what s receives (chunk bytes at a time) to take(d) until s ends;
    pause seconds after each (a slow reader); before_recv() is called
    before each recv. Returns how it ended: 'eof', 'reset' or 'timeout'."""
    while True:
        if before_recv:
            before_recv()
        try:
            d = s.recv(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            return "timeout"
        if not d:
            return "eof"
        take(d)
        if pause:
            time.sleep(pause)


class BulkServer(TcpServer):
    """On (addr, 80): read an HTTP-ish head with `X-Blocks: N`, then at the
    same time send N blocks of DOWN_BLOCK and read the client's bytes up to
    EOF; after EOF (the client's half-close), send one line
    `sha256=<hex of what was received> len=<n>` and close."""

    def __init__(self, addr, port=80):
        self.errors = []
        super().__init__(addr, port)

    def _serve(self, c):
        try:
            c.settimeout(60)
            got = read_head(c)
            if got is None:
                return
            head, rest = got
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"x-blocks:"):
                    n = int(line.split(b":", 1)[1])
            h, count = hashlib.sha256(rest), len(rest)

            def sender():
                for _ in range(n):
                    c.sendall(DOWN_BLOCK)

            t = threading.Thread(target=sender, daemon=True)
            t.start()
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                h.update(d)
                count += len(d)
            t.join(60)
            c.sendall(b"sha256=%s len=%d\n" % (h.hexdigest().encode(), count))
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            c.close()


class TlsDriver:
    """A TLS client over a plain socket through ssl.MemoryBIO, so a test
    controls how the ClientHello is written (one byte per write, split
    across records)."""

    def __init__(self, sock, ctx, server_hostname):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname)

    def first_flight(self):
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def _pump_in(self):
        d = self.sock.recv(65536)
        if not d:
            self.inc.write_eof()
        else:
            self.inc.write(d)

    def finish_handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = self.out.read()
                if out:
                    self.sock.sendall(out)
                self._pump_in()
        out = self.out.read()
        if out:
            self.sock.sendall(out)

    def write(self, data):
        self.obj.write(data)
        self.sock.sendall(self.out.read())

    def read_some(self):
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._pump_in()


def split_records(hello, cut):
    """Re-frame a single-record ClientHello as two handshake records, the
    first carrying `cut` bytes of the message (RFC 8446 §5.1 allows it)."""
    assert hello[0] == 0x16
    n = int.from_bytes(hello[3:5], "big")
    msg, rest = hello[5:5 + n], hello[5 + n:]
    ver = hello[1:3]
    a, b = msg[:cut], msg[cut:]
    return (b"\x16" + ver + len(a).to_bytes(2, "big") + a +
            b"\x16" + ver + len(b).to_bytes(2, "big") + b + rest)


def big_hello(name, pad):
    """A syntactically valid ClientHello with SNI name and a padding
    extension of pad bytes, framed in records of at most 16384 bytes."""
    sni = name.encode()
    sni_ext = (b"\x00\x00" + (len(sni) + 5).to_bytes(2, "big") + (len(sni) + 3).to_bytes(2, "big")
               + b"\x00" + len(sni).to_bytes(2, "big") + sni)
    pad_ext = b"\x00\x15" + pad.to_bytes(2, "big") + b"\x00" * pad
    exts = sni_ext + pad_ext
    body = (b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" +
            len(exts).to_bytes(2, "big") + exts)
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    out = b""
    for i in range(0, len(msg), 16384):
        part = msg[i:i + 16384]
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    return out


class Nft:
    """nftables NAT in the test's namespace: TCP from GUEST to the given
    ports is REDIRECTed to 127.0.0.1:to_port (SO_ORIGINAL_DST keeps the
    original destination)."""

    def __init__(self, ports, to_port):
        self.table = "moat_e2e"
        cmds = [["add", "table", "ip", self.table],
                ["add", "chain", "ip", self.table, "out",
                 "{ type nat hook output priority -100; }"],
                ["add", "rule", "ip", self.table, "out", "ip", "saddr", GUEST, "tcp", "dport",
                 "{ %s }" % ", ".join(str(p) for p in ports), "redirect", "to",
                 ":%d" % to_port]]
        for c in cmds:
            subprocess.run(["nft", *c], check=True, capture_output=True, timeout=10)

    def stop(self):
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True,
                       timeout=10)


def read_response(read):
    """Read one HTTP/1.1 response with Content-Length through read()."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = read()
        if not d:
            raise AssertionError("EOF in response head: %r" % buf)
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        d = read()
        if not d:
            break
        body += d
    return head.decode("latin-1"), body


class SourceClients:
    """Clients that speak from a chosen source address (a guest of one
    tenant, say), for a test case that sets self.client_ports = {"dns":
    port, "tls": port, "http": port} (moat's listeners on 127.0.0.1) and
    self.cert (the CA the TLS servers' certificate verifies with)."""

    def resolve_as(self, src, name):
        """The A records moat answers src for name."""
        from dnsfixture import Response, build_query
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((src, 0))
            u.settimeout(3)
            u.sendto(build_query(name), ("127.0.0.1", self.client_ports["dns"]))
            return [rr.addr() for rr in Response(u.recv(4096)).answer if rr.type == 1]

    def connect_as(self, src, addr, port):
        s = socket.create_connection((addr, port), timeout=10, source_address=(src, 0))
        self.socks.append(s)
        return s

    def tls_body_as(self, src, name):
        """The page behind name over the tls listener, or "denied" for a TLS
        access_denied alert. The connection is closed after (an allowed one
        is logged when it ends)."""
        s = self.connect_as(src, "127.0.0.1", self.client_ports["tls"])
        try:
            t = ssl.create_default_context(cafile=self.cert).wrap_socket(
                s, server_hostname=name)
        except ssl.SSLError as e:
            self.assertIn("ACCESS_DENIED", str(e).upper())
            return "denied"
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
        _, body = read_response(lambda: t.recv(65536))
        t.close()
        return body.decode()

    def http_status_as(self, src, name):
        """The status line of GET / for name over the http listener."""
        s = self.connect_as(src, "127.0.0.1", self.client_ports["http"])
        s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
        head, _ = read_response(lambda: s.recv(65536))
        s.close()
        return head.split("\r\n")[0]
