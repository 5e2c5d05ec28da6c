#include "dataplane/pod_table.hpp"

#include <rte_lcore.h>
#include <rte_malloc.h>

namespace ztg {

PodTable::Arrays* PodTable::alloc(const std::string& name, uint32_t slots) {
    const size_t bytes = size_t(slots) * sizeof(std::atomic<uint64_t>);
    const int socket = int(rte_socket_id());
    auto* t =
        static_cast<Arrays*>(rte_zmalloc_socket((name + "_t").c_str(), sizeof(Arrays), 64, socket));
    if (t == nullptr) return nullptr;
    t->mask = slots - 1;
    t->slots = static_cast<std::atomic<uint64_t>*>(
        rte_zmalloc_socket((name + "_k").c_str(), bytes, 64, socket));
    t->macs = static_cast<std::atomic<uint64_t>*>(
        rte_zmalloc_socket((name + "_m").c_str(), bytes, 64, socket));
    if (t->slots == nullptr || t->macs == nullptr) {
        release(t);
        return nullptr;
    }
    return t;
}

void PodTable::release(Arrays* t) {
    if (t == nullptr) return;
    rte_free(t->slots);
    rte_free(t->macs);
    rte_free(t);
}

PodTable::PodTable(const std::string& name, uint32_t capacity, Rcu& rcu)
    : rcu_(rcu), name_(name), capacity_(capacity) {
    slot_count_ = 16;
    while (slot_count_ < 2ull * capacity) slot_count_ <<= 1;
    t_.store(alloc(name_, slot_count_), std::memory_order_release);
}

PodTable::~PodTable() {
    release(t_.load(std::memory_order_relaxed));
}

bool PodTable::add(Ip4 ip) {
    const uint32_t key = ip.raw;
    if (key == kEmpty || key == kTomb) return false;
    if (contains(ip)) return true;
    if (size() >= capacity_) return false;
    // Keep the table at most 3/4 used (pods + tombstones) so probes stay short and end.
    const uint32_t limit = slot_count_ / 4 * 3;
    if (used_ + 1 > limit) reclaim();
    Arrays* t = t_.load(std::memory_order_relaxed);
    uint32_t reuse = kNotFound, s = crc32c_4byte(key, kSeed) & t->mask;
    for (;; s = (s + 1) & t->mask) {
        const uint64_t w = t->slots[s].load(std::memory_order_relaxed);
        if (reuse == kNotFound && w == kTomb) reuse = s; // past its grace period
        if (uint32_t(w) == kEmpty) break;
    }
    if (reuse == kNotFound && used_ + 1 > limit) {
        if (!rebuild()) return false;
        return add(ip);
    }
    if (reuse == kNotFound) {
        used_++;
        reuse = s;
    }
    t->macs[reuse].store(0, std::memory_order_relaxed);
    t->slots[reuse].store(key, std::memory_order_release); // publishes the cleared location too
    size_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

bool PodTable::del(Ip4 ip) {
    Arrays* t = t_.load(std::memory_order_relaxed);
    const uint32_t s = find(*t, ip.raw);
    if (s == kNotFound) return false;
    t->slots[s].store(kTombPending, std::memory_order_release);
    pending_.push_back(s);
    size_.fetch_sub(1, std::memory_order_relaxed);
    return true;
}

bool PodTable::set_location(Ip4 ip, PodLocation loc) {
    Arrays* t = t_.load(std::memory_order_relaxed);
    const uint32_t s = find(*t, ip.raw);
    if (s == kNotFound) return false;
    t->macs[s].store(loc.word, std::memory_order_relaxed);
    t->slots[s].store(uint64_t(loc.tag()) << 32 | ip.raw, std::memory_order_release);
    return true;
}

void PodTable::reclaim() {
    if (pending_.empty()) return;
    rcu_.synchronize(); // no worker still holds a slot it found before the deletes
    Arrays* t = t_.load(std::memory_order_relaxed);
    for (uint32_t s : pending_) t->slots[s].store(kTomb, std::memory_order_relaxed);
    pending_.clear();
}

// Copies the live pods into fresh arrays (no tombstones), publishes them and frees the
// old ones once no worker can be reading them.
bool PodTable::rebuild() {
    Arrays* old = t_.load(std::memory_order_relaxed);
    Arrays* t = alloc(name_ + "_" + std::to_string(rebuilds_ + 1), slot_count_);
    if (t == nullptr) return false;
    uint32_t used = 0;
    for (uint32_t i = 0; i <= old->mask; i++) {
        const uint64_t w = old->slots[i].load(std::memory_order_relaxed);
        const uint32_t key = uint32_t(w);
        if (key == kEmpty || key == kTomb) continue;
        uint32_t s = crc32c_4byte(key, kSeed) & t->mask;
        while (uint32_t(t->slots[s].load(std::memory_order_relaxed)) != kEmpty)
            s = (s + 1) & t->mask;
        t->macs[s].store(old->macs[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
        t->slots[s].store(w, std::memory_order_relaxed);
        used++;
    }
    t_.store(t, std::memory_order_release);
    rcu_.synchronize();
    release(old);
    pending_.clear();
    used_ = used;
    rebuilds_++;
    return true;
}

} // namespace ztg
