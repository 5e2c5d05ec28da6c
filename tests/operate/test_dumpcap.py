"""Live capture with dpdk-dumpcap: with hugepages ztgeneve is a DPDK primary a secondary
can attach to; dumpcap captures 100 frames out of the ztunnel port into a pcapng that tshark
decodes as Geneve VNI 1001 carrying the pod's packet to the VIP. The test reserves its
hugepages (vm.nr_hugepages, a hugetlbfs mount of its own) and gives them back; it is skipped,
saying why, where they cannot be had."""
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

import netns
from minilab import VIP, ZT_MAC, sh, wait
from opslab import node_config, ops_lab

PAGES = 384  # 2 MiB each: ztgeneve's 256 MB and dumpcap's pool
NR = Path("/proc/sys/vm/nr_hugepages")


def free_pages():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def hugepages():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = int(NR.read_text())
    mnt = tempfile.mkdtemp(prefix="ztd-huge-")
    mounted = False
    try:
        NR.write_text(str(before + PAGES))
        if free_pages() < PAGES:
            pytest.skip(f"cannot reserve {PAGES} hugepages of 2 MiB (free after asking: "
                        f"{free_pages()})")
        r = subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount hugetlbfs: {r.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", mnt], capture_output=True)
        os.rmdir(mnt)
        NR.write_text(str(before))


def test_dumpcap_captures_geneve_from_the_ztunnel_port(hugepages, tmp_path):
    with ops_lab("ztd-", tmp_path, endpoint=False, start=False) as lab:
        # Only the redirected frames cross the ztunnel port: a static next hop (no ARP), and
        # ztunnel's kernel drops the Geneve it has no device for (no ICMP back).
        sh(lab.zt_ns, "iptables -w -A INPUT -p udp --dport 6081 -j DROP")
        cfg = node_config(lab, str(tmp_path / "huge.yaml"), metrics=False, huge_dir=hugepages,
                          next_hop_mac=ZT_MAC)
        lab.start_node(cfg)
        out, log_path = tmp_path / "zt.pcapng", tmp_path / "dumpcap.log"
        with open(log_path, "w") as log:
            cap = subprocess.Popen(netns.ns_cmd(lab.node_ns, "dpdk-dumpcap", "--file-prefix",
                                                lab.node_prefix, "-i", "net_af_packet_zt",
                                                "-c", 100, "-w", out),
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            # Its status line starts once it is attached (it says "Capturing on" only at exit:
            # stdout is a file, buffered).
            assert wait(lambda: "Packets captured:" in log_path.read_text()
                        or cap.poll() is not None, 20), log_path.read_text()
            assert cap.poll() is None, log_path.read_text()
            lab.flow("productpage", 300, 300)  # 300 TCP frames to the VIP: redirected
            cap.wait(20)
        finally:
            if cap.poll() is None:
                cap.kill()
                cap.wait(5)
        assert cap.returncode == 0, log_path.read_text()
        lab.z.stop()
        assert lab.z.returncode == 0
        r = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-E", "separator=|",
                            "-e", "geneve.vni", "-e", "ip.dst", "-e", "tcp.dstport"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = [l.split("|") for l in r.stdout.splitlines()]
        assert len(rows) == 100
        for vni, dsts, dport in rows:
            assert int(vni, 0) == 1001 and dsts.split(",") == [lab.ip("zt"), VIP] and dport == "9080", \
                (vni, dsts, dport)
