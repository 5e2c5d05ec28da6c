// Micro benchmarks of the fast path (perf/README.md): pod-table lookups, parse + Geneve
// encapsulation, the node's pods stage and the completion of partial checksums, over
// bursts of 32. Only the stage under test
// is timed, with the TSC; the time is fed to google-benchmark as manual time, so its
// items_per_second (packets) covers the same region as the cycles/pkt counter.
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>

#include <benchmark/benchmark.h>
#include <rte_atomic.h>
#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_memcpy.h>
#include <rte_tcp.h>

#include "dataplane/flow_table.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/offload.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using ztg::test::Harness;

namespace {

constexpr uint32_t kStream = 1u << 20; // source addresses, cycled through
constexpr uint32_t kRingBursts = 64;   // bursts of mbufs, cycled through (2048 mbufs)
constexpr uint16_t kFrameLen = 64;     // Ethernet + IPv4 + TCP + 10 bytes of payload

// The i-th address of a fixed permutation of 10.0.0.0/8 (an odd multiplier is a bijection
// mod 2^24): pods are 0..n-1; the addresses from n up share the range but are not pods.
Ip4 addr(uint32_t i) {
    return Ip4::from_host(0x0A000000u | ((i * 0x9E3779B1u) & 0xFFFFFFu));
}

// A harness whose pod table holds `pods` pods, and a stream of source addresses drawn
// uniformly from them 90% of the time, else from non-pods: no locality, the worst case
// for the caches once the table outgrows them.
struct World {
    std::unique_ptr<Harness> h;
    std::vector<Ip4> stream;
    std::vector<uint8_t> pod; // [i]: stream[i] is a pod

    explicit World(uint32_t pods) {
        const uint32_t capacity = std::max(1024u, pods + pods / 4);
        h = std::make_unique<Harness>(capacity);
        // Every pod already seen on the pods port (from the MAC make_frame uses), as in a
        // steady state: the stage then posts no PodSeen events.
        const rte_ether_addr mac{{0x02, 0, 0, 0, 0x02, 0x03}};
        const PodLocation loc = PodLocation::of(Harness::kPods, mac);
        for (uint32_t i = 0; i < pods; i++)
            if (!h->pods->add(addr(i)) || !h->pods->set_location(addr(i), loc)) std::abort();
        std::mt19937 gen(42);
        auto rng = [&gen] { return uint32_t(gen()); };
        stream.resize(kStream);
        pod.resize(kStream);
        for (uint32_t i = 0; i < kStream; i++) {
            pod[i] = rng() % 10 != 0;
            stream[i] = pod[i] ? addr(rng() % pods) : addr(pods + rng() % kStream);
        }
    }
};

// Built once per pod count (a million adds take a while); cleared by main before EAL goes.
std::map<uint32_t, std::unique_ptr<World>> g_worlds;

World& world(int64_t pods) {
    auto& w = g_worlds[uint32_t(pods)];
    if (!w) w = std::make_unique<World>(uint32_t(pods));
    return *w;
}

// kRingBursts bursts of 64-byte TCP frames (pod -> service VIP), restored after each use
// from a pristine copy, with the next source address of the stream. Never freed or
// allocated while timing.
struct Ring {
    std::vector<rte_mbuf*> m = std::vector<rte_mbuf*>(kRingBursts * kBurst);
    std::vector<uint8_t> pristine;
    const World& w;
    uint32_t next_src = 0;
    std::vector<uint32_t> pods = std::vector<uint32_t>(kRingBursts); // [burst]: pod frames in it

    explicit Ring(const World& world_) : w(world_) {
        test::FrameSpec f;
        f.payload = kFrameLen - 54;
        pristine = test::make_frame(f);
        if (pristine.size() != kFrameLen ||
            rte_pktmbuf_alloc_bulk(w.h->pool, m.data(), unsigned(m.size())) != 0)
            std::abort();
        for (uint32_t b = 0; b < kRingBursts; b++) restore(b);
    }
    ~Ring() {
        for (rte_mbuf* x : m) rte_pktmbuf_free(x);
    }
    rte_mbuf** burst(uint32_t b) { return &m[b * kBurst]; }

    void restore(uint32_t b) {
        pods[b] = 0;
        for (uint16_t i = 0; i < kBurst; i++) {
            pods[b] += w.pod[next_src % kStream];
            rte_mbuf* x = burst(b)[i];
            x->data_off = RTE_PKTMBUF_HEADROOM;
            x->data_len = kFrameLen;
            x->pkt_len = kFrameLen;
            auto* d = rte_pktmbuf_mtod(x, uint8_t*);
            rte_mov64(d, pristine.data());
            auto* ip = reinterpret_cast<rte_ipv4_hdr*>(d + sizeof(rte_ether_hdr));
            ip->src_addr = w.stream[next_src++ % kStream].raw;
            ip->hdr_checksum = 0;
            ip->hdr_checksum = rte_ipv4_cksum(ip);
        }
    }
};

double g_tsc_hz = 0;

// Per-burst times of the running benchmark, in quarter cycles a packet (the last bucket
// holds everything from 1024 cycles up): their median is the figure a shared machine
// does not move much, since a burst the scheduler preempted lands in the tail instead of
// raising the mean. Benchmarks run one at a time, in this thread.
constexpr uint32_t kHistBuckets = 4096;
std::array<uint64_t, kHistBuckets> g_hist{};

// Times f() with the TSC; the compiler barriers keep the work between the two reads.
template <class F>
void timed(benchmark::State& state, uint64_t& cycles, F&& f) {
    const uint64_t t0 = rte_rdtsc();
    rte_compiler_barrier();
    f();
    rte_compiler_barrier();
    const uint64_t dt = rte_rdtsc() - t0;
    cycles += dt;
    g_hist[std::min<uint64_t>(dt * 4 / kBurst, kHistBuckets - 1)]++;
    state.SetIterationTime(double(dt) / g_tsc_hz);
}

// cycles/pkt: the mean, which items_per_second also gives; p50 cycles/pkt: the median
// burst's. Resets the histogram for the next benchmark.
void report(benchmark::State& state, uint64_t cycles) {
    const double pkts = double(state.iterations()) * kBurst;
    state.counters["cycles/pkt"] = double(cycles) / pkts;
    uint64_t seen = 0;
    uint32_t b = 0;
    while (b + 1 < kHistBuckets && 2 * (seen + g_hist[b]) < uint64_t(state.iterations()))
        seen += g_hist[b++];
    state.counters["p50 cycles/pkt"] = (b + 0.5) / 4;
    g_hist = {};
    state.SetItemsProcessed(int64_t(pkts));
}

// What timed() costs with nothing inside: the floor under every figure below.
void BM_rdtsc_only(benchmark::State& state) {
    uint64_t cycles = 0;
    for (auto _ : state) timed(state, cycles, [] {});
    report(state, cycles);
}

// What the untimed restore of a burst costs (excluded from the other figures).
void BM_restore_only(benchmark::State& state) {
    Ring r(world(10));
    uint64_t cycles = 0;
    uint32_t b = 0;
    for (auto _ : state) {
        timed(state, cycles, [&] { r.restore(b); });
        b = (b + 1) % kRingBursts;
    }
    report(state, cycles);
}

// PodTable::lookup_bulk over bursts of 32 source addresses.
void BM_classify(benchmark::State& state) {
    const World& w = world(state.range(0));
    uint64_t cycles = 0, hits = 0;
    uint32_t off = 0;
    for (auto _ : state) {
        const Ip4* keys = &w.stream[off];
        off = (off + kBurst) % kStream;
        uint64_t found = 0;
        timed(state, cycles, [&] { found = w.h->pods->lookup_bulk(keys, kBurst); });
        benchmark::DoNotOptimize(found);
        hits += uint64_t(std::popcount(found));
    }
    report(state, cycles);
    state.counters["hit"] = double(hits) / (double(state.iterations()) * kBurst);
}

// parse_frame + encapsulate of every frame of a burst (no classification).
void BM_parse_encap(benchmark::State& state) {
    World& w = world(10);
    Ring r(w);
    const EncapTemplate& tmpl = w.h->snap.outbound().tmpl;
    uint64_t cycles = 0, ok = 0;
    uint32_t b = 0;
    for (auto _ : state) {
        rte_mbuf** pkts = r.burst(b);
        timed(state, cycles, [&] {
            for (uint16_t i = 0; i < kBurst; i++) {
                const Parsed p = parse_frame(pkts[i]);
                ok += encapsulate(pkts[i], p, tmpl);
            }
        });
        r.restore(b);
        b = (b + 1) % kRingBursts;
    }
    if (ok != uint64_t(state.iterations()) * kBurst) state.SkipWithError("encapsulate failed");
    report(state, cycles);
}

// The whole node stage for a pods port, node_from_pods: parse, classify, encapsulate (or
// pass to the kernel twin), queue into ctx.tx[]. The mbufs are taken back and restored.
// Argument vector: 1 the vector path (dpdk.fast_path: vector, the default), 0 the scalar one.
void BM_classify_encap(benchmark::State& state) {
    World& w = world(state.range(0));
    Harness& h = *w.h;
    h.ctx.vector_path = state.range(1) != 0;
    Ring r(w);
    uint64_t cycles = 0, redirected = 0, events = 0;
    uint32_t b = 0;
    for (auto _ : state) {
        rte_mbuf** pkts = r.burst(b);
        timed(state, cycles, [&] { node_from_pods(h.ctx, Harness::kPods, pkts, kBurst); });
        const size_t zt = h.take(Harness::kZt).size();
        if (zt + h.take(Harness::kPodsTwin).size() != kBurst) {
            state.SkipWithError("the stage dropped frames");
            break;
        }
        redirected += zt;
        events += h.events.consume_all([](const Event&) {});
        r.restore(b);
        b = (b + 1) % kRingBursts;
    }
    report(state, cycles);
    state.counters["redirect"] = double(redirected) / (double(state.iterations()) * kBurst);
    state.counters["events"] = double(events); // worker -> control: expected 0
}

// The node stage while the control thread changes the pod table as fast as it can (issue
// 5, item 5): a writer thread on the other CPU adds, locates and deletes 2,048 pods that
// send nothing, round after round (deletes are reclaimed after QSBR grace periods, which
// the stage's thread reports after every burst, as a worker does). The stage classifies
// the steady pods' traffic meanwhile; a burst whose redirects differ from its pod frames
// is counted in `errors` (lost or misclassified: expected 0). updates/s counts adds,
// set_locations and deletes; bytes/pod is the table's memory over its capacity.
void BM_classify_encap_churn(benchmark::State& state) {
    World& w = world(state.range(0));
    Harness& h = *w.h;
    h.ctx.vector_path = true; // the default path
    Ring r(w);
    constexpr uint32_t kChurn = 2048; // 10,000 + 2,048 fit the capacity of 12,500
    const uint32_t first = uint32_t(state.range(0)) + kStream; // past the stream's non-pods
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> updates{0};
    h.rcu->reader_start(0);
    std::thread writer([&] {
        cpu_set_t cpus; // the control thread's CPU, away from the stage's
        CPU_ZERO(&cpus);
        CPU_SET(1 % std::thread::hardware_concurrency(), &cpus);
        pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
        const PodLocation loc = PodLocation::of(Harness::kPods, {{0x02, 0, 0, 0, 0x02, 0x09}});
        uint64_t n = 0;
        while (!stop.load(std::memory_order_relaxed)) {
            for (uint32_t j = 0; j < kChurn; j++)
                if (!h.pods->add(addr(first + j)) || !h.pods->set_location(addr(first + j), loc))
                    std::abort();
            for (uint32_t j = 0; j < kChurn; j++)
                if (!h.pods->del(addr(first + j))) std::abort();
            n += 3 * kChurn;
            updates.store(n, std::memory_order_relaxed);
        }
        for (uint32_t j = 0; j < kChurn; j++) h.pods->del(addr(first + j));
    });
    uint64_t cycles = 0, errors = 0;
    uint32_t b = 0;
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t u0 = updates.load(std::memory_order_relaxed);
    for (auto _ : state) {
        rte_mbuf** pkts = r.burst(b);
        timed(state, cycles, [&] { node_from_pods(h.ctx, Harness::kPods, pkts, kBurst); });
        h.rcu->quiescent(0);
        const size_t zt = h.take(Harness::kZt).size();
        const size_t twin = h.take(Harness::kPodsTwin).size();
        errors += zt != r.pods[b] || zt + twin != kBurst;
        h.events.consume_all([](const Event&) {});
        r.restore(b);
        b = (b + 1) % kRingBursts;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t u1 = updates.load(std::memory_order_relaxed);
    stop.store(true, std::memory_order_relaxed);
    h.rcu->reader_stop(0); // the writer's last grace periods no longer wait for us
    writer.join();
    h.pods->reclaim();
    report(state, cycles);
    state.counters["updates/s"] = double(u1 - u0) / secs;
    state.counters["errors"] = double(errors);
    state.counters["bytes/pod"] = double(h.pods->memory_bytes()) / h.pods->capacity();
}

// complete_partial_l4_checksum over bursts of 32 TCP frames of one size (64 or 1500 bytes),
// whose checksum is partial (the pseudo sum a pod with tx checksumming on leaves: each is
// completed) or already complete (only the pseudo sum and the compare). The frames are
// parsed, untimed, when their burst is restored right before it is timed, so their bytes
// are in the caches as after the PMD's copy into the mbuf.
void BM_complete_csum(benchmark::State& state) {
    const auto len = uint16_t(state.range(0));
    const bool partial = state.range(1) != 0;
    World& w = world(10);
    test::FrameSpec f;
    f.payload = uint16_t(len - 54);
    std::vector<uint8_t> pristine = test::make_frame(f);
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(&pristine[sizeof(rte_ether_hdr)]);
    auto* tcp = reinterpret_cast<rte_tcp_hdr*>(ip + 1);
    tcp->cksum = 0;
    tcp->cksum = partial ? rte_ipv4_phdr_cksum(ip, 0) : rte_ipv4_udptcp_cksum(ip, tcp);
    std::vector<rte_mbuf*> m(kRingBursts * kBurst);
    if (pristine.size() != len ||
        rte_pktmbuf_alloc_bulk(w.h->pool, m.data(), unsigned(m.size())) != 0)
        std::abort();
    Parsed p[kBurst];
    uint64_t cycles = 0, done = 0;
    uint32_t b = 0;
    for (auto _ : state) {
        rte_mbuf** pkts = &m[b * kBurst];
        for (uint16_t i = 0; i < kBurst; i++) {
            pkts[i]->data_off = RTE_PKTMBUF_HEADROOM;
            pkts[i]->data_len = len;
            pkts[i]->pkt_len = len;
            rte_memcpy(rte_pktmbuf_mtod(pkts[i], uint8_t*), pristine.data(), len);
            p[i] = parse_frame(pkts[i]);
        }
        timed(state, cycles, [&] {
            for (uint16_t i = 0; i < kBurst; i++)
                done += complete_partial_l4_checksum(pkts[i], p[i]);
        });
        b = (b + 1) % kRingBursts;
    }
    for (rte_mbuf* x : m) rte_pktmbuf_free(x);
    if (done != (partial ? uint64_t(state.iterations()) * kBurst : 0))
        state.SkipWithError("completed the wrong frames");
    report(state, cycles);
}

// FlowTable (dataplane/flow_table.hpp): bursts of 32 lookups of present flows (hit) or of
// absent ones (miss: what every TCP packet of a pod pays once proxied flows exist), and of
// inserts into an emptied table, at `flows` flows out of a capacity of twice as many.
struct FlowWorld {
    Rcu rcu{1};
    FlowTable t;
    std::vector<FlowKey> present, absent;
    explicit FlowWorld(uint32_t flows) : t("bench_flows_" + std::to_string(flows), 2 * flows, rcu) {
        std::mt19937 rng(7);
        for (uint32_t i = 0; i < flows; i++) {
            const FlowKey k{Ip4{uint32_t(rng())}, Ip4{uint32_t(rng())}, Be16{uint16_t(rng())},
                            Be16{uint16_t(rng())}};
            if (t.learn(k, 1, true, false) == FlowTable::Learn::Inserted) present.push_back(k);
            FlowKey a = k;
            a.cport.raw ^= 0x5a5a; // same addresses, another port
            absent.push_back(a);
        }
    }
};

FlowWorld& flow_world(int64_t flows) {
    static std::map<int64_t, std::unique_ptr<FlowWorld>> w;
    auto& p = w[flows];
    if (!p) {
        test::eal_once();
        p = std::make_unique<FlowWorld>(uint32_t(flows));
    }
    return *p;
}

void flow_lookup(benchmark::State& state, bool hit) {
    FlowWorld& w = flow_world(state.range(0));
    const std::vector<FlowKey>& keys = hit ? w.present : w.absent;
    uint64_t cycles = 0, found = 0;
    size_t off = 0;
    for (auto _ : state) {
        if (off + kBurst > keys.size()) off = 0;
        const FlowKey* k = &keys[off];
        off += kBurst;
        uint32_t n = 0;
        timed(state, cycles, [&] {
            for (uint16_t i = 0; i < kBurst; i++) w.t.prefetch(k[i]);
            for (uint16_t i = 0; i < kBurst; i++) n += w.t.touch(k[i], 1, false) != FlowKind::None;
        });
        found += n;
    }
    report(state, cycles);
    state.counters["hit"] = double(found) / (double(state.iterations()) * kBurst);
    state.counters["bytes/flow"] = double(w.t.memory_bytes()) / w.t.capacity();
}
void BM_flow_lookup_hit(benchmark::State& state) {
    flow_lookup(state, true);
}
void BM_flow_lookup_miss(benchmark::State& state) {
    flow_lookup(state, false);
}

void BM_flow_insert(benchmark::State& state) {
    FlowWorld& w = flow_world(state.range(0));
    uint64_t cycles = 0, inserted = 0;
    size_t off = 0;
    for (auto _ : state) {
        if (off + kBurst > w.present.size()) {
            state.PauseTiming();
            w.t.expire(1000, 1, 1); // empties the table (one grace period, untimed)
            state.ResumeTiming();
            off = 0;
        }
        const FlowKey* k = &w.present[off];
        off += kBurst;
        uint32_t n = 0;
        timed(state, cycles, [&] {
            for (uint16_t i = 0; i < kBurst; i++)
                n += w.t.learn(k[i], 1, true, false) == FlowTable::Learn::Inserted;
        });
        inserted += n;
    }
    report(state, cycles);
    state.counters["inserted"] = double(inserted) / (double(state.iterations()) * kBurst);
}

} // namespace

BENCHMARK(BM_rdtsc_only)->UseManualTime();
BENCHMARK(BM_restore_only)->UseManualTime();
BENCHMARK(BM_classify)->ArgName("pods")->Arg(10)->Arg(10000)->Arg(1000000)->UseManualTime();
BENCHMARK(BM_parse_encap)->UseManualTime();
BENCHMARK(BM_classify_encap)
    ->ArgNames({"pods", "vector"})
    ->ArgsProduct({{10, 10000, 1000000}, {0, 1}})
    ->UseManualTime();
BENCHMARK(BM_complete_csum)
    ->ArgNames({"bytes", "partial"})
    ->ArgsProduct({{64, 1500}, {0, 1}})
    ->UseManualTime();
BENCHMARK(BM_flow_lookup_hit)->ArgName("flows")->Arg(1000)->Arg(100000)->UseManualTime();
BENCHMARK(BM_flow_lookup_miss)->ArgName("flows")->Arg(1000)->Arg(100000)->UseManualTime();
BENCHMARK(BM_flow_insert)->ArgName("flows")->Arg(100000)->UseManualTime();
BENCHMARK(BM_classify_encap_churn)->ArgName("pods")->Arg(10000)->UseManualTime()->MinTime(2.0);

int main(int argc, char** argv) {
    // The harness's EAL (no hugepages, -m 512, or ZTG_TEST_EAL_MEM MB) holds all of this:
    // the full run needs between 128 and 256 MB.
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    test::eal_once();
    g_tsc_hz = double(rte_get_tsc_hz());
    benchmark::AddCustomContext("tsc_hz", std::to_string(rte_get_tsc_hz()));
    benchmark::RunSpecifiedBenchmarks();
    g_worlds.clear(); // before the EAL cleanup that eal_once registered with atexit
    benchmark::Shutdown();
    return 0;
}
