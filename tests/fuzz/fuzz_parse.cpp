// fuzz_parse: ztg::parse_frame over raw frame bytes, in one segment and split into a chain
// at an offset taken from the first byte. It must read nothing past a segment's data (ASan:
// tailroom is poisoned), and what it reports must hold: an IPv4 packet it vouches for lies
// within the frame, and the parse of a chain agrees with the parse of the same bytes in one
// segment whenever the first segment holds the headers. The vector path's parse
// (parse_frame_fast) gives parse_frame's result, every field, flat and chained.
#include <cstdint>
#include <cstring>

#include <rte_mempool.h>

#include "dataplane/parse.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::fuzz;

namespace {

rte_mempool* g_pool = nullptr;

void check(const Parsed& p, const rte_mbuf* m, const std::vector<uint8_t>& b, const char* how) {
    const std::string ctx =
        std::string(how) + " frame " + hex(b.data(), std::min<size_t>(b.size(), 64));
    if (!p.ipv4) {
        FUZZ_CHECK(p.src.raw == 0, ctx + ": non-IPv4 with a source address (would be looked up)");
        return;
    }
    FUZZ_CHECK(p.l3_off == 14 || p.l3_off == 18, ctx + ": l3_off " + std::to_string(p.l3_off));
    FUZZ_CHECK(p.ip_len >= 20, ctx + ": ip_len " + std::to_string(p.ip_len));
    FUZZ_CHECK(uint32_t(p.l3_off) + p.ip_len <= m->pkt_len, ctx + ": packet past the frame");
    const size_t ihl = (b[p.l3_off] & 0x0f) * 4u;
    FUZZ_CHECK(ihl >= 20 && ihl <= p.ip_len, ctx + ": ihl");
    FUZZ_CHECK(p.l3_off + ihl <= m->data_len, ctx + ": IPv4 header not in the first segment");
    FUZZ_CHECK((b[p.l3_off] >> 4) == 4, ctx + ": version");
    const uint16_t type = be16(b, 12);
    FUZZ_CHECK(p.l3_off == 14 ? type == 0x0800 : (type == 0x8100 && be16(b, 16) == 0x0800),
               ctx + ": ethertype");
    FUZZ_CHECK(be16(b, p.l3_off + 2) == p.ip_len, ctx + ": ip_len is not the header's");
    FUZZ_CHECK(p.tos == b[p.l3_off + 1] && p.proto == b[p.l3_off + 9], ctx + ": tos/proto");
    uint32_t src, dst;
    std::memcpy(&src, &b[p.l3_off + 12], 4);
    std::memcpy(&dst, &b[p.l3_off + 16], 4);
    FUZZ_CHECK(p.src.raw == src && p.dst.raw == dst, ctx + ": addresses");
    const uint16_t frag = be16(b, p.l3_off + 6);
    FUZZ_CHECK(p.fragment == ((frag & 0x3fff) != 0), ctx + ": fragment flag");
    if (p.sport.raw != 0 || p.dport.raw != 0) {
        FUZZ_CHECK(!p.fragment, ctx + ": ports of a fragment");
        FUZZ_CHECK(p.proto == 6 || p.proto == 17 || p.proto == 132,
                   ctx + ": ports of a portless protocol");
        FUZZ_CHECK(p.l3_off + ihl + 4 <= m->data_len, ctx + ": ports past the first segment");
        uint16_t sp, dp;
        std::memcpy(&sp, &b[p.l3_off + ihl], 2);
        std::memcpy(&dp, &b[p.l3_off + ihl + 2], 2);
        FUZZ_CHECK(p.sport.raw == sp && p.dport.raw == dp, ctx + ": ports");
    }
}

bool same(const Parsed& a, const Parsed& b) {
    return a.ipv4 == b.ipv4 && a.l3_off == b.l3_off && a.ip_len == b.ip_len && a.proto == b.proto &&
           a.tos == b.tos && a.fragment == b.fragment && a.src == b.src && a.dst == b.dst &&
           a.sport == b.sport && a.dport == b.dport;
}

// Every field alike: the vector path's parse against the reference.
bool identical(const Parsed& a, const Parsed& b) {
    return same(a, b) && a.l4_off == b.l4_off && a.df == b.df &&
           a.csum_maybe_partial == b.csum_maybe_partial;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    ztg::test::eal_once();
    g_pool =
        rte_pktmbuf_pool_create("fuzz_parse", 63, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    if (g_pool == nullptr) std::abort();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > kMaxFrame) return -1;
    const unsigned base = rte_mempool_in_use_count(g_pool);
    const std::vector<uint8_t> b(data, data + size);

    // One segment (chained at kSegRoom if longer, as a PMD would).
    rte_mbuf* flat = make_mbuf(g_pool, data, size, 0);
    const Parsed pf = parse_frame(flat);
    check(pf, flat, b, "flat");

    // Two segments (or more), the first holding data[0] bytes.
    const size_t first = size == 0 ? 0 : std::max<size_t>(1, data[0]);
    rte_mbuf* chain = make_mbuf(g_pool, data, size, first);
    const Parsed pc = parse_frame(chain);
    check(pc, chain, b, "chain");
    if (pc.ipv4) {
        FUZZ_CHECK(pf.ipv4, "a chain parses as IPv4, the same bytes flat do not");
        Parsed want = pf;
        if (pc.sport.raw == 0 && pc.dport.raw == 0) want.sport = want.dport = Be16{};
        FUZZ_CHECK(same(pc, want), "chain and flat parse differ");
    }
    Parsed ff, fc;
    parse_frame_fast(flat, ff);
    parse_frame_fast(chain, fc);
    FUZZ_CHECK(identical(ff, pf), "parse_frame_fast differs, flat");
    FUZZ_CHECK(identical(fc, pc), "parse_frame_fast differs, chained");
    if (pf.ipv4) {
        const size_t ihl = (b[pf.l3_off] & 0x0f) * 4u;
        if (chain->data_len >= pf.l3_off + ihl + 4)
            FUZZ_CHECK(same(pc, pf),
                       "chain with the headers in its first segment parses differently");
    }

    rte_pktmbuf_free(flat);
    rte_pktmbuf_free(chain);
    unpoison_all();
    FUZZ_CHECK(rte_mempool_in_use_count(g_pool) == base, "parse leaked or freed an mbuf");
    return 0;
}
