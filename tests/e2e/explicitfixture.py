"""Backends and clients for the explicit proxies' end-to-end tests
(test_explicit_proxy.py, test_explicit_attacks.py; SPEC §2.3 end, §2.5,
§2.6, §2.7): a "guest" network namespace whose only link is a veth to
moat's listeners, nginx with virtual hosts that each keep an access log, a
git server (nginx + fcgiwrap + git-http-backend), an sshd with throwaway
keys, a server that records every byte it is sent, and raw HTTP CONNECT
and SOCKS5 clients.

The test script re-executes itself under `unshare --net`
(proxyfixture.reexec_in_netns): moat, dnsmasq and the servers run in that
namespace (the "host"); the guest namespace is made inside it with
`ip netns add`, linked to the host by a veth pair:

  guest  eth0 198.18.10.2/24 and 198.18.10.3/24, no other route
    | veth
  host   gw0  198.18.10.1/24: moat's DNS (53), connect (3128), socks
              (1080) and http (8080) listeners; the servers on lo:
              allowed.test/secret.test 198.18.0.2, blocked.test 198.18.0.3,
              git.test 198.18.0.4, rec.test 198.18.0.9 (recorder),
              closed.test 198.18.0.10 (nothing listens), ssh.test
              198.18.0.22 (sshd), black.test 198.18.5.1 (SYNs dropped),
              six 2001:db8::2 (nginx HTTP on 80 and 8000)

The host does not forward (a new namespace's default), so from the guest
the only thing to talk to is 198.18.10.1. Guest programs run with
`ip netns exec` (GuestNs.run); Python sockets are made inside the guest
with GuestNs.inside() (setns(2) on the calling thread only)."""
import base64
import contextlib
import ctypes
import os
import shutil
import socket
import ssl
import subprocess
import time
import unittest

import proxyfixture as pf
import proxyfixture_more as pm
from moatlib import Moat, free_port, write_config

GW = "198.18.10.1"
GUEST_A = "198.18.10.2"  # a guest address (tenant team-a in the auth tests)
GUEST_B = "198.18.10.3"  # a second one, on the same guest (tenant team-b)
DNS_PORT, CONNECT_PORT, SOCKS_PORT, HTTP_PORT = 53, 3128, 1080, 8080

ALLOWED = "198.18.0.2"   # nginx: allowed.test and secret.test (one server, two vhosts)
BLOCKED = "198.18.0.3"   # nginx: blocked.test
GITADDR = "198.18.0.4"   # nginx + fcgiwrap: git.test
REC = "198.18.0.9"       # RecordServer on 443 and 80
CLOSED = "198.18.0.10"   # nothing listens: a dial is refused
SSHADDR = "198.18.0.22"  # sshd on port 22
BLACK = pm.BLACK         # SYNs dropped (pm.Blackhole)
SIX = pm.SIX             # nginx HTTP "six-site" on port 80 and SIX_PORT
SIX_PORT = 8000
LOOP_ADDRS = [ALLOWED, BLOCKED, GITADDR, REC, CLOSED, SSHADDR, BLACK, pf.GUEST]

# What dnsmasq (moat's upstream) answers. mapped.test has only an AAAA, an
# IPv4-mapped private address (SPEC §2.5); nx.test and every other .test
# name get NXDOMAIN (--local=/test/).
NAMES = [("allowed.test", ALLOWED), ("secret.test", ALLOWED), ("blocked.test", BLOCKED),
         ("git.test", GITADDR), ("rec.test", REC), ("closed.test", CLOSED),
         ("ssh.test", SSHADDR), ("black.test", BLACK)]
DNSMASQ_ARGS = (["--local=/test/", "--host-record=mapped.test,::ffff:10.0.0.1"] +
                pf.address_args(NAMES))
CERT_NAMES = ["allowed.test", "secret.test", "blocked.test", "git.test", "rec.test"]

PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
SSHD = shutil.which("sshd", path=PATH) or "/usr/sbin/sshd"
FCGIWRAP = shutil.which("fcgiwrap", path=PATH) or "/usr/sbin/fcgiwrap"
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
TOOLS = {"curl": "curl", "git": "git", "ssh": "ssh", "ssh-keygen": "ssh-keygen",
         "nc": "nc", "sshd": SSHD, "fcgiwrap": FCGIWRAP, "openssl": "openssl",
         "gnutls-cli": "gnutls-cli", "nft": "nft", "dig": "dig"}


def missing_tools(names):
    """The tools among names that are not installed (dev.sh's TEST_PKGS
    installs every one of TOOLS)."""
    out = [n for n in names if not shutil.which(TOOLS.get(n, n), path=PATH)]
    if "git" in names and not os.access(GIT_HTTP_BACKEND, os.X_OK):
        out.append(GIT_HTTP_BACKEND)
    return out


def wait_until(pred, timeout, what):
    """Poll pred() until it holds; AssertionError naming what after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def sh(*args, timeout=20, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=check, **kw)


# ---- the guest namespace -------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


class GuestNs:
    """A named network namespace linked to this one by a veth pair (gw0 here,
    eth0 there), with no route but its own /24: the only peer it can reach
    is GW. /etc/netns/NAME/resolv.conf names moat's DNS, for programs run
    with run()."""

    def __init__(self, name=None):
        self.name = name or "moatx-%d" % os.getpid()
        self.path = "/run/netns/" + self.name
        self.etc = "/etc/netns/" + self.name
        self.stop()  # a half-removed namespace of an earlier run with our pid
        sh("ip", "netns", "add", self.name)
        try:
            sh("ip", "link", "add", "gw0", "type", "veth", "peer", "name", "eth0", "netns",
               self.name)
            sh("ip", "addr", "add", GW + "/24", "dev", "gw0")
            sh("ip", "-6", "addr", "add", "fd00:10::1/64", "dev", "gw0", "nodad")
            sh("ip", "link", "set", "gw0", "up")
            for args in (["link", "set", "lo", "up"],
                         ["addr", "add", GUEST_A + "/24", "dev", "eth0"],
                         ["addr", "add", GUEST_B + "/24", "dev", "eth0"],
                         ["-6", "addr", "add", "fd00:10::2/64", "dev", "eth0", "nodad"],
                         ["link", "set", "eth0", "up"]):
                sh("ip", "-n", self.name, *args)
            os.makedirs(self.etc, exist_ok=True)
            with open(os.path.join(self.etc, "resolv.conf"), "w") as f:
                f.write("nameserver %s\n" % GW)
        except Exception:
            self.stop()
            raise

    def run(self, *args, timeout=30, env=None, input=None):
        """args run inside the guest (ip netns exec): CompletedProcess, text."""
        return subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True,
                              text=True, timeout=timeout, env=env, input=input)

    @contextlib.contextmanager
    def inside(self):
        """The calling thread in the guest's network namespace: sockets made
        in the block belong to the guest (and stay so after it)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def connect(self, port, src=GUEST_A, host=GW, timeout=10):
        """A TCP connection from the guest (source address src) to host:port."""
        with self.inside():
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.settimeout(timeout)
                if src:
                    s.bind((src, 0))
                s.connect((host, port))
            except BaseException:
                s.close()
                raise
        return s

    def stop(self):
        if os.path.exists(self.path):
            for pid in sh("ip", "netns", "pids", self.name, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            sh("ip", "netns", "delete", self.name, check=False)
        sh("ip", "link", "delete", "gw0", check=False)
        shutil.rmtree(self.etc, ignore_errors=True)
        try:
            os.rmdir("/etc/netns")
        except OSError:
            pass


def setup_host():
    """The host side (the namespace the script re-executed itself in):
    loopback up, the servers' addresses on it."""
    sh("ip", "link", "set", "lo", "up")
    for a in LOOP_ADDRS:
        sh("ip", "addr", "add", a + "/32", "dev", "lo")
    sh("ip", "-6", "addr", "add", SIX + "/128", "dev", "lo", "nodad")


# ---- servers -------------------------------------------------------------------------------

class NginxVhosts(pf.NginxServer):
    """nginx: allowed.test (first, so the default server) and secret.test
    on ALLOWED, TLS 443 and HTTP 80, each with its own access log
    (self.access_log(name)); blocked.test on BLOCKED; git.test on GITADDR
    (TLS) through fcgiwrap's socket to git-http-backend, repositories under
    git_root; HTTP on [SIX]:80 and [SIX]:SIX_PORT. Pages: "<name>-site\\n" at /, and /big
    (256 KiB) on allowed.test."""

    BIG = b"0123456789abcdef" * (1 << 14)

    def __init__(self, tmpdir, cert, key, fcgi_sock, git_root):
        d = os.path.join(tmpdir, "nginx-x")
        pages = {"%s/index.html" % n: "%s-site\n" % n for n in ("allowed", "secret", "blocked")}
        pages["six/index.html"] = "six-site\n"
        pages["allowed/big"] = self.BIG
        vhost = ("  server {{ listen {a}:443 ssl; listen {a}:80; server_name {n}.test;\n"
                 "           root {d}/{n}; access_log {d}/{n}-access.log; }}\n")
        servers = (vhost.format(a=ALLOWED, n="allowed", d=d) +
                   vhost.format(a=ALLOWED, n="secret", d=d) +
                   vhost.format(a=BLOCKED, n="blocked", d=d) +
                   ("  server {{ listen [{six}]:80; listen [{six}]:{six_port}; root {d}/six; }}\n"
                   "  server {{ listen {g}:443 ssl; server_name git.test;\n"
                   "    access_log {d}/git-access.log;\n"
                   "    location / {{\n"
                   "      client_max_body_size 0;\n"
                   "      fastcgi_pass unix:{sock};\n"
                   "      fastcgi_param SCRIPT_FILENAME {backend};\n"
                   "      fastcgi_param GIT_PROJECT_ROOT {root};\n"
                   "      fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n"
                   "      fastcgi_param GIT_CONFIG_NOSYSTEM 1;\n"
                   "      fastcgi_param HOME {root};\n"
                   "      fastcgi_param PATH_INFO $uri;\n"
                   "      fastcgi_param QUERY_STRING $query_string;\n"
                   "      fastcgi_param REQUEST_METHOD $request_method;\n"
                   "      fastcgi_param CONTENT_TYPE $content_type;\n"
                   "      fastcgi_param CONTENT_LENGTH $content_length;\n"
                   "      fastcgi_param SERVER_PROTOCOL $server_protocol;\n"
                   "      fastcgi_param GATEWAY_INTERFACE CGI/1.1;\n"
                   "      fastcgi_param REMOTE_ADDR $remote_addr;\n"
                   "      fastcgi_param HTTP_GIT_PROTOCOL $http_git_protocol;\n"
                   "    }}\n"
                   "  }}\n").format(six=SIX, g=GITADDR, d=d, sock=fcgi_sock,
                                    backend=GIT_HTTP_BACKEND, root=git_root, six_port=SIX_PORT))
        for n in ("allowed", "secret", "blocked", "git"):
            pages["%s-access.log" % n] = ""
        super().__init__(d, cert, key, pages=pages, servers=servers,
                         probes=[(ALLOWED, 443), (ALLOWED, 80), (BLOCKED, 443), (GITADDR, 443),
                                 (SIX, 80)])

    def access_log(self, name):
        """The access log of vhost name ("allowed", "secret", ...), as text."""
        with open(os.path.join(self.dir, name + "-access.log"), errors="replace") as f:
            return f.read()

    def wait_access(self, name, needle, timeout=5.0):
        """Wait until the access log of name holds needle (nginx writes a
        line when a request ends)."""
        deadline = time.monotonic() + timeout
        while needle not in self.access_log(name):
            if time.monotonic() > deadline:
                raise AssertionError("no %r in %s's access log:\n%s" %
                                     (needle, name, self.access_log(name)))
            time.sleep(0.05)


class Fcgiwrap:
    """fcgiwrap on a unix socket (git-http-backend runs under it)."""

    def __init__(self, sock_path):
        self.path = sock_path
        self.proc = subprocess.Popen([FCGIWRAP, "-c", "2", "-s", "unix:" + sock_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fcgiwrap did not start")
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def git_env(home):
    """An environment for git that reads no config of the machine's."""
    return dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
                GIT_AUTHOR_NAME="moat test", GIT_AUTHOR_EMAIL="test@moat.test",
                GIT_COMMITTER_NAME="moat test", GIT_COMMITTER_EMAIL="test@moat.test",
                PATH=PATH)


def make_git_repo(root, home):
    """A bare repository root/repo.git with one commit (a README); returns
    the commit's hash."""
    env = git_env(home)
    os.makedirs(home, exist_ok=True)
    work = os.path.join(root, "work")
    sh("git", "init", "-q", "-b", "main", work, env=env)
    with open(os.path.join(work, "README"), "w") as f:
        f.write("moat git over CONNECT\n")
    sh("git", "-C", work, "add", "README", env=env)
    sh("git", "-C", work, "commit", "-q", "-m", "first", env=env)
    head = sh("git", "-C", work, "rev-parse", "HEAD", env=env).stdout.strip()
    sh("git", "clone", "-q", "--bare", work, os.path.join(root, "repo.git"), env=env)
    shutil.rmtree(work)
    return head


class Sshd:
    """OpenSSH's sshd on addr:22 with a host key and a user key made for
    the test (self.user_key, self.known_hosts: ssh.test and addr with the
    host key), public-key login for root only. With UsePAM no, sshd
    refuses an account whose password field is locked with '!': root's is
    '*' in Debian's container images (CI), which is fine."""

    def __init__(self, tmpdir, addr, names=("ssh.test",)):
        d = os.path.join(tmpdir, "sshd")
        os.makedirs(d)
        os.chmod(d, 0o700)
        self.host_key = os.path.join(d, "host_ed25519")
        self.user_key = os.path.join(d, "user_ed25519")
        for k in (self.host_key, self.user_key):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "moat-e2e", "-f", k)
        self.authorized = os.path.join(d, "authorized_keys")
        shutil.copy(self.user_key + ".pub", self.authorized)
        with open(self.host_key + ".pub") as f:
            pub = " ".join(f.read().split()[:2])
        self.known_hosts = os.path.join(d, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write("%s %s\n" % (",".join([*names, addr]), pub))
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write("ListenAddress %s:22\nHostKey %s\nPidFile none\nAuthorizedKeysFile %s\n"
                    "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                    "PermitRootLogin prohibit-password\nLoginGraceTime 20\n"
                    "LogLevel VERBOSE\n" % (addr, self.host_key, self.authorized))
        # The privilege separation directory the Debian package makes at
        # boot; a CI container never booted it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log = os.path.join(d, "sshd.log")
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", conf], stdout=self._logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                self._logf.close()
                with open(self.log) as f:
                    raise RuntimeError("sshd exited: " + f.read())
            try:
                socket.create_connection((addr, 22), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sshd did not start")
                time.sleep(0.05)

    def ssh_args(self, proxy_command, target="ssh.test"):
        """ssh's command line (no user config, the test's keys, batch mode)
        to root@target through proxy_command."""
        return ["ssh", "-F", "/dev/null", "-i", self.user_key, "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=10", "-o", "ProxyCommand=" + proxy_command,
                "root@" + target]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._logf.close()


class RecordServer(pf.TcpServer):
    """On (addr, port): accepts, records every byte each connection sends
    (self.received: bytes per connection, in accept order); with answer,
    sends it once a whole HTTP head has come, else sends nothing; closes
    when the peer does."""

    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nrecorded\n"

    def __init__(self, addr, port, answer=None):
        self.received = []
        self.answer = answer
        super().__init__(addr, port)

    def accepted(self, c):
        self.received.append(b"")

    def _serve(self, c):
        i = len(self.received) - 1
        try:
            c.settimeout(30)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                self.received[i] += d
                if self.answer and b"\r\n\r\n" in self.received[i]:
                    c.sendall(self.answer)
                    break
        except OSError:
            pass
        finally:
            c.close()

    def total(self):
        return sum(len(r) for r in self.received)


# ---- clients -------------------------------------------------------------------------------

def basic(user, password):
    """A Proxy-Authorization header line's value for user:password."""
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def read_head_exact(s, limit=65536):
    """Read an HTTP response head from s one byte at a time, so no byte
    after it (a tunnel's first bytes) is taken: (status, {lower name:
    value}, raw head). Raises AssertionError when s ends first."""
    buf = b""
    while not buf.endswith(b"\r\n\r\n"):
        d = s.recv(1)
        if not d:
            raise AssertionError("the proxy closed before a whole head: %r" % buf)
        buf += d
        if len(buf) > limit:
            raise AssertionError("head too long: %r" % buf[:200])
    lines = buf.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, buf


def connect_request(s, target, auth=None, extra=""):
    """Send `CONNECT target HTTP/1.1` on s (Host: target; auth: a
    Proxy-Authorization value; extra: more header lines, each ending in
    \\r\\n) and read the answer's head: (status, headers, raw head)."""
    req = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
    if auth:
        req += "Proxy-Authorization: %s\r\n" % auth
    s.sendall((req + extra + "\r\n").encode())
    return read_head_exact(s)


class HttpReader:
    """Responses read from s one after another (keep-alive, pipelined):
    bytes read past one response are kept for the next."""

    def __init__(self, s, timeout=10):
        self.s = s
        self.buf = b""
        s.settimeout(timeout)

    def _more(self):
        d = self.s.recv(65536)
        if not d:
            raise AssertionError("the connection ended; unread: %r" % self.buf)
        self.buf += d

    def response(self):
        """The next response: (status, {lower name: value}, body); the
        body by Content-Length (0 when absent)."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body


def read_body(s, headers, timeout=10):
    """The body after a response head read by read_head_exact: by
    Content-Length, else to the end of s."""
    s.settimeout(timeout)
    n = headers.get("content-length")
    out = b""
    while n is None or len(out) < int(n):
        d = s.recv(65536)
        if not d:
            break
        out += d
    return out


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise AssertionError("closed after %d of %d bytes: %r" % (len(out), n, out))
        out += d
    return out


SOCKS_AUTH_FAILED = "auth-failed"


def socks5(s, host, port, user=None, password=None, cmd=1, atyp=None):
    """A SOCKS5 (RFC 1928) request on s: greeting (no authentication, or
    user/password RFC 1929 when user is given), then cmd (1 CONNECT) to host
    (an IPv4 or IPv6 literal, or a name) and port. Returns the reply code
    (0 success, ...), or SOCKS_AUTH_FAILED when the server refused the
    credentials (it answered 0x01 then a non-zero status); after a success
    the tunnel is s. atyp forces the address type byte (hostile tests)."""
    methods = b"\x02" if user is not None else b"\x00"
    s.sendall(b"\x05\x01" + methods)
    ver, method = recv_exact(s, 2)
    if ver != 5:
        raise AssertionError("SOCKS version %d in the method reply" % ver)
    if method == 0xFF:
        return "no-acceptable-method"
    if method == 2:
        u, p = (user or "").encode(), (password or "").encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        aver, status = recv_exact(s, 2)
        if aver != 1:
            raise AssertionError("auth reply version %d" % aver)
        if status != 0:
            return SOCKS_AUTH_FAILED
    elif method != 0:
        raise AssertionError("unexpected SOCKS method %d" % method)
    try:
        addr = b"\x01" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        try:
            addr = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            addr = b"\x03" + bytes([len(host)]) + host.encode()
    if atyp is not None:
        addr = bytes([atyp]) + addr[1:]
    s.sendall(b"\x05" + bytes([cmd]) + b"\x00" + addr + port.to_bytes(2, "big"))
    ver, rep, _, bound = recv_exact(s, 4)
    if ver != 5:
        raise AssertionError("SOCKS version %d in the reply" % ver)
    n = {1: 4, 4: 16}.get(bound)
    if n is None:
        n = recv_exact(s, 1)[0]
    recv_exact(s, n + 2)
    return rep


def tls_in_tunnel(s, name, cafile):
    """TLS over the tunnel s with SNI name, checking the certificate
    against cafile: the wrapped socket."""
    return ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname=name)


def get_over(s, host, path="/", close=True):
    """GET path with Host: host on s (a tunnel or a TLS socket): (status
    line, body)."""
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" %
               (path, host, "Connection: close\r\n" if close else "")).encode())
    head, body = pf.read_response(lambda: s.recv(65536))
    return head.split("\r\n")[0], body


def tls_alert_from(s, hello, timeout=5):
    """Send a ClientHello on s and read what comes back: 'access_denied'
    for a fatal access_denied alert (21 2 49), else the bytes (or 'eof')."""
    s.sendall(hello)
    s.settimeout(timeout)
    got = b""
    try:
        while len(got) < 7:
            d = s.recv(7 - len(got))
            if not d:
                break
            got += d
    except (ConnectionResetError, socket.timeout):
        pass
    if got[:1] == b"\x15" and got[5:7] == b"\x02\x31":
        return "access_denied"
    return got or "eof"


# ---- the test case -------------------------------------------------------------------------

ALLOW = """allow:
  - allowed.test
  - git.test
  - rec.test
  - closed.test
  - black.test
  - nx.test
  - mapped.test
  - {host: ssh.test, ports: [22]}
  - {cidr: "2001:db8::2/128", ports: [8000]}
"""

CONFIG = """dns:
  listen: ["{gw}:{dns}"]
  upstream: ["127.0.0.1:{up}"]
proxy:
  connect: ["{gw}:{connect}"]
  socks: ["{gw}:{socks}"]
  http: ["{gw}:{http}"]
  tls: []
  connect_timeout: 1s
{proxy_extra}shutdown_grace: 1s
log: {{allowed: true, level: debug}}
metrics: {{listen: "127.0.0.1:{metrics}"}}
{extra}{allow}"""


class ExplicitCase(pf.NetnsTestCase):
    """Servers, the guest namespace and dnsmasq for the class (see the module
    docstring); start() runs moat with the connect, socks, http and DNS
    listeners on GW. NEEDS: the tools the class's tests need (missing ones
    skip the class, naming them)."""

    NEEDS = ["curl", "openssl", "nft", "git", "fcgiwrap", "sshd", "ssh", "ssh-keygen", "nc"]

    @classmethod
    def start_servers(cls):
        miss = missing_tools(cls.NEEDS)
        if miss:
            raise unittest.SkipTest("needs " + ", ".join(miss) + " (./dev.sh test installs them)")
        setup_host()
        cls.guest = cls.serve(GuestNs())
        cls.cert, key = pf.make_cert(os.path.join(cls.dir, "cert"), CERT_NAMES)
        cls.git_root = os.path.join(cls.dir, "git")
        cls.home = os.path.join(cls.dir, "home")
        cls.fcgi = cls.serve(Fcgiwrap(os.path.join(cls.dir, "fcgiwrap.sock")))
        cls.git_head = make_git_repo(cls.git_root, cls.home)
        cls.nginx = cls.serve(NginxVhosts(cls.dir, cls.cert, key, cls.fcgi.path, cls.git_root))
        cls.sshd = cls.serve(Sshd(cls.dir, SSHADDR))
        cls.rec = cls.serve(RecordServer(REC, 443))
        cls.rec80 = cls.serve(RecordServer(REC, 80, answer=RecordServer.OK))
        cls.blackhole = cls.serve(pm.Blackhole())
        cls.start_dnsmasq(DNSMASQ_ARGS)

    def setUp(self):
        super().setUp()
        # Each test starts with empty access logs (nginx appends, O_APPEND).
        for n in ("allowed", "secret", "blocked", "git"):
            open(os.path.join(self.nginx.dir, n + "-access.log"), "w").close()

    def start(self, allow=ALLOW, proxy_extra="", extra=""):
        """moat on CONFIG (self.config_text), running."""
        self.metrics_port = free_port()
        self.config_text = CONFIG.format(
            gw=GW, dns=DNS_PORT, up=self.up_port, connect=CONNECT_PORT, socks=SOCKS_PORT,
            http=HTTP_PORT, metrics=self.metrics_port, proxy_extra=proxy_extra, extra=extra,
            allow=allow)
        self.config = write_config(self.dir, self.config_text)
        self.moat = Moat(self.config)
        self.moat.wait_line("moat running")
        return self.moat

    def reload(self, text):
        """Write text as the config and SIGHUP: the index of the first line
        after the signal."""
        write_config(self.dir, text)
        return self.moat.sighup()

    def log(self):
        return "\n".join(self.moat.lines)

    # clients in the guest

    def gconnect(self, port, src=GUEST_A, host=GW):
        s = self.guest.connect(port, src=src, host=host)
        self.socks.append(s)
        return s

    def curl(self, *args, timeout=20):
        """curl in the guest (-sS, --max-time 10, the test's CA)."""
        return self.guest.run("curl", "-sS", "--max-time", "10", "--cacert", self.cert, *args,
                              timeout=timeout)

    def proxy_url(self, scheme="http", auth=None):
        port = CONNECT_PORT if scheme == "http" else SOCKS_PORT
        return "%s://%s%s:%d" % (scheme, auth + "@" if auth else "", GW, port)

    def tunnel(self, target, src=GUEST_A, auth=None):
        """A CONNECT to target from the guest: (socket, status, headers)."""
        s = self.gconnect(CONNECT_PORT, src=src)
        status, headers, _ = connect_request(s, target, auth=auth)
        return s, status, headers

    def socks_tunnel(self, host, port, src=GUEST_A, **kw):
        """A SOCKS5 CONNECT from the guest: (socket, reply code)."""
        s = self.gconnect(SOCKS_PORT, src=src)
        return s, socks5(s, host, port, **kw)

    def resolve_in_guest(self, name, src=GUEST_A, qtype="A"):
        """The addresses (qtype A or AAAA) moat's DNS answers the guest
        (from src) for name."""
        from dnsfixture import Response, build_query
        with self.guest.inside():
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            u.bind((src, 0))
            u.settimeout(3)
            u.sendto(build_query(name, qtype), (GW, DNS_PORT))
            return Response(u.recv(4096)).addrs()

    def assert_closed(self, s, timeout=5):
        """s is closed by moat (EOF or reset) within timeout."""
        self.assertIn(pf.closed_within(s, timeout), ("eof", "reset"))

    def assert_not_in_log(self, *secrets):
        text = self.log()
        for x in secrets:
            self.assertNotIn(x, text, "a secret in moat's log")
