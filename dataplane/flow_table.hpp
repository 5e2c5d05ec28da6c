// The proxied-connection table: the TCP connections ztunnel opened to a pod with the
// original client's address as source (the kernel's `! -s ZT_IP -i ZT_VETH` mark 0x210,
// saved on the connection). The pod's replies on them go back to ztunnel (mark 0x040,
// table 102), and the kernel's packets on them are never redirected into the inbound
// tunnel. Keyed by the 5-tuple as ztunnel sent it (client -> pod; the protocol is TCP).
//
// Who writes: the worker that receives ztunnel's packet inserts it itself, with atomics,
// before the packet is sent on. The pod's SYN-ACK can only follow the SYN, so whichever
// worker receives it finds the entry; a control-thread insert would leave a window (the
// event queue, the control loop's round) in which the first reply is redirected outbound
// as a meshed pod's new connection. Inserting costs one CAS and two fetch_adds per
// connection, not per packet; every packet pays a lookup only.
//
// Layout: buckets of 8 slots, two cache lines each (the address words, then the words of
// ports, state, kind and "last seen" tick), and beside them one 32-bit value word per slot
// (a DNS entry's original destination): 20 bytes a slot. Sized so that at `capacity` flows
// a bucket is half full on average (a full bucket counts as a full table: about 1 % of
// inserts at capacity, none at half). A lookup reads one bucket: no probe chains, so a
// miss costs the same as a hit. The tick is refreshed with a CAS only when it changed (at
// most 16 times a second per flow), so the lines readers share are rarely written.
//
// Slot life: Empty -> Busy (a worker's CAS claims it) -> Live (ports + state stored with
// release, after the addresses) -> Closing (FIN or RST seen) -> Dead (control's sweep:
// idle or closed too long) -> Empty again only after a QSBR grace period, so a reader
// that matched the old addresses never pairs them with a new connection's ports.
// Control is the only thread that removes.
//
// DNS capture (inbound.dns_capture) keeps its queries here too: one entry per (pod IP,
// pod source port), keyed as ztunnel's answer comes back (ZT_IP:15053 -> pod:port, see
// dns_key), with the query's original destination in the slot's value word. A DNS entry
// only matches DNS lookups and a connection entry only connection lookups (the kind is part
// of the compare), so a pod's TCP from the same port never takes an answer's slot. The
// value word is written before the release store that makes the slot Live and read after
// the acquire load that matched it; a later query from the same port to another server
// rewrites it (relaxed: an answer in flight then reads either address, as the kernel's
// conntrack would have one of two clashing tuples). DNS entries expire after their own
// idle time and are not counted by connections(), so they never put the pods stage on
// its connection lookups.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <rte_prefetch.h>

#include "dataplane/crc32c.hpp"
#include "dataplane/net.hpp"
#include "dataplane/rcu.hpp"

namespace ztg {

struct FlowKey {
    Ip4 client, pod;   // source and destination of ztunnel's packet
    Be16 cport, pport; // the same for the ports
    uint64_t addrs() const { return uint64_t(pod.raw) << 32 | client.raw; }
    uint32_t ports() const { return uint32_t(pport.raw) << 16 | cport.raw; }
};

// What a connection in the table is: opened by ztunnel for a client (0x210), or by the
// node's own address (a kubelet probe: 0x220, both directions skipped). Dns: a pod's
// captured DNS query (not a connection; its own lookups, dns_learn / dns_lookup).
enum class FlowKind : uint8_t { None, Proxied, Host, Dns };

// The port ztunnel's DNS proxy listens on (the kernel rule's `DNAT --to ZT_IP:15053`).
constexpr uint16_t kZtunnelDnsPort = 15053;
constexpr uint16_t kDnsPort = 53;

// A captured query's entry: the key of the answer that comes back for it.
inline FlowKey dns_key(Ip4 ztunnel, Ip4 pod, Be16 pod_port) {
    return {ztunnel, pod, Be16::from_host(kZtunnelDnsPort), pod_port};
}

class FlowTable {
  public:
    static constexpr uint32_t kWays = 8;
    enum State : uint32_t { Empty = 0, Busy = 1, Live = 2, Closing = 3, Dead = 4 };
    static constexpr uint32_t kTickMask = (1u << 27) - 1; // ticks wrap at 2^27 (97 to 194 days)
    enum class Learn : uint8_t { Hit, Inserted, Full };

    // capacity: the most flows held at once (the size limit).
    FlowTable(const std::string& name, uint32_t capacity, Rcu& rcu);
    ~FlowTable();
    FlowTable(const FlowTable&) = delete;
    FlowTable& operator=(const FlowTable&) = delete;

    bool ok() const { return b_ != nullptr; }
    uint32_t capacity() const { return capacity_; }
    uint32_t slots() const { return (mask_ + 1) * kWays; }
    // Bytes the table holds (buckets with their ticks, and the value words), and so per
    // flow of capacity.
    size_t memory_bytes() const {
        return size_t(mask_ + 1) * (sizeof(Bucket) + kWays * sizeof(uint32_t));
    }
    uint32_t size() const { return live_.load(std::memory_order_relaxed); }
    bool empty() const { return size() == 0; }
    // Connections (Proxied and Host entries; not DNS): the pods stage looks a pod's TCP up
    // only while there is one. Counted when reserved, so a connection is counted before
    // its entry can be found.
    uint32_t connections() const { return conns_.load(std::memory_order_relaxed); }
    uint64_t expired() const { return expired_.load(std::memory_order_relaxed); }

    // Readers and inserters (workers). `now` is in ticks (tick()).
    // ztunnel's packet of a connection: found (refreshed), inserted, or no room.
    // syn: a SYN without ACK (revives a closing entry: the tuple is reused); fin_rst: the
    // connection is closing.
    Learn learn(const FlowKey& k, uint32_t now, bool syn, bool fin_rst,
                FlowKind kind = FlowKind::Proxied);
    // Any other packet of a connection (either side maps to the same key): true if it is
    // in the table (its kind; None: not); refreshed, and marked closing on FIN/RST.
    FlowKind touch(const FlowKey& k, uint32_t now, bool fin_rst) {
        const uint32_t s = find(k, 0);
        if (s == kNone) return FlowKind::None;
        const uint64_t m = refresh(s, now, fin_rst);
        return m & kHostBit ? FlowKind::Host : FlowKind::Proxied;
    }
    bool contains(const FlowKey& k) const { return find(k, 0) != kNone; }

    // DNS capture. A pod's query (k = dns_key(...)) to orig_dst: found (refreshed, orig_dst
    // stored if it changed), inserted with it, or no room.
    Learn dns_learn(const FlowKey& k, uint32_t now, Ip4 orig_dst);
    // ztunnel's answer (k: its ZT_IP:15053 -> pod:port): true and the query's original
    // destination if it has an entry (refreshed), else false.
    bool dns_lookup(const FlowKey& k, uint32_t now, Ip4& orig_dst) {
        const uint32_t s = find(k, kDnsBit);
        if (s == kNone) return false;
        refresh(s, now, false);
        orig_dst.raw = val_[s].load(std::memory_order_relaxed); // after find's acquire
        return true;
    }
    bool contains_dns(const FlowKey& k) const { return find(k, kDnsBit) != kNone; }
    // The bucket k hashes to (of buckets() with kWays slots each): for tests' models.
    uint32_t bucket_index(const FlowKey& k) const { return bucket_of(k); }
    void prefetch(const FlowKey& k) const {
        const Bucket& b = b_[bucket_of(k)];
        rte_prefetch0(&b.addrs);
        rte_prefetch0(&b.meta);
    }

    // Clock: ticks of about 1/16 s from the TSC (tsc_hz given at construction).
    uint32_t tick(uint64_t tsc) const { return uint32_t(tsc >> shift_) & kTickMask; }
    uint32_t ticks_of_ms(uint64_t ms) const;
    void set_clock(uint64_t tsc_hz); // the constructor uses rte_get_tsc_hz()

    // Writer (control thread): removes what was idle `idle` ticks (closing: `closing`
    // ticks; a DNS entry: `dns_idle` ticks, default `idle`), then, after a grace period,
    // makes its slots free. Returns how many it removed. An entry stamped after `now` was
    // read (a worker saw it while the sweep ran) is not idle: an age of more than half the
    // wrap is a tick ahead of `now`, which is why timeouts stay far below 2^26 ticks.
    uint32_t expire(uint32_t now, uint32_t idle, uint32_t closing, uint32_t dns_idle = 0);

  private:
    static constexpr uint32_t kNone = 0xFFFFFFFF;
    static constexpr uint32_t kSeed = 0x0F10A7ABu;
    struct alignas(128) Bucket {
        std::atomic<uint64_t> addrs[kWays]; // FlowKey::addrs
        // ports | state << 32 (3 bits) | host kind << 35 | DNS kind << 36 | tick << 37
        alignas(64) std::atomic<uint64_t> meta[kWays];
    };
    static constexpr uint64_t kHostBit = uint64_t(1) << 35, kDnsBit = uint64_t(1) << 36;
    static constexpr uint64_t kKeep = 0xFFFFFFFFull | kHostBit | kDnsBit; // ports, kind
    static uint64_t meta_of(uint64_t keep, uint32_t st, uint32_t tick) {
        return (keep & kKeep) | uint64_t(st) << 32 | uint64_t(tick & kTickMask) << 37;
    }
    static uint32_t state_of(uint64_t m) { return uint32_t(m >> 32) & 7; }
    static uint32_t tick_of(uint64_t m) { return uint32_t(m >> 37); }
    static_assert(sizeof(Bucket) == 128);

    uint32_t bucket_of(const FlowKey& k) const {
        const uint32_t h = crc32c_4byte(k.ports(), crc32c_8byte(k.addrs(), kSeed));
        return h & mask_;
    }
    // The slot (bucket * kWays + way) holding k, or kNone. dns: kDnsBit for a DNS entry,
    // 0 for a connection (the ports and that bit are compared at once).
    uint32_t find(const FlowKey& k, uint64_t dns) const {
        const uint32_t bi = bucket_of(k);
        const Bucket& b = b_[bi];
        const uint64_t a = k.addrs();
        const uint64_t want = k.ports() | dns;
        for (uint32_t w = 0; w < kWays; w++) {
            if (b.addrs[w].load(std::memory_order_acquire) != a) continue;
            const uint64_t m = b.meta[w].load(std::memory_order_acquire);
            const uint32_t st = state_of(m);
            if ((m & (0xFFFFFFFFull | kDnsBit)) == want && (st == Live || st == Closing))
                return bi * kWays + w;
        }
        return kNone;
    }
    // Reserves a place under the size limit and claims a slot of k's bucket for it, Busy;
    // kNone if there is none (nothing reserved then).
    uint32_t claim(const FlowKey& k);
    // Makes a claimed slot Live (or Closing) with k's addresses and the kind bits.
    void publish(uint32_t s, const FlowKey& k, uint64_t kind, uint32_t st, uint32_t now);
    uint64_t refresh(uint32_t s, uint32_t now, bool fin_rst) {
        const uint64_t m = b_[s / kWays].meta[s % kWays].load(std::memory_order_relaxed);
        if (tick_of(m) != (now & kTickMask) || fin_rst) [[unlikely]]
            update(s, now, fin_rst ? Closing : state_of(m));
        return m;
    }
    // The slot's tick and state (Live or Closing), unless control removed it meanwhile.
    void update(uint32_t s, uint32_t now, uint32_t to);

    Rcu& rcu_;
    std::string name_;
    uint32_t capacity_;
    uint32_t mask_ = 0; // buckets - 1
    uint32_t shift_ = 26;
    uint64_t tsc_hz_ = 1;
    Bucket* b_ = nullptr;
    std::atomic<uint32_t>* val_ = nullptr;      // per slot: a DNS entry's original destination
    alignas(64) std::atomic<uint32_t> live_{0}; // slots Busy..Closing (the size limit)
    std::atomic<uint32_t> conns_{0};            // of those, connections (not DNS)
    std::atomic<uint64_t> expired_{0};          // control only
    std::vector<uint32_t> dead_;                // control only: awaiting a grace period
};

} // namespace ztg
