#include "tests/fuzz/fuzz_support.hpp"

#include <algorithm>
#include <cstring>

#include <rte_mempool.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define ZTG_ASAN 1
#endif
#endif
#ifndef ZTG_ASAN
#define ASAN_POISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#define ASAN_UNPOISON_MEMORY_REGION(a, s) ((void)(a), (void)(s))
#endif

namespace ztg::fuzz {

void fail(const char* file, int line, const char* cond, const std::string& msg) {
    std::fprintf(stderr, "\n==ztg-fuzz== CHECK FAILED %s:%d: %s\n==ztg-fuzz== %s\n", file, line,
                 cond, msg.c_str());
    std::fflush(stderr);
    std::abort();
}

// Issues the fuzzers found and that are not fixed yet: their checks are relaxed while
// fuzzing (so the fuzzer explores past them) and strict on replay (ZTG_FUZZ_STRICT=1).
// Empty: trim-chain, dpdk-cksum-mbuf and inner-past-outer are fixed (regressions/README.md).
bool known_issue(const char* id) {
    static const char* const open_issues[] = {nullptr};
    static const bool strict = [] {
        const char* e = std::getenv("ZTG_FUZZ_STRICT");
        return e != nullptr && e[0] != '\0' && e[0] != '0';
    }();
    for (const char* const* i = open_issues; *i != nullptr; i++)
        if (std::strcmp(*i, id) == 0) return !strict;
    return false;
}

std::string hex(const uint8_t* p, size_t n) {
    std::string s;
    char b[4];
    for (size_t i = 0; i < n; i++) {
        std::snprintf(b, sizeof b, "%02x", p[i]);
        s += b;
    }
    return s;
}

BurstInput split_burst(const uint8_t* data, size_t size, size_t max_frames) {
    BurstInput b;
    if (size == 0) return b;
    b.mode = data[0];
    size_t off = 1;
    while (off < size && b.frames.size() < max_frames) {
        Record r;
        size_t len = data[off];
        if (off + 1 < size) len = len << 8 | data[off + 1];
        off += 2;
        if (off < size) r.shape = data[off];
        off += 1;
        if (off > size) off = size;
        len = std::min({len, size - off, kMaxFrame});
        r.data = data + off;
        r.len = len;
        off += len;
        b.frames.push_back(r);
    }
    return b;
}

namespace {

std::vector<std::pair<void*, size_t>> g_poisoned; // buffers with a poisoned tail

// The segment's bytes after its data, up to the end of its buffer, become unaddressable.
void poison_tail(rte_mbuf* s) {
    auto* buf = static_cast<uint8_t*>(s->buf_addr);
    const size_t end = size_t(s->data_off) + s->data_len;
    ASAN_POISON_MEMORY_REGION(buf + end, s->buf_len - end);
    g_poisoned.emplace_back(s->buf_addr, s->buf_len);
}

rte_mbuf* segment(rte_mempool* pool, const uint8_t* bytes, size_t n, uint16_t headroom) {
    rte_mbuf* s = rte_pktmbuf_alloc(pool);
    FUZZ_CHECK(s != nullptr, "mempool exhausted building the input");
    ASAN_UNPOISON_MEMORY_REGION(s->buf_addr, s->buf_len);
    s->data_off = headroom;
    FUZZ_CHECK(size_t(headroom) + n <= s->buf_len, "segment too long");
    if (n != 0) std::memcpy(rte_pktmbuf_mtod(s, uint8_t*), bytes, n);
    s->data_len = uint16_t(n);
    s->pkt_len = uint32_t(n);
    return s;
}

} // namespace

rte_mbuf* make_mbuf(rte_mempool* pool, const uint8_t* bytes, size_t len, size_t first_seg,
                    uint16_t headroom) {
    // A chain's first segment holds at least one byte (PMDs never give an empty one).
    size_t first = first_seg == 0 ? len : std::max<size_t>(1, first_seg);
    first = std::min({first, len, size_t(kSegRoom)});
    rte_mbuf* head = segment(pool, bytes, first, headroom);
    size_t off = first;
    while (off < len) {
        const size_t n = std::min<size_t>(len - off, kSegRoom);
        rte_mbuf* s = segment(pool, bytes + off, n, RTE_PKTMBUF_HEADROOM);
        FUZZ_CHECK(rte_pktmbuf_chain(head, s) == 0, "chain too long");
        off += n;
    }
    for (rte_mbuf* s = head; s != nullptr; s = s->next) poison_tail(s);
    return head;
}

void unpoison_all() {
    for (auto [addr, len] : g_poisoned) ASAN_UNPOISON_MEMORY_REGION(addr, len);
    g_poisoned.clear();
}

rte_mbuf* make_mbuf(rte_mempool* pool, const Record& r, uint16_t headroom) {
    const size_t first = (r.shape & 0x80) ? size_t(r.shape & 0x7f) : 0;
    return make_mbuf(pool, r.data, r.len, first, headroom);
}

std::vector<uint8_t> bytes_of(const rte_mbuf* m) {
    std::vector<uint8_t> v;
    v.reserve(m->pkt_len);
    for (const rte_mbuf* s = m; s != nullptr; s = s->next) {
        const auto* p = rte_pktmbuf_mtod(s, const uint8_t*);
        v.insert(v.end(), p, p + s->data_len);
    }
    return v;
}

void check_mbuf(const rte_mbuf* m, const char* where) {
    const char* reason = nullptr;
    FUZZ_CHECK(rte_mbuf_check(m, 1, &reason) == 0,
               std::string(where) + ": bad mbuf: " + (reason ? reason : "?"));
    uint32_t sum = 0;
    for (const rte_mbuf* s = m; s != nullptr; s = s->next) sum += s->data_len;
    FUZZ_CHECK(sum == m->pkt_len, std::string(where) + ": pkt_len != sum of data_len");
}

bool is_verdict(Ctr c) {
    return c != Ctr::rx && c != Ctr::tx && c != Ctr::arp_sent && c != Ctr::events_lost &&
           c != Ctr::drop_tx_full && c != Ctr::fragments && c != Ctr::csum_completed &&
           c != Ctr::flow_insert && c != Ctr::flow_hit &&
           std::strncmp(kCtrName[size_t(c)], "icmp_", 5) != 0;
}

uint64_t verdict_sum(const DeviceCounters& d) {
    uint64_t s = 0;
    for (size_t i = 0; i < kNumCtr; i++)
        if (is_verdict(Ctr(i))) s += d.get(Ctr(i));
    return s;
}

void reset_counters(std::vector<DeviceCounters>& cs) {
    for (auto& d : cs)
        for (auto& v : d.v) v.store(0, std::memory_order_relaxed);
}

std::string counters_str(const DeviceCounters& d) {
    std::string s;
    for (size_t i = 0; i < kNumCtr; i++)
        if (d.get(Ctr(i)) != 0)
            s += std::string(kCtrName[i]) + "=" + std::to_string(d.get(Ctr(i))) + " ";
    return s;
}

void Tracker::add(rte_mbuf* m, std::vector<uint8_t> bytes) {
    index[m] = in.size();
    in.push_back({std::move(bytes), -1});
}

void Tracker::collect(WorkerCtx& ctx, bool allow_new) {
    out.assign(ctx.tx.size(), {});
    extra.assign(ctx.tx.size(), {});
    for (uint16_t d = 0; d < ctx.tx.size(); d++) {
        TxQueue& q = ctx.tx[d];
        for (uint16_t i = 0; i < q.n; i++) {
            rte_mbuf* m = q.pkts[i];
            auto it = index.find(m);
            if (it == index.end()) {
                FUZZ_CHECK(allow_new, "stage sent an mbuf it was not given");
                FUZZ_CHECK(std::find(extra[d].begin(), extra[d].end(), m) == extra[d].end(),
                           "stage sent an mbuf it allocated twice");
                check_mbuf(m, "allocated output");
                extra[d].push_back(m);
                out[d].push_back(m);
                continue;
            }
            In& rec = in[it->second];
            FUZZ_CHECK(rec.out_dev == -1,
                       "mbuf of frame " + std::to_string(it->second) + " sent twice (devices " +
                           std::to_string(rec.out_dev) + ", " + std::to_string(d) + ")");
            rec.out_dev = d;
            check_mbuf(m, "output");
            out[d].push_back(m);
        }
        q.n = 0;
    }
    ctx.tx_dirty.clear();
}

void Tracker::free_all(rte_mempool* pool, unsigned baseline) {
    unpoison_all();
    for (auto& v : out)
        for (rte_mbuf* m : v) rte_pktmbuf_free(m);
    out.clear();
    const unsigned now = rte_mempool_in_use_count(pool);
    FUZZ_CHECK(now == baseline, "mempool in use " + std::to_string(now) + " after the stage, " +
                                    std::to_string(baseline) +
                                    " before: " + (now > baseline ? "leak" : "double free"));
}

bool ip_checksum_ok(const std::vector<uint8_t>& b, size_t off, size_t ihl) {
    uint32_t sum = 0;
    for (size_t i = off; i < off + ihl; i += 2) sum += uint32_t(b[i]) << 8 | b[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

// The frame as a pod's kernel meant it: an unfragmented IPv4 TCP/UDP packet whose checksum
// field holds the pseudo-header sum (left to offload) gets its checksum completed; sums
// taken word by word here, independently of dataplane/offload.hpp. Returns whether it did.
bool complete_partial_model(std::vector<uint8_t>& b, const Parsed& p) {
    if (!p.ipv4 || p.fragment || (p.proto != 6 && p.proto != 17)) return false;
    const size_t l3 = p.l3_off, l4 = l3 + (b[l3] & 0x0f) * 4u, end = l3 + p.ip_len;
    const size_t field = l4 + (p.proto == 6 ? 16 : 6);
    if (end < l4 + (p.proto == 6 ? 20u : 8u) || end > b.size()) return false;
    auto fold = [](uint32_t x) {
        while (x >> 16) x = (x & 0xffff) + (x >> 16);
        return x;
    };
    uint32_t pseudo = p.proto + uint32_t(end - l4);
    for (size_t i = l3 + 12; i < l3 + 20; i += 2) pseudo += be16(b, i);
    if (be16(b, field) != fold(pseudo)) return false;
    b[field] = b[field + 1] = 0;
    uint32_t sum = pseudo;
    for (size_t i = l4; i < end; i += 2) sum += uint32_t(b[i]) << 8 | (i + 1 < end ? b[i + 1] : 0);
    uint16_t c = uint16_t(~fold(sum));
    if (c == 0) c = 0xffff;
    b[field] = uint8_t(c >> 8);
    b[field + 1] = uint8_t(c);
    return true;
}

} // namespace ztg::fuzz
