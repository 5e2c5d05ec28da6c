// The pod-IP table: IPv4 addresses of the meshed pods on this node (the ipset
// ztunnel-pods-ips), each with where the pod was last seen (device and MAC, for the return
// path). Workers look up bursts of addresses lock-free; the control thread is the single
// writer.
//
// Open addressing with linear probing over 8-byte slots, at most 3/4 full (sized at twice
// the capacity): a slot is one atomic word, key | tag << 32, so a reader sees a whole old or
// a whole new entry. The tag is the device + 1 and a 16-bit hash of the pod's MAC: enough
// for the outbound path to notice a pod that moved without touching a second cache line.
// The full MAC lives in a parallel array read only by the return path. A deleted slot
// becomes a tombstone that is reused only after a QSBR grace period, so a reader that found
// the old key never reads a new pod's location in its place. When tombstones crowd the
// table, the writer rebuilds it into fresh arrays, publishes them with one pointer swap and
// frees the old ones after a grace period.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <rte_ether.h>
#include <rte_prefetch.h>

#include "dataplane/crc32c.hpp"
#include "dataplane/net.hpp"
#include "dataplane/rcu.hpp"

namespace ztg {

// Where a pod lives: bits 48-63 device + 1 (0: not seen yet), bits 0-47 the pod's MAC.
struct PodLocation {
    uint64_t word = 0;
    static PodLocation of(uint16_t dev, const rte_ether_addr& mac) {
        uint64_t w = uint64_t(dev + 1u) << 48;
        for (int i = 0; i < 6; i++) w |= uint64_t(mac.addr_bytes[i]) << (8 * i);
        return {w};
    }
    bool known() const { return (word >> 48) != 0; }
    uint16_t dev() const { return uint16_t((word >> 48) - 1); }
    rte_ether_addr mac() const {
        rte_ether_addr a;
        for (int i = 0; i < 6; i++) a.addr_bytes[i] = uint8_t(word >> (8 * i));
        return a;
    }
    // The 32-bit tag kept beside the key: device + 1, and a hash of the MAC.
    uint32_t tag() const { return known() ? make_tag(dev(), word & 0xFFFFFFFFFFFFull) : 0; }
    // The same without building the word: for every packet of a pod.
    // The MAC is read as a 4- and a 2-byte load combined in registers: a 6-byte memcpy
    // into a zeroed uint64_t on the stack compiles to two narrow stores and one wide
    // load, which store-to-load forwarding cannot serve (a stall of 15-19 cycles a packet).
    static uint32_t tag_of(uint16_t dev, const rte_ether_addr& mac) {
        uint32_t lo;
        uint16_t hi;
        std::memcpy(&lo, mac.addr_bytes, 4);
        std::memcpy(&hi, mac.addr_bytes + 4, 2);
        return make_tag(dev, uint64_t(hi) << 32 | lo); // byte i at bits 8i, as in `word`
    }
    // A cheap fold of the MAC: it runs for every packet of a pod. A moved pod whose new
    // MAC folds alike is still caught by its ARP, which is compared in full.
    static uint32_t make_tag(uint16_t dev, uint64_t mac48) {
        const uint64_t f = mac48 ^ (mac48 >> 16) ^ (mac48 >> 32);
        return uint32_t(dev + 1u) | uint32_t(f << 16);
    }
    friend bool operator==(PodLocation, PodLocation) = default;
};

class PodTable {
  public:
    static constexpr uint32_t kMaxBulk = 64;

    // capacity: the most pods the table holds.
    PodTable(const std::string& name, uint32_t capacity, Rcu& rcu);
    ~PodTable();
    PodTable(const PodTable&) = delete;
    PodTable& operator=(const PodTable&) = delete;

    bool ok() const { return t_.load(std::memory_order_relaxed) != nullptr; }
    uint32_t capacity() const { return capacity_; }
    size_t memory_bytes() const { return size_t(slot_count_) * 2 * sizeof(uint64_t); }
    uint32_t rebuilds() const { return rebuilds_; }

    // Writer (control thread). add: true if present afterwards (false: table full);
    // del: true if it was there; set_location: false if ip is not a pod.
    bool add(Ip4 ip);
    bool del(Ip4 ip);
    bool set_location(Ip4 ip, PodLocation loc);
    // Makes the slots of deleted pods reusable once no reader can still see them. add()
    // calls it when it needs room; control may call it after a batch of deletes.
    void reclaim();
    uint32_t size() const { return size_.load(std::memory_order_relaxed); }

    // Readers (workers). Bit i of the result is set when keys[i] is a pod; tags[i] is then
    // its location tag (PodLocation::tag), 0 if not seen yet. n <= kMaxBulk.
    uint64_t lookup_bulk(const Ip4* keys, uint32_t n, uint32_t* tags) const {
        const Arrays& t = *t_.load(std::memory_order_acquire);
        // Read once: after each acquire load of a slot the compiler would read them again.
        const uint32_t mask = t.mask;
        const std::atomic<uint64_t>* const slots = t.slots;
        uint32_t idx[kMaxBulk];
        for (uint32_t i = 0; i < n; i++) {
            idx[i] = crc32c_4byte(keys[i].raw, kSeed) & mask;
            rte_prefetch0(&slots[idx[i]]);
        }
        uint64_t hits = 0;
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t key = keys[i].raw;
            if (key == kEmpty || key == kTomb) continue;
            for (uint32_t s = idx[i];; s = (s + 1) & mask) {
                const uint64_t w = slots[s].load(std::memory_order_acquire);
                const uint32_t k = uint32_t(w);
                if (k == key) {
                    hits |= uint64_t(1) << i;
                    tags[i] = uint32_t(w >> 32);
                    break;
                }
                if (k == kEmpty) break;
            }
        }
        return hits;
    }
    uint64_t lookup_bulk(const Ip4* keys, uint32_t n) const {
        uint32_t tags[kMaxBulk];
        return lookup_bulk(keys, n, tags);
    }
    bool contains(Ip4 ip) const {
        return find(*t_.load(std::memory_order_acquire), ip.raw) != kNotFound;
    }
    // A pod's location; unknown (word 0) when ip is no pod or was not seen yet.
    PodLocation location(Ip4 ip) const {
        const Arrays& t = *t_.load(std::memory_order_acquire);
        const uint32_t s = find(t, ip.raw);
        return s == kNotFound ? PodLocation{}
                              : PodLocation{t.macs[s].load(std::memory_order_acquire)};
    }

    // Every pod and its location, in table order. Writer thread only (the control thread):
    // it alone replaces the arrays, so nothing it walks can be freed under it.
    template <class F>
    void for_each(F&& f) const {
        const Arrays& t = *t_.load(std::memory_order_relaxed);
        for (uint32_t s = 0; s <= t.mask; s++) {
            const uint32_t k = uint32_t(t.slots[s].load(std::memory_order_relaxed));
            if (k != kEmpty && k != kTomb)
                f(Ip4{k}, PodLocation{t.macs[s].load(std::memory_order_relaxed)});
        }
    }

  private:
    static constexpr uint32_t kEmpty = 0;                               // 0.0.0.0 is never a pod
    static constexpr uint32_t kTomb = 0xFFFFFFFF;                       // nor is 255.255.255.255
    static constexpr uint64_t kTombPending = uint64_t(1) << 32 | kTomb; // not reusable yet
    static constexpr uint32_t kSeed = 0x5A17C0DEu;
    static constexpr uint32_t kNotFound = 0xFFFFFFFF;

    struct Arrays {
        uint32_t mask;
        std::atomic<uint64_t>* slots; // key | tag << 32
        std::atomic<uint64_t>* macs;  // PodLocation words, same index
    };
    static Arrays* alloc(const std::string& name, uint32_t slots);
    static void release(Arrays* t);
    static uint32_t find(const Arrays& t, uint32_t key) {
        if (key == kEmpty || key == kTomb) return kNotFound;
        for (uint32_t s = crc32c_4byte(key, kSeed) & t.mask;; s = (s + 1) & t.mask) {
            const uint32_t k = uint32_t(t.slots[s].load(std::memory_order_acquire));
            if (k == key) return s;
            if (k == kEmpty) return kNotFound;
        }
    }
    bool rebuild();

    Rcu& rcu_;
    std::string name_;
    uint32_t capacity_;
    uint32_t slot_count_ = 0;
    std::atomic<Arrays*> t_{nullptr};
    uint32_t used_ = 0; // writer only: pods + tombstones
    uint32_t rebuilds_ = 0;
    std::vector<uint32_t> pending_; // writer only: tombstones awaiting a grace period
    std::atomic<uint32_t> size_{0}; // read by telemetry
};

} // namespace ztg
