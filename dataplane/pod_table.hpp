// The pod-IP table: IPv4 addresses of the meshed pods on this node (the ipset
// ztunnel-pods-ips), each with where the pod was last seen (device and MAC, for the return
// path). Workers look up bursts of addresses lock-free; the control thread is the single
// writer; deleted slots are reused only after a QSBR grace period.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <rte_ether.h>
#include <rte_hash.h>

#include "dataplane/net.hpp"
#include "dataplane/rcu.hpp"

namespace ztg {

// Where a pod lives, packed into the table's 64-bit data word so that workers read it in
// the same lookup and control replaces it with one atomic store: bits 48-63 device + 1
// (0: not seen yet), bits 0-47 the pod's MAC.
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
    friend bool operator==(PodLocation, PodLocation) = default;
};

class PodTable {
  public:
    static constexpr uint32_t kMaxBulk = RTE_HASH_LOOKUP_BULK_MAX; // 64

    // capacity: the most pods the table holds. name must be unique in the process.
    PodTable(const std::string& name, uint32_t capacity, Rcu& rcu);
    ~PodTable();
    PodTable(const PodTable&) = delete;
    PodTable& operator=(const PodTable&) = delete;

    bool ok() const { return h_ != nullptr; }
    uint32_t capacity() const { return capacity_; }

    // Writer (control thread). add: true if present afterwards; del: true if it was there.
    bool add(Ip4 ip);
    bool del(Ip4 ip);
    // Pods in the table (deleted slots awaiting their grace period are not counted).
    uint32_t size() const { return size_.load(std::memory_order_relaxed); }

    // Writer: records where a pod was seen; false if ip is not a pod.
    bool set_location(Ip4 ip, PodLocation loc);

    // Readers (workers). Bit i of the result is set when keys[i] is a pod; loc[i] is then
    // its location. n <= kMaxBulk.
    uint64_t lookup_bulk(const Ip4* keys, uint32_t n, PodLocation* loc) const {
        static_assert(sizeof(PodLocation) == sizeof(void*));
        const void* kp[kMaxBulk];
        for (uint32_t i = 0; i < n; i++) kp[i] = &keys[i];
        uint64_t hits = 0;
        rte_hash_lookup_bulk_data(h_, kp, n, &hits, reinterpret_cast<void**>(loc));
        return hits;
    }
    uint64_t lookup_bulk(const Ip4* keys, uint32_t n) const {
        PodLocation loc[kMaxBulk];
        return lookup_bulk(keys, n, loc);
    }
    bool contains(Ip4 ip) const { return rte_hash_lookup(h_, &ip.raw) >= 0; }
    // A pod's location; unknown (word 0) when ip is no pod or was not seen yet.
    PodLocation location(Ip4 ip) const {
        void* d = nullptr;
        if (rte_hash_lookup_data(h_, &ip.raw, &d) < 0) return {};
        return {reinterpret_cast<uintptr_t>(d)};
    }

  private:
    rte_hash* h_ = nullptr;
    uint32_t capacity_;
    std::atomic<uint32_t> size_{0}; // written by the control thread, read by telemetry
};

} // namespace ztg
