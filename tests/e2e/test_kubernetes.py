"""The Kubernetes example (examples/kubernetes/), checked on paper: every
manifest parses, the DaemonSet and the ConfigMap agree with each other and
with the config they carry (its path, the metrics port the probes and the
scrape annotation use, the ports and pod ranges of the nftables ruleset),
the config passes `moat check`, and `moat explain` decides as each tenant.
Needs python3-yaml; the ruleset is checked with `nft -c` only as root."""
import glob
import ipaddress
import os
import re
import shutil
import subprocess
import unittest

import yaml

from moatlib import TempDir, run_moat, write_config

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


class KubernetesExampleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ds = one("DaemonSet")
        cls.cm = one("ConfigMap")
        cls.pod = cls.ds["spec"]["template"]["spec"]
        cls.moat = next(c for c in cls.pod["containers"] if c["name"] == "moat")
        cls.init = next(c for c in cls.pod["initContainers"] if c["name"] == "nft")

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
        self.fail("%s does not mount ConfigMap %s" % (container["name"], self.cm["metadata"]["name"]))

    def config_path(self):
        """The file the moat container runs on (its -c argument)."""
        args = self.moat["args"]
        self.assertIn("-c", args)
        return args[args.index("-c") + 1]

    def config(self):
        return yaml.safe_load(self.cm["data"]["moat.yaml"])

    def config_file(self):
        """The ConfigMap's moat.yaml in a temporary file, for moat check and
        explain. reload: {watch: true} is being built in parallel with this
        example: while the moat under test rejects the key as unknown, the
        line is left out (and only that line, and only for that error)."""
        text = self.cm["data"]["moat.yaml"]
        path = write_config(self.dir, text)
        r = run_moat("check", path)
        if r.returncode != 0 and 'unknown key "reload"' in r.stderr:
            line = re.compile(r"^reload: \{watch: true\}.*\n", re.M)
            self.assertEqual(len(line.findall(text)), 1, "reload: written on one line")
            path = write_config(self.dir, line.sub("", text))
        return path

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

    def test_init_container_applies_the_ruleset_from_the_configmap(self):
        mount = self.mount_of(self.init)
        script = " ".join(self.init["command"] + self.init["args"])
        self.assertIn(os.path.join(mount, "pods.nft"), script)
        self.assertIn("nft -f", script)
        self.assertIn("NET_ADMIN", self.init["securityContext"]["capabilities"]["add"])
        env = {e["name"]: e for e in self.init["env"]}
        self.assertEqual(env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP")

    def test_ruleset_sends_dns_and_tcp_to_the_listeners(self):
        cfg = self.config()
        dns = {port_of(a) for a in cfg["dns"]["listen"]}
        tcp = {port_of(a) for a in cfg["proxy"]["transparent"]}
        to_dns = re.findall(r"th dport 53 dnat ip to @NODE_IP@:(\d+)", self.ruleset())
        to_proxy = re.findall(r"meta l4proto tcp dnat ip to @NODE_IP@:(\d+)", self.ruleset())
        self.assertEqual(len(to_dns), 1)
        self.assertEqual(len(to_proxy), 1)
        self.assertIn(int(to_dns[0]), dns)
        self.assertIn(int(to_proxy[0]), tcp)

    def test_every_tenant_lies_inside_the_redirected_pods(self):
        sandboxes = self.nft_set("sandboxes")
        tenants = self.config()["tenants"]
        self.assertGreaterEqual(len(tenants), 2)
        for t in tenants:
            for c in t["clients"]:
                net = ipaddress.ip_network(c)
                self.assertTrue(any(net.subnet_of(s) for s in sandboxes if s.version == net.version),
                                "tenant %s: %s is not redirected by pods.nft" % (t["name"], c))

    def test_ruleset_is_valid_nftables(self):
        if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"):
            self.skipTest("needs root, nft and unshare")
        text = self.ruleset().replace("@NODE_IP@", "192.0.2.10")
        # A network namespace of its own: -c checks against the kernel
        # without touching this host's ruleset.
        r = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=text,
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


if __name__ == "__main__":
    unittest.main()
