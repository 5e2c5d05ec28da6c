// Per-worker, per-device counters. Each worker owns its block (single writer): it adds a
// burst's worth at a time with relaxed load+store; readers (control, telemetry) sum the
// workers' blocks with relaxed loads. Blocks are cache-line aligned so workers never share.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace ztg {

#define ZTG_COUNTERS(X)                                                                            \
    X(rx, "frames received from the device")                                                       \
    X(tx, "frames sent out of the device")                                                         \
    X(redirect,                                                                                    \
      "Geneve-encapsulated toward the peer (node: a meshed pod's TCP; endpoint: a tap's frame)")   \
    X(direct, "meshed pod to the ztunnel IP itself, forwarded unencapsulated")                     \
    X(pass, "handed to the kernel twin (or, from a twin, out of its port)")                        \
    X(drop_no_twin, "would pass to the kernel twin, but the port has none")                        \
    X(fragmented, "redirect too big for the tunnel, without DF: sent as IPv4 fragments")           \
    X(fragments, "IPv4 fragments made of those, each sent in its own Geneve frame")                \
    X(drop_too_big,                                                                                \
      "redirect too big for the tunnel after 50 bytes of headers: DF set, or too_big: drop")       \
    X(drop_no_nexthop, "redirect/direct while the ztunnel MAC is not resolved yet")                \
    X(drop_tx_full, "the device did not take the frames (tx queue full, or the device is gone)")   \
    X(drop_kernel_ring, "lost in the kernel's af_packet ring before ztgeneve read them")           \
    X(drop_no_headroom, "mbuf without 64 bytes of headroom for the tunnel headers")                \
    X(drop_no_mbuf, "to be fragmented, but the mbuf pool had too few free buffers")                \
    X(drop_bad_header, "to be fragmented, but its IPv4 header checksum is wrong")                  \
    X(decap, "Geneve from the tunnel peer, decapsulated and delivered")                            \
    X(decap_bad_outer, "tunnel frame with a bad outer IPv4/UDP length, checksum or fragment")      \
    X(decap_bad_version, "Geneve version other than 0")                                            \
    X(decap_oam, "Geneve with the O (control) bit: not forwarded")                                 \
    X(decap_critical, "Geneve with the C bit and options we do not process")                       \
    X(decap_bad_vni, "Geneve with a VNI we do not serve")                                          \
    X(decap_bad_inner, "Geneve payload that is not an Ethernet frame carrying IPv4")               \
    X(decap_ecn_drop, "outer CE over an inner Not-ECT packet (RFC 6040)")                          \
    X(decap_unknown_pod,                                                                           \
      "decapsulated for an IP that is no located pod: to the kernel via the ztunnel twin")         \
    X(icmp_frag_needed, "ICMP fragmentation-needed sent to a pod whose DF packet was too big")     \
    X(icmp_rate_limited, "ICMP fragmentation-needed not sent: over the rate limit")                \
    X(tunnel_arp_reply, "ARP for istioout's address asked inside the tunnel, answered")            \
    X(arp_sent, "ARP requests sent to resolve the tunnel peer's MAC")                              \
    X(events_lost, "worker-to-control events lost because the queue was full")                     \
    X(csum_completed, "TCP/UDP checksum the sender left to offload (partial), completed")          \
    X(inbound,                                                                                     \
      "to a meshed pod, not from ztunnel nor skipped: Geneve VNI 1000 to ztunnel (istioin)")       \
    X(skip_ztunnel, "to a meshed pod from the ztunnel IP: not redirected (mark 0x220)")            \
    X(skip_udp, "UDP to a meshed pod: not redirected (mark 0x220)")                                \
    X(skip_host, "a connection of the node's own address (tunnel.local_ip): not redirected")       \
    X(skip_proxied, "to a pod on a connection ztunnel opened for a client: not redirected")        \
    X(proxied, "ztunnel's packet with a client's source to a located pod: delivered direct")       \
    X(proxied_kernel, "ztunnel's packet with a client's source, pod not located: to the kernel")   \
    X(proxy_return, "a pod's packet on a connection ztunnel opened: to ztunnel, unencapsulated")   \
    X(drop_flow_full, "a new proxied or node connection while the flow table is full: dropped")    \
    X(flow_insert,                                                                                 \
      "entries inserted into the flow table: connections, DNS queries (not a verdict)")            \
    X(flow_hit,                                                                                    \
      "packets whose connection or DNS query was found in the flow table (not a verdict)")         \
    X(dns_capture, "a meshed pod's UDP to port 53: to ztunnel's port 15053, unencapsulated")       \
    X(dns_answer, "ztunnel's answer from port 15053 to a captured query: its source put back")     \
    X(dns_no_entry, "from ztunnel's port 15053 to a pod with no captured query: to the kernel")    \
    X(dns_flow_full, "a DNS query to capture while the flow table is full: to the kernel")

enum class Ctr : uint8_t {
#define ZTG_ENUM(name, help) name,
    ZTG_COUNTERS(ZTG_ENUM)
#undef ZTG_ENUM
        count
};
constexpr size_t kNumCtr = size_t(Ctr::count);

constexpr std::array<const char*, kNumCtr> kCtrName = {
#define ZTG_NAME(name, help) #name,
    ZTG_COUNTERS(ZTG_NAME)
#undef ZTG_NAME
};
constexpr std::array<const char*, kNumCtr> kCtrHelp = {
#define ZTG_HELP(name, help) help,
    ZTG_COUNTERS(ZTG_HELP)
#undef ZTG_HELP
};

struct alignas(64) DeviceCounters {
    std::array<std::atomic<uint64_t>, kNumCtr> v{};

    // Single writer: the owning worker.
    void add(Ctr c, uint64_t n) {
        auto& a = v[size_t(c)];
        a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    uint64_t get(Ctr c) const { return v[size_t(c)].load(std::memory_order_relaxed); }
};

// A burst's tally, kept in registers/stack and added to the shared block once. touched has
// a bit for each counter the burst added to, so the flush visits those two or three, not
// all kNumCtr (callgrind: the full walk cost some 9 instructions a packet).
struct BurstTally {
    static_assert(kNumCtr <= 64, "one bit of touched per counter");
    std::array<uint32_t, kNumCtr> n{};
    uint64_t touched = 0;
    void inc(Ctr c, uint32_t k = 1) {
        n[size_t(c)] += k;
        touched |= uint64_t(1) << size_t(c);
    }
    void flush_to(DeviceCounters& d) {
        for (; touched != 0; touched &= touched - 1) {
            const auto i = size_t(__builtin_ctzll(touched));
            if (n[i] != 0) d.add(Ctr(i), n[i]); // inc(c, 0) adds nothing, as before
            n[i] = 0;
        }
    }
};

} // namespace ztg
