#include "tests/support/harness.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <rte_eal.h>
#include <rte_ip.h>
#include <unistd.h>

#include "control/ether.hpp"
#include "control/snapshot_builder.hpp"
#include "pipelines/node.hpp"

namespace ztg::test {

void eal_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        std::string prefix = "--file-prefix=ztg-test-" + std::to_string(getpid());
        // ZTG_TEST_EAL_MEM (MB) lets benchmarks with a million pods ask for more memory.
        const char* mem = std::getenv("ZTG_TEST_EAL_MEM");
        const std::string mb = mem != nullptr ? mem : "512";
        const char* args[] = {
            "test",           "--no-huge",           "-m", mb.c_str(), "--no-pci",
            "--no-telemetry", "--log-level=*:error", "-l", "0",        prefix.c_str()};
        std::vector<char*> argv;
        for (const char* a : args) argv.push_back(const_cast<char*>(a));
        if (rte_eal_init(int(argv.size()), argv.data()) < 0) {
            std::fprintf(stderr, "EAL init failed\n");
            std::abort();
        }
        std::atexit([] { rte_eal_cleanup(); });
    });
}

Config lab_config() {
    Config c;
    c.role = Role::Node;
    c.tunnel.local_ip = ip4(10, 244, 2, 1);
    c.tunnel.remote_ip = ip4(10, 244, 2, 10);
    c.tunnel.next_hop_mac = Mac{0x02, 0, 0, 0, 0x02, 0x0a};
    c.tunnel.inner_src_mac = {0x02, 0, 0, 0, 0x7f, 0x01};
    c.tunnel.inner_dst_mac = {0x02, 0, 0, 0, 0x7f, 0x02};
    return c;
}

namespace {

// Devices as Harness lays them out.
Topology lab_topology(bool pods_twin) {
    Topology t;
    t.devs.resize(4);
    t.devs[Harness::kPods] = {0, DevKind::Pods, pods_twin ? Harness::kPodsTwin : kNoDev, {}};
    t.devs[Harness::kPodsTwin] = {1, DevKind::Twin, Harness::kPods, {}};
    t.devs[Harness::kZt] = {2, DevKind::Ztunnel, Harness::kZtTwin, {}};
    t.devs[Harness::kZtTwin] = {3, DevKind::Twin, Harness::kZt, {}};
    t.link = Harness::kZt;
    return t;
}

} // namespace

Snapshot lab_snapshot() {
    const Config c = lab_config();
    Topology t = lab_topology(true);
    t.devs[t.link].mac = {{0x02, 0, 0, 0, 0x01, 0x0a}}; // the outer source
    return *build_snapshot(c, t, to_ether(*c.tunnel.next_hop_mac), 0);
}

Harness::Harness(uint32_t pod_capacity, bool pods_twin) {
    eal_once();
    static int n = 0;
    const std::string id = std::to_string(n++);
    pool = rte_pktmbuf_pool_create(("tp" + id).c_str(), 8191, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   SOCKET_ID_ANY);
    rcu = std::make_unique<Rcu>(1);
    pods = std::make_unique<PodTable>("tpods" + id, pod_capacity, *rcu);
    if (pool == nullptr || !rcu->ok() || !pods->ok()) std::abort();
    topo = lab_topology(pods_twin);
    snap = lab_snapshot();
    shared.topo = &topo;
    shared.pods = pods.get();
    shared.rcu = rcu.get();
    shared.pool = pool;
    shared.snapshot.store(&snap, std::memory_order_release);
    counters = std::vector<DeviceCounters>(topo.devs.size());
    ctx.id = 0;
    ctx.shared = &shared;
    ctx.counters = &counters;
    ctx.events = &events;
    ctx.tx.assign(topo.devs.size(), TxQueue{});
    ctx.tx_dirty.reserve(8);
    ctx.snap = &snap;
    // ZTG_TEST_FAST_PATH=scalar: the node's pods stage on its scalar path (the unit suites
    // that run it are registered once per path, tests/meson.build).
    const char* path = std::getenv("ZTG_TEST_FAST_PATH");
    ctx.vector_path = path == nullptr || std::string(path) != "scalar";
}

Harness::~Harness() {
    for (uint16_t d = 0; d < ctx.tx.size(); d++)
        for (rte_mbuf* m : take(d)) rte_pktmbuf_free(m);
    pods.reset();
    rcu.reset();
    rte_mempool_free(pool);
}

void Harness::set_snapshot(const Snapshot& s) {
    snap = s;
    ctx.snap = &snap;
}

rte_mbuf* Harness::frame(const std::vector<uint8_t>& bytes) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (m == nullptr) std::abort();
    char* p = rte_pktmbuf_append(m, uint16_t(bytes.size()));
    if (p == nullptr) std::abort();
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    return m;
}

void Harness::run_pods(std::vector<rte_mbuf*> pkts) {
    for (size_t i = 0; i < pkts.size(); i += kBurst) {
        const uint16_t n = uint16_t(std::min<size_t>(kBurst, pkts.size() - i));
        node_from_pods(ctx, kPods, pkts.data() + i, n);
    }
}

std::vector<rte_mbuf*> Harness::take(uint16_t dev) {
    TxQueue& q = ctx.tx[dev];
    std::vector<rte_mbuf*> out(q.pkts.begin(), q.pkts.begin() + q.n);
    q.n = 0;
    ctx.tx_dirty.clear();
    return out;
}

std::vector<uint8_t> make_frame(const FrameSpec& f) {
    std::vector<uint8_t> b;
    // push_back, not b.insert(b.end(), l): GCC 12 -O3 raises a false -Wstringop-overflow on
    // the insert of an initializer_list into a growing vector (the range it derives is bogus).
    auto put = [&](std::initializer_list<uint8_t> l) {
        for (const uint8_t x : l) b.push_back(x);
    };
    auto put16 = [&](uint16_t v) { put({uint8_t(v >> 8), uint8_t(v)}); };
    auto put32 = [&](uint32_t v) {
        put16(uint16_t(v >> 16));
        put16(uint16_t(v));
    };
    put({0x02, 0, 0, 0, 0x01, 0x03, 0x02, 0, 0, 0, 0x02, 0x03}); // dst: twin, src: pod
    if (f.vlan >= 0) {
        put16(0x8100);
        put16(uint16_t(f.vlan));
    }
    put16(0x0800);
    const size_t ip = b.size();
    const uint16_t l4 = f.proto == 6 ? 20 : f.proto == 17 ? 8 : 0;
    const uint16_t total = uint16_t(20 + l4 + f.payload);
    put({0x45, f.tos});
    put16(total);
    put16(0x1234);
    put16(f.frag);
    put({f.ttl, f.proto});
    put16(0);
    put32(f.src);
    put32(f.dst);
    uint32_t sum = 0;
    for (size_t i = ip; i < ip + 20; i += 2) sum += uint32_t(b[i]) << 8 | b[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    b[ip + 10] = uint8_t(~sum >> 8);
    b[ip + 11] = uint8_t(~sum);
    if (f.proto == 6) {
        put16(f.sport);
        put16(f.dport);
        put32(1);
        put32(0);
        put({0x50, 0x02});
        put16(64240);
        put16(0);
        put16(0);
    } else if (f.proto == 17) {
        put16(f.sport);
        put16(f.dport);
        put16(uint16_t(8 + f.payload));
        put16(0);
    }
    for (uint16_t i = 0; i < f.payload; i++) b.push_back(uint8_t(i));
    return b;
}

// Bytes of outer Ethernet/IPv4/UDP/Geneve(+options) around an inner Ethernet frame.
std::vector<uint8_t> geneve(const Outer& o, const std::vector<uint8_t>& inner) {
    std::vector<uint8_t> b = {0x02, 0, 0, 0, 0x01, 0x0a, 0x02, 0, 0, 0, 0x02, 0x0a, 0x08, 0x00};
    const uint16_t glen = uint16_t(8 + 4 * o.opt_words);
    const uint16_t udp_len = uint16_t(8 + glen + inner.size());
    const uint16_t total = uint16_t(20 + udp_len);
    const size_t ip = b.size();
    b.insert(b.end(),
             {0x45, o.ecn, uint8_t(total >> 8), uint8_t(total), 0, 0, 0x40, 0, 64, 17, 0, 0});
    for (uint32_t a : {o.src, o.dst})
        b.insert(b.end(), {uint8_t(a >> 24), uint8_t(a >> 16), uint8_t(a >> 8), uint8_t(a)});
    uint32_t sum = 0;
    for (size_t i = ip; i < ip + 20; i += 2) sum += uint32_t(b[i]) << 8 | b[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    const uint16_t ck = uint16_t(~sum ^ (o.bad_ip_checksum ? 1 : 0));
    b[ip + 10] = uint8_t(ck >> 8);
    b[ip + 11] = uint8_t(ck);
    b.insert(b.end(), {0xd0, 0x00, uint8_t(o.dport >> 8), uint8_t(o.dport), uint8_t(udp_len >> 8),
                       uint8_t(udp_len), 0, 0});
    b.insert(b.end(),
             {uint8_t(o.version << 6 | o.opt_words), o.flags, uint8_t(o.proto >> 8),
              uint8_t(o.proto), uint8_t(o.vni >> 16), uint8_t(o.vni >> 8), uint8_t(o.vni), 0});
    for (int w = 0; w < o.opt_words; w++) b.insert(b.end(), {0x01, 0x02, 0x03, 0x04});
    b.insert(b.end(), inner.begin(), inner.end());
    return b;
}

} // namespace ztg::test
