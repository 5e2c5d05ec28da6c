// ztg_latency: a rate-paced generator and a receiver in one DPDK process, one lcore, one
// TSC, for the latency rows of perf/compare (perf/README.md, "Latency").
//
// Port 0 sends Ethernet/IPv4/TCP frames from the pod 10.244.2.2 to the VIP 10.96.0.10:9080
// whose payload is the TSC read right before rte_eth_tx_burst (8 bytes) and a 16-bit word
// that makes the payload's one's-complement sum constant, so the template's TCP checksum
// stays valid without recomputing it per frame. Port 1 (or port 0 itself when it is the
// only port) receives; a Geneve frame (UDP 6081) is read past its outer headers, options
// and inner Ethernet header; the TSC read right after rte_eth_rx_burst minus the stamp is
// that frame's latency. Frames sent during the warm-up, or that do not carry a stamp, are
// not counted. The result is one JSON line on stdout.
//
//   ztg_latency <EAL args> -- --rate PPS (0: as fast as it can) --warmup S --window S
//                             [--size B] [--burst N] [--link-timeout S]

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr uint16_t kMaxBurst = 64;
constexpr uint16_t kRing = 1024;
// Histogram: 5 ns buckets up to 2 ms, then 1 us buckets up to 500 ms, then the maximum.
constexpr uint64_t kFineNs = 5, kFineEnd = 2'000'000;
constexpr uint64_t kCoarseNs = 1000, kCoarseEnd = 500'000'000;
constexpr uint64_t kFine = kFineEnd / kFineNs,
                   kBuckets = kFine + (kCoarseEnd - kFineEnd) / kCoarseNs;
constexpr size_t kStampOff = 54; // Ethernet 14 + IPv4 20 + TCP 20
constexpr size_t kStampLen = 10; // TSC (8) + the checksum-neutral word (2)

std::atomic<bool> g_stop{false};

struct Opts {
    double rate = 10000; // frames a second; 0 = as fast as tx takes them
    double warmup = 1.0;
    double window = 5.0;
    double link_timeout = 60.0;
    uint16_t size = 64;
    uint16_t burst = 32;
};

[[noreturn]] void usage(const char* msg) {
    std::fprintf(
        stderr,
        "ztg_latency: %s\nusage: ztg_latency <EAL args> -- --rate PPS --warmup S --window S "
        "[--size B] [--burst N] [--link-timeout S]\n",
        msg);
    std::exit(2);
}

Opts parse_opts(int argc, char** argv) {
    Opts o;
    for (int i = 0; i < argc; i++) {
        const std::string k = argv[i];
        if (i + 1 >= argc) usage(("missing value of " + k).c_str());
        const char* v = argv[++i];
        if (k == "--rate")
            o.rate = std::atof(v);
        else if (k == "--warmup")
            o.warmup = std::atof(v);
        else if (k == "--window")
            o.window = std::atof(v);
        else if (k == "--link-timeout")
            o.link_timeout = std::atof(v);
        else if (k == "--size")
            o.size = uint16_t(std::atoi(v));
        else if (k == "--burst")
            o.burst = uint16_t(std::atoi(v));
        else
            usage(("unknown option " + k).c_str());
    }
    if (o.size < kStampOff + kStampLen || o.size > 1514) usage("--size must be 64..1514");
    if (o.burst < 1 || o.burst > kMaxBurst) usage("--burst must be 1..64");
    if (o.rate < 0 || o.warmup < 0 || o.window <= 0) usage("--rate, --warmup >= 0, --window > 0");
    return o;
}

uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return uint16_t(s);
}

uint16_t csum(const uint8_t* p, size_t n, uint32_t s = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
    if (n & 1) s += uint32_t(p[n - 1] << 8);
    return fold(s);
}

// The frame every mbuf starts from; the stamp area is zero, and stays neutral once written.
std::vector<uint8_t> make_template(uint16_t size) {
    std::vector<uint8_t> f(size, 0);
    const uint8_t dst[6] = {2, 0, 0, 0, 1, 1}, src[6] = {2, 0, 0, 0, 1, 2};
    std::memcpy(&f[0], dst, 6);
    std::memcpy(&f[6], src, 6);
    f[12] = 0x08;
    uint8_t* ip = &f[14];
    const uint16_t ip_len = uint16_t(size - 14);
    const uint8_t ip_hdr[20] = {0x45,
                                0,
                                uint8_t(ip_len >> 8),
                                uint8_t(ip_len),
                                0,
                                1,
                                0x40,
                                0,
                                64,
                                6,
                                0,
                                0,
                                10,
                                244,
                                2,
                                2,
                                10,
                                96,
                                0,
                                10};
    std::memcpy(ip, ip_hdr, 20);
    const uint16_t ic = uint16_t(~csum(ip, 20));
    ip[10] = uint8_t(ic >> 8);
    ip[11] = uint8_t(ic);
    uint8_t* tcp = ip + 20;
    const uint16_t sport = 40000, dport = 9080;
    tcp[0] = sport >> 8, tcp[1] = sport & 0xff, tcp[2] = dport >> 8, tcp[3] = dport & 0xff;
    tcp[7] = 1;       // seq 1
    tcp[12] = 5 << 4; // data offset 5
    tcp[13] = 0x18;   // PSH ACK: a data segment of an established connection
    tcp[14] = 0xff, tcp[15] = 0xff;
    // Pseudo-header + segment, with the stamp area zero (its sum is one's-complement zero).
    const uint16_t l4 = uint16_t(ip_len - 20);
    uint32_t s = csum(ip + 12, 8) + 6u + l4;
    const uint16_t tc = uint16_t(~csum(tcp, l4, s));
    tcp[16] = uint8_t(tc >> 8);
    tcp[17] = uint8_t(tc);
    return f;
}

// TSC in host order (read back by this process only) and the word that brings the ten
// bytes' one's-complement sum to 0xffff, i.e. zero: the TCP checksum does not change.
inline void write_stamp(uint8_t* p, uint64_t tsc) {
    std::memcpy(p, &tsc, 8);
    const uint16_t fix = uint16_t(~csum(p, 8));
    p[8] = uint8_t(fix >> 8);
    p[9] = uint8_t(fix);
}

// The stamp of a received frame, at the TCP payload of the frame or of the Geneve packet it
// carries; false when it has none.
inline bool read_stamp(const rte_mbuf* m, uint64_t& tsc) {
    const uint8_t* p = rte_pktmbuf_mtod(m, const uint8_t*);
    const uint32_t len = rte_pktmbuf_data_len(m);
    uint32_t off = 0;
    for (int depth = 0; depth < 2; depth++) {
        if (len < off + 34 || p[off + 12] != 0x08 || p[off + 13] != 0x00) return false;
        const uint32_t ip = off + 14, ihl = uint32_t(p[ip] & 0x0f) * 4;
        if (len < ip + ihl + 8) return false;
        const uint32_t l4 = ip + ihl;
        if (p[ip + 9] == 6) {
            if (len < l4 + 20) return false;
            off = l4 + uint32_t(p[l4 + 12] >> 4) * 4;
            if (len < off + kStampLen || csum(p + off, kStampLen) != 0xffff) return false;
            std::memcpy(&tsc, p + off, 8);
            return true;
        }
        if (p[ip + 9] != 17 || p[l4 + 2] != 0x17 || p[l4 + 3] != 0xc1 || len < l4 + 16)
            return false;
        off = l4 + 16 + uint32_t(p[l4 + 8] & 0x3f) * 4; // UDP 8 + Geneve 8 + options
    }
    return false;
}

struct Histogram {
    std::vector<uint64_t> b = std::vector<uint64_t>(kBuckets + 1, 0);
    uint64_t n = 0, sum_ns = 0, max_ns = 0;
    void add(uint64_t ns) {
        b[ns < kFineEnd ? ns / kFineNs : std::min(kFine + (ns - kFineEnd) / kCoarseNs, kBuckets)]++;
        n++;
        sum_ns += ns;
        max_ns = std::max(max_ns, ns);
    }
    // Upper edge of the bucket holding quantile q (the max for the overflow bucket).
    double quantile(double q) const {
        if (n == 0) return 0;
        const uint64_t want = uint64_t(q * double(n - 1)) + 1;
        uint64_t seen = 0;
        for (uint64_t i = 0; i < kBuckets; i++)
            if ((seen += b[i]) >= want)
                return double(i < kFine ? (i + 1) * kFineNs
                                        : kFineEnd + (i - kFine + 1) * kCoarseNs);
        return double(max_ns);
    }
};

void setup_port(uint16_t port, rte_mempool* pool) {
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(port, 0, kRing, rte_eth_dev_socket_id(port), nullptr, pool) != 0 ||
        rte_eth_tx_queue_setup(port, 0, kRing, rte_eth_dev_socket_id(port), nullptr) != 0 ||
        rte_eth_dev_start(port) != 0)
        rte_exit(EXIT_FAILURE, "ztg_latency: cannot set up port %u\n", port);
}

bool link_up(uint16_t port) {
    rte_eth_link l{};
    return rte_eth_link_get_nowait(port, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
}

} // namespace

int main(int argc, char** argv) {
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0) rte_exit(EXIT_FAILURE, "ztg_latency: EAL init failed\n");
    const Opts o = parse_opts(argc - eal - 1, argv + eal + 1);
    std::signal(SIGINT, [](int) { g_stop.store(true, std::memory_order_relaxed); });
    std::signal(SIGTERM, [](int) { g_stop.store(true, std::memory_order_relaxed); });

    const uint16_t ports = rte_eth_dev_count_avail();
    if (ports < 1 || ports > 2)
        rte_exit(EXIT_FAILURE, "ztg_latency: need 1 or 2 ports, got %u\n", ports);
    const uint16_t tx_port = 0, rx_port = ports == 2 ? 1 : 0;
    rte_mempool* pool = rte_pktmbuf_pool_create("lat", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                                int(rte_socket_id()));
    if (pool == nullptr) rte_exit(EXIT_FAILURE, "ztg_latency: no mempool\n");
    for (uint16_t p = 0; p < ports; p++) setup_port(p, pool);
    std::printf("ztg_latency: ports started, waiting for links\n");
    std::fflush(stdout);

    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t link_deadline = rte_rdtsc() + uint64_t(o.link_timeout * double(hz));
    while (!(link_up(tx_port) && link_up(rx_port))) {
        if (g_stop.load(std::memory_order_relaxed) || rte_rdtsc() > link_deadline) {
            std::fprintf(stderr, "ztg_latency: links not up\n");
            return 3;
        }
        rte_delay_us_sleep(1000);
    }
    std::printf("ztg_latency: links up\n");
    std::fflush(stdout);

    const std::vector<uint8_t> tmpl = make_template(o.size);
    Histogram h;
    const uint64_t t0 = rte_rdtsc();
    const uint64_t t_win = t0 + uint64_t(o.warmup * double(hz));
    const uint64_t t_end = t_win + uint64_t(o.window * double(hz));
    const uint64_t t_drain = t_end + hz / 5; // 200 ms for what is still in flight
    const double per_tsc = o.rate / double(hz);
    const uint64_t max_debt = 2 * o.burst; // a preempted generator does not catch up in a flood
    uint64_t sent_since_t0 = 0;
    uint64_t offered = 0, tx_ok = 0, tx_full = 0, skipped = 0, rx_all = 0, rx_nostamp = 0;
    uint64_t w_offered = 0, w_tx = 0, w_rx = 0;
    rte_mbuf* txb[kMaxBurst];
    rte_mbuf* rxb[kMaxBurst];

    for (uint64_t now = rte_rdtsc(); now < t_drain && !g_stop.load(std::memory_order_relaxed);
         now = rte_rdtsc()) {
        if (now < t_end) {
            uint64_t n = o.burst;
            if (o.rate > 0) {
                uint64_t due = uint64_t(double(now - t0) * per_tsc);
                if (due > sent_since_t0 + max_debt) { // forgive a preemption's backlog
                    skipped += due - sent_since_t0 - max_debt;
                    sent_since_t0 = due - max_debt;
                }
                n = std::min<uint64_t>(due - std::min(due, sent_since_t0), o.burst);
            }
            if (n > 0 && rte_pktmbuf_alloc_bulk(pool, txb, unsigned(n)) == 0) {
                for (uint64_t i = 0; i < n; i++) {
                    uint8_t* d = rte_pktmbuf_mtod(txb[i], uint8_t*);
                    std::memcpy(d, tmpl.data(), o.size);
                    txb[i]->data_len = o.size;
                    txb[i]->pkt_len = o.size;
                }
                const uint64_t stamp = rte_rdtsc();
                for (uint64_t i = 0; i < n; i++)
                    write_stamp(rte_pktmbuf_mtod(txb[i], uint8_t*) + kStampOff, stamp);
                const uint16_t ok = rte_eth_tx_burst(tx_port, 0, txb, uint16_t(n));
                if (ok < n) rte_pktmbuf_free_bulk(txb + ok, unsigned(n - ok));
                offered += n, tx_ok += ok, tx_full += n - ok, sent_since_t0 += n;
                if (stamp >= t_win) w_offered += n, w_tx += ok;
            }
        }
        const uint16_t got = rte_eth_rx_burst(rx_port, 0, rxb, o.burst);
        if (got == 0) continue;
        const uint64_t arrived = rte_rdtsc();
        rx_all += got;
        for (uint16_t i = 0; i < got; i++) {
            uint64_t stamp;
            if (!read_stamp(rxb[i], stamp) || stamp > arrived) {
                rx_nostamp++;
                continue;
            }
            if (stamp >= t_win && stamp < t_end) {
                w_rx++;
                h.add((arrived - stamp) * 1'000'000'000ull / hz);
            }
        }
        rte_pktmbuf_free_bulk(rxb, got);
    }

    std::printf(
        "{\"tsc_hz\": %lu, \"rate\": %.0f, \"size\": %u, \"burst\": %u, \"window_s\": %.3f, "
        "\"offered\": %lu, \"tx\": %lu, \"tx_full\": %lu, \"skipped\": %lu, \"rx\": %lu, "
        "\"rx_nostamp\": %lu, \"w_offered\": %lu, \"w_tx\": %lu, \"w_rx\": %lu, "
        "\"offered_pps\": %.1f, \"tx_pps\": %.1f, \"rx_pps\": %.1f, \"mean_ns\": %.1f, "
        "\"p50_ns\": %.0f, \"p90_ns\": %.0f, \"p99_ns\": %.0f, \"p999_ns\": %.0f, \"max_ns\": "
        "%lu}\n",
        hz, o.rate, o.size, o.burst, o.window, offered, tx_ok, tx_full, skipped, rx_all, rx_nostamp,
        w_offered, w_tx, w_rx, double(w_offered) / o.window, double(w_tx) / o.window,
        double(w_rx) / o.window, h.n ? double(h.sum_ns) / double(h.n) : 0.0, h.quantile(0.5),
        h.quantile(0.9), h.quantile(0.99), h.quantile(0.999), h.max_ns);
    std::fflush(stdout);
    for (uint16_t p = 0; p < ports; p++) {
        rte_eth_dev_stop(p);
        rte_eth_dev_close(p);
    }
    rte_eal_cleanup();
    return 0;
}
