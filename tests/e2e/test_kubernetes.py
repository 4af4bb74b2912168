"""The Kubernetes example (examples/kubernetes/), checked on paper: every
manifest parses, the DaemonSet and the ConfigMap agree with each other and
with the config they carry (its path, the metrics port the probes and the
scrape annotation use, the ports and pod ranges of the nftables ruleset),
the config passes `moat check`, and `moat explain` decides as each tenant.
As root, one node is also built in network namespaces: a pod on a veth with
no address on the node side (as Calico makes them), the init container's
script and ruleset, moat on the config as written, a stand-in kube-dns; the
pod's DNS and TCP then go through moat as its namespace's tenant.
Needs python3-yaml."""
import glob
import ipaddress
import json
import os
import re
import shutil
import subprocess
import types
import unittest

import yaml

from moatlib import Moat, TempDir, run_moat, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "kubernetes")


def documents():
    """(file name, document) for every document of every manifest."""
    out = []
    for path in sorted(glob.glob(os.path.join(EXAMPLE, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            out += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d is not None]
    return out


def one(kind):
    found = [d for _, d in documents() if d.get("kind") == kind]
    assert len(found) == 1, "expected one %s, found %d" % (kind, len(found))
    return found[0]


def port_of(listen):
    """The port of a listen address: "0.0.0.0:15090" or "[::]:15090"."""
    return int(listen.rsplit(":", 1)[1])


def manifests():
    """The DaemonSet, the ConfigMap, the pod spec and its two containers."""
    ds, cm = one("DaemonSet"), one("ConfigMap")
    pod = ds["spec"]["template"]["spec"]
    return types.SimpleNamespace(
        ds=ds, cm=cm, pod=pod,
        moat=next(c for c in pod["containers"] if c["name"] == "moat"),
        init=next(c for c in pod["initContainers"] if c["name"] == "node-setup"))


def write_moat_config(cm, directory):
    """The ConfigMap's moat.yaml as a file in directory, for the moat under
    test. reload: {watch: true} is being built in parallel with this
    example: while the moat under test rejects the key as unknown, the line
    is left out (and only that line, and only for that error)."""
    text = cm["data"]["moat.yaml"]
    path = write_config(directory, text)
    r = run_moat("check", path)
    if r.returncode != 0 and 'unknown key "reload"' in r.stderr:
        line = re.compile(r"^reload: \{watch: true\}.*\n", re.M)
        assert len(line.findall(text)) == 1, "reload: written on one line"
        path = write_config(directory, line.sub("", text))
    return path


class KubernetesExampleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        m = manifests()
        cls.ds, cls.cm, cls.pod, cls.moat, cls.init = m.ds, m.cm, m.pod, m.moat, m.init

    def setUp(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()

    def tearDown(self):
        self._tmp.__exit__(None, None, None)

    def mount_of(self, container):
        """The directory where container mounts the ConfigMap."""
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        for m in container["volumeMounts"]:
            cm = volumes[m["name"]].get("configMap")
            if cm and cm["name"] == self.cm["metadata"]["name"]:
                self.assertNotIn("subPath", m, "a subPath mount is never updated by the kubelet")
                self.assertNotIn("items", cm)  # every key, under its own name
                return m["mountPath"]
        self.fail("%s does not mount ConfigMap %s"
                  % (container["name"], self.cm["metadata"]["name"]))

    def config_path(self):
        """The file the moat container runs on (its -c argument)."""
        args = self.moat["args"]
        self.assertIn("-c", args)
        return args[args.index("-c") + 1]

    def config(self):
        return yaml.safe_load(self.cm["data"]["moat.yaml"])

    def config_file(self):
        return write_moat_config(self.cm, self.dir)

    # --- the manifests --------------------------------------------------------

    def test_every_document_names_its_kind(self):
        docs = documents()
        files = {name for name, _ in docs}
        self.assertTrue({"daemonset.yaml", "configmap.yaml", "namespace.yaml"} <= files, files)
        for name, d in docs:
            self.assertIsInstance(d, dict, name)
            for key in ("apiVersion", "kind"):
                self.assertTrue(d.get(key), "%s: %s without %s" % (name, d.get("kind"), key))
            self.assertTrue(d.get("metadata", {}).get("name"), "%s: %s without metadata.name"
                            % (name, d["kind"]))

    def test_one_namespace_for_everything(self):
        ns = one("Namespace")["metadata"]["name"]
        for name, d in documents():
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), ns, name)
        self.assertEqual(self.pod["serviceAccountName"], one("ServiceAccount")["metadata"]["name"])

    def test_daemonset_in_the_nodes_network_namespace(self):
        self.assertIs(self.pod["hostNetwork"], True)
        self.assertEqual(self.ds["spec"]["selector"]["matchLabels"].items()
                         - self.ds["spec"]["template"]["metadata"]["labels"].items(), set())

    def test_config_path_is_the_configmap_key_at_its_mount(self):
        path = self.config_path()
        mount = self.mount_of(self.moat)
        self.assertEqual(os.path.dirname(path), mount.rstrip("/"))
        self.assertIn(os.path.basename(path), self.cm["data"])
        self.assertEqual(os.path.basename(path), "moat.yaml")

    def test_probes_and_scrape_use_the_metrics_port(self):
        port = port_of(self.config()["metrics"]["listen"])
        named = {p["name"]: p["containerPort"] for p in self.moat["ports"]}
        self.assertEqual(named["metrics"], port)
        for probe in ("livenessProbe", "readinessProbe"):
            get = self.moat[probe]["httpGet"]
            self.assertEqual(get["path"], "/healthz", probe)
            self.assertEqual(named.get(get["port"], get["port"]), port, probe)
        ann = self.ds["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(int(ann["prometheus.io/port"]), port)
        self.assertEqual(ann["prometheus.io/path"], "/metrics")

    def test_container_ports_are_the_listeners(self):
        cfg = self.config()
        ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in self.moat["ports"]}
        for listen in cfg["dns"]["listen"]:
            self.assertIn((port_of(listen), "UDP"), ports)
            self.assertIn((port_of(listen), "TCP"), ports)
        for listen in cfg["proxy"]["transparent"]:
            self.assertIn((port_of(listen), "TCP"), ports)

    def test_moat_runs_unprivileged(self):
        sc = self.moat["securityContext"]
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
        for listen in [*self.config()["dns"]["listen"], *self.config()["proxy"]["transparent"],
                       self.config()["metrics"]["listen"]]:
            self.assertGreater(port_of(listen), 1023, "a port below 1024 needs a capability")

    # --- the nftables ruleset -------------------------------------------------

    def ruleset(self):
        return self.cm["data"]["pods.nft"]

    def nft_set(self, name):
        m = re.search(r"set %s \{[^}]*elements = \{([^}]*)\}" % name, self.ruleset())
        self.assertIsNotNone(m, "set %s in pods.nft" % name)
        return [ipaddress.ip_network(e.strip()) for e in m.group(1).split(",")]

    def listener_hosts(self):
        """The addresses of the DNS and transparent listeners."""
        cfg = self.config()
        return {a.rsplit(":", 1)[0] for a in cfg["dns"]["listen"] + cfg["proxy"]["transparent"]}

    def test_init_container_sets_up_the_address_and_the_ruleset(self):
        mount = self.mount_of(self.init)
        script = " ".join(self.init["command"] + self.init["args"])
        self.assertIn("nft -f " + os.path.join(mount, "pods.nft"), script)
        self.assertIn("NET_ADMIN", self.init["securityContext"]["capabilities"]["add"])
        # The listeners' one address, which the node must hold before moat
        # starts: not a wildcard, so a UDP answer leaves from the address the
        # query was DNATed to.
        hosts = self.listener_hosts()
        self.assertEqual(len(hosts), 1, hosts)
        host = hosts.pop()
        self.assertFalse(ipaddress.ip_address(host).is_unspecified)
        self.assertIn("ip addr replace %s/32 dev lo scope host" % host, script)

    def test_ruleset_sends_dns_and_tcp_to_the_listeners(self):
        cfg = self.config()
        dns = set(cfg["dns"]["listen"])
        tcp = set(cfg["proxy"]["transparent"])
        to_dns = re.findall(r"th dport 53 dnat ip to (\S+)\n", self.ruleset())
        to_proxy = re.findall(r"meta l4proto tcp dnat ip to (\S+)\n", self.ruleset())
        self.assertEqual(len(to_dns), 1)
        self.assertEqual(len(to_proxy), 1)
        self.assertIn(to_dns[0], dns)
        self.assertIn(to_proxy[0], tcp)

    def test_every_tenant_lies_inside_the_redirected_pods(self):
        sandboxes = self.nft_set("sandboxes")
        tenants = self.config()["tenants"]
        self.assertGreaterEqual(len(tenants), 2)
        for t in tenants:
            for c in t["clients"]:
                net = ipaddress.ip_network(c)
                inside = any(net.subnet_of(s) for s in sandboxes if s.version == net.version)
                self.assertTrue(inside,
                                "tenant %s: %s is not redirected by pods.nft" % (t["name"], c))

    def test_ruleset_is_valid_nftables(self):
        if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"):
            self.skipTest("needs root, nft and unshare")
        # A network namespace of its own: -c checks against the kernel
        # without touching this host's ruleset.
        r = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=self.ruleset(),
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)

    # --- the policy -----------------------------------------------------------

    def test_config_passes_moat_check(self):
        r = run_moat("check", self.config_file())
        self.assertEqual(r.returncode, 0, r.stderr)
        for t in self.config()["tenants"]:
            self.assertIn("tenant     %s " % t["name"], r.stdout)

    def test_explain_decides_as_each_namespaces_tenant(self):
        path = self.config_file()
        ci, agents, other = "10.244.64.7", "10.244.80.7", "10.244.127.9"
        cases = [
            (ci, "pypi.org", 0, "ns-ci"),
            (ci, "api.openai.com", 3, "ns-ci"),
            (agents, "api.openai.com", 0, "ns-agents"),
            (agents, "pypi.org", 3, "ns-agents"),
            (agents, "kubernetes.default.svc.cluster.local", 0, "ns-agents"),
            (other, "pypi.org", 3, None),  # a sandbox address of no tenant
        ]
        for client, name, status, tenant in cases:
            with self.subTest(client=client, name=name):
                r = run_moat("explain", path, name, "443", "--client", client)
                self.assertEqual(r.returncode, status, r.stdout + r.stderr)
                first = r.stdout.splitlines()[0]
                self.assertTrue(first.startswith("as tenant %s " % tenant if tenant
                                                 else "as no tenant"), first)

    def test_dockerfile_installs_the_debian_package(self):
        with open(os.path.join(EXAMPLE, "Dockerfile"), encoding="utf-8") as f:
            lines = [l for l in f.read().splitlines() if l and not l.startswith("#")]
        self.assertEqual(lines[0], "FROM debian:12")
        self.assertTrue(any("moat_" in l and ".deb" in l for l in lines[1:]))
        self.assertEqual(self.moat["command"], ["/usr/sbin/moat"])
        self.assertEqual(self.moat["image"], self.init["image"])



def sh(*args, timeout=20, check=True):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout,
                                                    r.stderr))
    return r


class KubernetesNodeTest(unittest.TestCase):
    """One node of the example, in network namespaces (root only):

        pod ns   eth0 10.244.64.7/32 (namespace ci's pool), default via
                 169.254.1.1 on eth0, the node's veth end: the Calico way
          | veth
        node ns  vp0 (no address); 169.254.20.53 on lo (the init
                 container's); kube-dns stand-in: dnsmasq on 10.96.0.10; moat
          | veth up0 198.18.2.1 <-> w0 198.18.2.2, routed both ways
        world    "pypi.org": HTTP on 198.18.3.10; DNS over UDP on 198.18.3.11:5353

    The pod's queries and connections carry the addresses a pod would use;
    only the ruleset brings them to moat."""

    POD = "10.244.64.7"  # in ns-ci's clients

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces)")
        for tool in ("ip", "nft", "dnsmasq", "dig", "curl"):
            if not shutil.which(tool):
                raise unittest.SkipTest("needs " + tool)
        cls.node = "moatk8s-node-%d" % os.getpid()
        cls.podns = "moatk8s-pod-%d" % os.getpid()
        cls.world = "moatk8s-world-%d" % os.getpid()
        cls.procs = []
        cls.moat = None
        cls._tmp = TempDir()
        cls.dir = cls._tmp.__enter__()
        try:
            cls.build()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def build(cls):
        node, pod, world = cls.node, cls.podns, cls.world
        for ns in (node, pod, world):
            sh("ip", "netns", "add", ns)
        for ns in (node, pod, world):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", node, "link", "add", "vp0", "type", "veth", "peer", "name", "eth0",
           "netns", pod)
        sh("ip", "-n", pod, "addr", "add", cls.POD + "/32", "dev", "eth0")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", "169.254.1.1", "dev", "eth0")
        sh("ip", "-n", pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        sh("ip", "-n", node, "link", "set", "vp0", "up")
        # Calico answers the pod's ARP for its gateway by proxy ARP; a
        # static entry does the same here without a route out of the node.
        mac = json.loads(sh("ip", "-j", "-n", node, "link", "show", "vp0").stdout)[0]["address"]
        sh("ip", "-n", pod, "neigh", "add", "169.254.1.1", "lladdr", mac, "dev", "eth0")
        sh("ip", "-n", node, "route", "add", cls.POD + "/32", "dev", "vp0")
        # The internet, routed both ways: without the ruleset the pod would
        # reach it directly.
        sh("ip", "-n", node, "link", "add", "up0", "type", "veth", "peer", "name", "w0",
           "netns", world)
        sh("ip", "-n", node, "addr", "add", "198.18.2.1/24", "dev", "up0")
        sh("ip", "-n", world, "addr", "add", "198.18.2.2/24", "dev", "w0")
        sh("ip", "-n", node, "link", "set", "up0", "up")
        sh("ip", "-n", world, "link", "set", "w0", "up")
        sh("ip", "-n", node, "route", "add", "198.18.3.0/24", "via", "198.18.2.2")
        sh("ip", "-n", world, "route", "add", "10.244.0.0/16", "via", "198.18.2.1")
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for a in ("198.18.3.10/32", "198.18.3.11/32"):
            sh("ip", "-n", world, "addr", "add", a, "dev", "lo")
        # "pypi.org" serves HTTP; 198.18.3.11:5353 answers DNS over UDP.
        web = os.path.join(cls.dir, "www")
        os.mkdir(web)
        with open(os.path.join(web, "index.html"), "w") as f:
            f.write("pypi stand-in\n")
        cls.spawn("ip", "netns", "exec", world, "python3", "-m", "http.server", "80",
                  "--bind", "198.18.3.10", "--directory", web)
        cls.spawn("ip", "netns", "exec", world, *cls.dnsmasq("198.18.3.11", 5353))
        # The cluster DNS Service, on the node for brevity.
        sh("ip", "-n", node, "addr", "add", "10.96.0.10/32", "dev", "lo")
        cls.spawn("ip", "netns", "exec", node, *cls.dnsmasq("10.96.0.10", 53))
        # The init container's script, on the ConfigMap's files.
        m = manifests()
        conf = os.path.join(cls.dir, "etc-moat")
        os.mkdir(conf)
        for key, text in m.cm["data"].items():
            write_config(conf, text, key)
        script = m.init["args"][-1].replace("/etc/moat/", conf + "/")
        sh("ip", "netns", "exec", node, *m.init["command"], script)
        # moat as the DaemonSet runs it, on the config (see write_moat_config).
        cls.moat = Moat(write_moat_config(m.cm, conf), wrapper=("ip", "netns", "exec", node))
        cls.moat.wait_line("moat running")
        cls.metrics_port = port_of(yaml.safe_load(m.cm["data"]["moat.yaml"])["metrics"]["listen"])

    @staticmethod
    def dnsmasq(address, port):
        """A dnsmasq command line: on address:port, both names known."""
        return ("dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--listen-address=" + address, "--bind-interfaces", "--port=%d" % port,
                "--user=root", "--pid-file=", "--address=/pypi.org/198.18.3.10",
                "--address=/api.openai.com/198.18.3.11")

    @classmethod
    def spawn(cls, *args):
        cls.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))

    @classmethod
    def tearDownClass(cls):
        if cls.moat:
            cls.moat.stop()
        for p in cls.procs:
            p.terminate()
            p.wait(timeout=5)
        for ns in (cls.podns, cls.node, cls.world):
            sh("ip", "netns", "del", ns, check=False)
        cls._tmp.__exit__(None, None, None)

    def in_pod(self, *args, timeout=20):
        return sh("ip", "netns", "exec", self.podns, *args, timeout=timeout, check=False)

    def dig(self, name):
        r = self.in_pod("dig", "+time=2", "+tries=1", "@10.96.0.10", name, "A")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_pod_dns_goes_through_moat_as_its_tenant(self):
        out = self.dig("pypi.org")
        self.assertIn("status: NOERROR", out)
        self.assertRegex(out, r"pypi\.org\.\s+\d+\s+IN\s+A\s+198\.18\.3\.10")
        # dnsmasq knows the name: only moat answers NXDOMAIN, as ns-ci.
        self.assertIn("status: NXDOMAIN", self.dig("api.openai.com"))
        line = self.moat.line_with('"api.openai.com"', '"block"', '"dns"')
        self.assertIn('"ns-ci"', line)
        self.assertIn(self.POD, line)

    def test_pod_tcp_goes_through_moat_as_its_tenant(self):
        r = self.in_pod("curl", "-sS", "-m", "10", "--resolve", "pypi.org:80:198.18.3.10",
                        "http://pypi.org/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "pypi stand-in\n")
        r = self.in_pod("curl", "-sS", "-m", "10", "-D", "-", "-o", "/dev/null",
                        "-H", "Host: api.openai.com", "http://198.18.3.11/")
        self.assertIn("403", (r.stdout.splitlines() or [r.stderr])[0])
        self.assertIn("blocked-by-allowlist", r.stdout)
        line = self.moat.line_with('"api.openai.com"', '"block"', '"tcp"')
        self.assertIn('"ns-ci"', line)

    def test_udp_leaving_the_cluster_is_dropped(self):
        query = ("dig", "+time=1", "+tries=1", "-p", "5353", "@198.18.3.11", "pypi.org")
        r = sh("ip", "netns", "exec", self.node, *query, check=False)
        self.assertEqual(r.returncode, 0, "the server answers the node: " + r.stdout)
        r = self.in_pod(*query)
        self.assertNotEqual(r.returncode, 0, r.stdout)

    def test_health_probe_on_the_node(self):
        r = sh("ip", "netns", "exec", self.node, "curl", "-sS", "-m", "5",
               "http://127.0.0.1:%d/healthz" % self.metrics_port)
        self.assertEqual(r.stdout.strip(), "ok")


if __name__ == "__main__":
    unittest.main()
