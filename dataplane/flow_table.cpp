#include "dataplane/flow_table.hpp"

#include <rte_cycles.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

namespace ztg {

FlowTable::FlowTable(const std::string& name, uint32_t capacity, Rcu& rcu)
    : rcu_(rcu), name_(name), capacity_(capacity) {
    // Twice the capacity in slots: half-full buckets at capacity (see the header).
    uint32_t buckets = 2;
    while (uint64_t(buckets) * kWays < 2ull * capacity) buckets <<= 1;
    mask_ = buckets - 1;
    const int socket = int(rte_socket_id());
    b_ = static_cast<Bucket*>(
        rte_zmalloc_socket((name + "_b").c_str(), size_t(buckets) * sizeof(Bucket), 128, socket));
    val_ = static_cast<std::atomic<uint32_t>*>(rte_zmalloc_socket(
        (name + "_v").c_str(), size_t(buckets) * kWays * sizeof(uint32_t), 64, socket));
    if (val_ == nullptr) {
        rte_free(b_);
        b_ = nullptr; // not ok()
    }
    set_clock(rte_get_tsc_hz());
}

FlowTable::~FlowTable() {
    rte_free(val_);
    rte_free(b_);
}

void FlowTable::set_clock(uint64_t tsc_hz) {
    tsc_hz_ = tsc_hz == 0 ? 1 : tsc_hz;
    shift_ = 0;
    while ((tsc_hz_ >> (shift_ + 1)) >= 16) shift_++; // a tick: 1/16 s to 1/8 s
}

uint32_t FlowTable::ticks_of_ms(uint64_t ms) const {
    const uint64_t t = (tsc_hz_ / 1000 * ms) >> shift_;
    return uint32_t(t == 0 ? 1 : t);
}

void FlowTable::update(uint32_t s, uint32_t now, uint32_t to) {
    auto& meta = b_[s / kWays].meta[s % kWays];
    uint64_t m = meta.load(std::memory_order_relaxed);
    do {
        const uint32_t st = state_of(m);
        if (st != Live && st != Closing) return; // control removed it
        const uint64_t want = meta_of(m, to, now);
        if (want == m) return;
        // Release: nothing else is published here; relaxed would do, release documents
        // that the word readers acquire is only ever written whole.
        if (meta.compare_exchange_weak(m, want, std::memory_order_release,
                                       std::memory_order_relaxed))
            return;
    } while (true);
}

uint32_t FlowTable::claim(const FlowKey& k) {
    // The size limit: reserve a place first, so that racing workers never exceed it.
    if (live_.fetch_add(1, std::memory_order_relaxed) >= capacity_) {
        live_.fetch_sub(1, std::memory_order_relaxed);
        return kNone;
    }
    const uint32_t bi = bucket_of(k);
    Bucket& b = b_[bi];
    for (uint32_t w = 0; w < kWays; w++) {
        uint64_t expect = uint64_t(Empty) << 32;
        if (b.meta[w].load(std::memory_order_relaxed) != expect) continue;
        // Claim the slot; the loser of a race for it tries the next way.
        if (b.meta[w].compare_exchange_strong(expect, uint64_t(Busy) << 32,
                                              std::memory_order_acquire, std::memory_order_relaxed))
            return bi * kWays + w;
    }
    live_.fetch_sub(1, std::memory_order_relaxed); // the bucket is full
    return kNone;
}

void FlowTable::publish(uint32_t s, const FlowKey& k, uint64_t kind, uint32_t st, uint32_t now) {
    Bucket& b = b_[s / kWays];
    // Release: a reader that sees these addresses sees at least Busy in meta.
    b.addrs[s % kWays].store(k.addrs(), std::memory_order_release);
    // Release: the addresses (and the value word) are visible before the slot is Live.
    b.meta[s % kWays].store(meta_of(k.ports() | kind, st, now), std::memory_order_release);
}

FlowTable::Learn FlowTable::learn(const FlowKey& k, uint32_t now, bool syn, bool fin_rst,
                                  FlowKind kind) {
    if (const uint32_t s = find(k, 0); s != kNone) {
        if (syn && !fin_rst)
            update(s, now, Live); // a new connection on a closing tuple, or a retransmit
        else
            refresh(s, now, fin_rst);
        return Learn::Hit;
    }
    // Counted as a connection before its entry can be found (connections()).
    conns_.fetch_add(1, std::memory_order_relaxed);
    const uint32_t s = claim(k);
    if (s == kNone) {
        conns_.fetch_sub(1, std::memory_order_relaxed);
        return Learn::Full;
    }
    publish(s, k, kind == FlowKind::Host ? kHostBit : 0, fin_rst ? Closing : Live, now);
    return Learn::Inserted;
}

FlowTable::Learn FlowTable::dns_learn(const FlowKey& k, uint32_t now, Ip4 orig_dst) {
    if (const uint32_t s = find(k, kDnsBit); s != kNone) {
        refresh(s, now, false);
        if (val_[s].load(std::memory_order_relaxed) != orig_dst.raw) // another server
            val_[s].store(orig_dst.raw, std::memory_order_relaxed);
        return Learn::Hit;
    }
    const uint32_t s = claim(k);
    if (s == kNone) return Learn::Full;
    val_[s].store(orig_dst.raw, std::memory_order_relaxed); // published by publish's release
    publish(s, k, kDnsBit, Live, now);
    return Learn::Inserted;
}

uint32_t FlowTable::expire(uint32_t now, uint32_t idle, uint32_t closing, uint32_t dns_idle) {
    if (dns_idle == 0) dns_idle = idle;
    uint32_t removed = 0, conns = 0;
    for (uint32_t s = 0; s < slots(); s++) {
        auto& meta = b_[s / kWays].meta[s % kWays];
        uint64_t m = meta.load(std::memory_order_relaxed);
        const uint32_t st = state_of(m);
        if (st != Live && st != Closing) continue;
        const uint32_t age = (now - tick_of(m)) & kTickMask;
        if (age > kTickMask / 2) continue;   // stamped after `now`: just seen
        const bool dns = (m & kDnsBit) != 0; // a DNS entry: its own idle time, whatever its state
        if (age < (dns ? dns_idle : st == Live ? idle : closing)) continue;
        // The CAS fails if a worker refreshed it since the load: it stays.
        if (!meta.compare_exchange_strong(m, meta_of(m, Dead, 0), std::memory_order_relaxed,
                                          std::memory_order_relaxed))
            continue;
        dead_.push_back(s);
        removed++;
        conns += !dns;
    }
    if (dead_.empty()) return 0;
    rcu_.synchronize(); // no worker still holds a slot it matched before
    for (uint32_t s : dead_) {
        Bucket& b = b_[s / kWays];
        b.addrs[s % kWays].store(0, std::memory_order_relaxed);
        b.meta[s % kWays].store(uint64_t(Empty) << 32, std::memory_order_release);
    }
    conns_.fetch_sub(conns, std::memory_order_relaxed);
    live_.fetch_sub(uint32_t(dead_.size()), std::memory_order_relaxed);
    expired_.fetch_add(removed, std::memory_order_relaxed);
    dead_.clear();
    return removed;
}

} // namespace ztg
