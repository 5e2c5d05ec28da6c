// The pod-IP table: IPv4 addresses of the meshed pods on this node (the ipset
// ztunnel-pods-ips). Workers look up bursts of source addresses lock-free; the control
// thread is the single writer; deleted slots are reused only after a QSBR grace period.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <rte_hash.h>

#include "dataplane/net.hpp"
#include "dataplane/rcu.hpp"

namespace ztg {

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

    // Readers (workers). Bit i of the result is set when keys[i] is a pod. n <= kMaxBulk.
    uint64_t lookup_bulk(const Ip4* keys, uint32_t n) const {
        const void* kp[kMaxBulk];
        for (uint32_t i = 0; i < n; i++) kp[i] = &keys[i];
        uint64_t hits = 0;
        void* data[kMaxBulk];
        rte_hash_lookup_bulk_data(h_, kp, n, &hits, data);
        return hits;
    }
    bool contains(Ip4 ip) const { return rte_hash_lookup(h_, &ip.raw) >= 0; }

  private:
    rte_hash* h_ = nullptr;
    uint32_t capacity_;
    std::atomic<uint32_t> size_{0}; // written by the control thread, read by telemetry
};

} // namespace ztg
