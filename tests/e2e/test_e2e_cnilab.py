"""The cni lab (tests/tools/lab.py's CniLab, `scripts/lab up --topology cni`) with 110 pods,
under a prefix of its own (ztc-): a node plumbed as kindnet's ptp CNI does, where the kernel
alone carries everything (no ztgeneve runs). Pods reach the gateway and each other, TCP to
the VIP reaches its backend through kube-proxy's DNAT, the node answers ARP for the gateway,
pods keep their offloads, and down() leaves the machine as it found it."""
import json
import os
import subprocess
import time

import pytest

import lab as labtopo
import netns
from tproxy_listener import ListenerProcess

PREFIX = "ztc-"
PODS = 110


def root_state():
    """The root namespace's links and `ip netns list`: what the lab must leave as it was."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = {l.split(":")[1].strip().split("@")[0] for l in links.splitlines() if ":" in l}
    nss = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return names, sorted(nss.splitlines())


@pytest.fixture(scope="module")
def cni(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    t = labtopo.CniLab(PREFIX, pods=PODS, zt_name="zt")
    t.down()  # an earlier run's leftovers
    before = root_state()
    request.addfinalizer(t.down)
    t0 = time.monotonic()
    t.up()
    t.up_s = time.monotonic() - t0
    print(f"\ncni lab: {PODS} pods up in {t.up_s:.2f}s")
    t.root_before = before
    return t


def ping(t, pod, dst):
    r = subprocess.run(netns.ns_cmd(t.ns(pod), "ping", "-n", "-q", "-c", 1, "-W", 2, dst),
                       capture_output=True, text=True, timeout=15)
    return r.returncode == 0


def test_the_topology_is_ptp_style(cni):
    """What kindnet's ptp leaves: a veth per pod whose node end vethXXXXXXXX has no address, a
    scope-link route to its pod and proxy ARP; forwarding on; no iptables rule but the DNAT."""
    pods = cni.all_pods()
    assert len(pods) == PODS + 1 and len({cni.ip(p) for p in pods}) == len(pods)
    assert {labtopo.GW_OCTET, labtopo.ZT_OCTET} & {cni.pods[p] for p in cni.pods} == set()
    assert cni.pods["legacy"] == 20
    node = cni.node_ns
    addrs = {a["ifname"]: [i["local"] for i in a.get("addr_info", []) if i["family"] == "inet"]
             for a in json.loads(labtopo.sh(node, "ip -j addr show"))}
    routes = {r["dst"]: r for r in json.loads(labtopo.sh(node, "ip -j -4 route show"))}
    for pod in pods:
        veth = cni.host_veth(pod)
        assert len(veth) <= 15 and addrs.get(veth) == [], f"{pod}: {veth} {addrs.get(veth)}"
        r = routes[cni.ip(pod)]
        assert (r["dev"], r.get("scope")) == (veth, "link"), r
    assert [d for d, a in addrs.items() if cni.gw_ip in a] == [labtopo.GW_DEV]
    assert "default" not in routes  # no way out
    veth = cni.host_veth("legacy")
    assert labtopo.sh(node, f"sysctl -n net.ipv4.ip_forward net.ipv4.conf.{veth}.proxy_arp").split() == ["1", "1"]
    rules = [l for l in labtopo.sh(node, "iptables-save").splitlines() if l.startswith("-A")]
    assert rules == [f"-A PREROUTING -d {cni.vip}/32 -p tcp -m tcp --dport {cni.vip_port} "
                     f"-j DNAT --to-destination {cni.dnat_to}"]
    with pytest.raises(labtopo.LabError, match="exist already"):
        cni.up()


def test_pods_reach_the_gateway_and_each_other(cni):
    last = list(cni.pods)[-1]
    assert ping(cni, "productpage", cni.gw_ip)
    assert ping(cni, "productpage", cni.ip(last))
    assert ping(cni, last, cni.ip("legacy"))
    assert ping(cni, last, cni.zt_ip)


def test_the_node_answers_arp_for_the_gateway(cni):
    """The pod resolves its gateway to the node's end of its own veth."""
    pod = list(cni.pods)[-2]
    ns = cni.ns(pod)
    labtopo.sh(ns, "ip neigh flush dev eth0")
    assert ping(cni, pod, cni.gw_ip)
    neigh = json.loads(labtopo.sh(ns, f"ip -j neigh show dev eth0 to {cni.gw_ip}"))
    assert [n.get("lladdr") for n in neigh] == [labtopo.node_mac(cni.pods[pod])], neigh


def test_tcp_to_the_vip_reaches_the_backend_through_the_dnat(cni, tmp_path):
    backend_ip, port = cni.dnat_to.split(":")
    backend = next(p for p in cni.pods if cni.ip(p) == backend_ip)
    server = ListenerProcess(cni.ns(backend), str(tmp_path / "backend.log"), port=int(port),
                             mark=0, addr=backend_ip).start()
    try:
        client = list(cni.pods)[-1]
        out = json.loads(netns.client(cni.ns(client), "echo", cni.vip, cni.vip_port,
                                      "--bytes", 200000, timeout=40))
    finally:
        server.stop()
    conn = out["conns"][0]
    assert conn["ok"], conn
    # the backend was reached at its own address: the DNAT changed the VIP on the node
    assert conn["first"].startswith(f"ORIGDST {cni.dnat_to} FROM {cni.ip(client)}:"), conn["first"]
    assert [c["in"] for c in server.closed()] == [200000]


def test_pods_keep_their_offloads(cni):
    for pod in ("productpage", list(cni.pods)[-1], "zt"):
        got = dict(l.split(":", 1) for l in labtopo.sh(cni.ns(pod), "ethtool -k eth0").splitlines() if ":" in l)
        for f in ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload"):
            assert got[f].split()[0] == "on", f"{pod}: {f} {got[f]}"


def test_scripts_lab_refuses_what_it_cannot_build():
    """Option errors come before anything is made (no namespace is touched)."""
    for args in (["up", "--pods", "3"], ["up", "--topology", "cni", "--pod-offloads", "on"],
                 ["up", "--topology", "mesh"], ["up", "--topology", "cni", "--pods", "x"]):
        assert labtopo.main(args) == 2, args
    assert labtopo.main(["up", "--topology", "cni", "--pods", "111"]) == 1


def test_an_endpoint_can_own_ztunnels_link():
    """endpoint=True: ztunnel's end of its veth is ztlink, bare for a ztgeneve role endpoint
    (no address, no ARP), with ztunnel's TPROXY rule; the node still routes 10.244.2.10 to
    the node's end of that veth."""
    t = labtopo.CniLab("ztce-", pods=2, zt_name="zt", endpoint=True, dnat_to=None)
    t.down()
    try:
        t.up()
        link = json.loads(labtopo.sh(t.zt_ns, f"ip -j addr show dev {labtopo.ZT_LINK}"))[0]
        assert "NOARP" in link["flags"] and link["addr_info"] == [], link
        assert "TPROXY" in labtopo.sh(t.zt_ns, "iptables -t mangle -S PREROUTING")
        route = labtopo.sh(t.node_ns, f"ip route show {t.zt_ip}").split()
        assert route[:3] == [t.zt_ip, "dev", t.host_veth("zt")], route
    finally:
        t.down()
    assert t.present() == []


def test_down_removes_everything(cni):
    """Last (it removes the module's lab): every namespace, and the processes in them."""
    sleeper = subprocess.Popen(netns.ns_cmd(cni.ns("legacy"), "sleep", "60"))
    assert labtopo.wait(lambda: labtopo.ns_pids(cni.ns("legacy")), 5)
    t0 = time.monotonic()
    removed = cni.down()
    down_s = time.monotonic() - t0
    print(f"\ncni lab: {PODS} pods down in {down_s:.2f}s")
    assert sleeper.wait(10) is not None
    assert sorted(removed) == sorted(cni.namespaces())
    assert cni.present() == []
    assert root_state() == cni.root_before
