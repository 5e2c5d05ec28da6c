// Parse stage: Ethernet, one optional 802.1Q tag, IPv4. Reads only bytes that are in the
// first segment; anything it cannot vouch for is marked not-IPv4 and never redirected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#ifdef __SSE4_1__
#include <immintrin.h>
#endif

#include "dataplane/cksum.hpp"
#include "dataplane/net.hpp"

namespace ztg {

struct Parsed {
    uint16_t l3_off = 0; // bytes of Ethernet (+VLAN) before the IPv4 header; set whenever
                         // 20 bytes of an IPv4 header are there, valid or not (0: none)
    uint16_t ip_len = 0; // IPv4 total length (trusted: checked against the frame)
    uint16_t l4_off = 0; // bytes before the L4 header (l3_off + IHL * 4) when ipv4
    uint8_t proto = 0;   // IPv4 protocol
    uint8_t tos = 0;     // DSCP + ECN
    bool ipv4 = false;   // a well-formed IPv4 header that fits in the frame
    bool fragment = false;
    bool df = false; // Don't Fragment
    // false: the TCP/UDP checksum is certainly not one the sender left to an offload
    // (offload.hpp; its field does not hold the pseudo-header sum, or there is none).
    // true: it may be (it holds that sum, or lies past the first segment): the caller
    // checks with complete_partial_l4_checksum. Computed here, where the header is in
    // registers, so that the usual packet costs the stage one test of a flag.
    bool csum_maybe_partial = false;
    Ip4 src, dst;
    Be16 sport, dport; // TCP/UDP/SCTP ports of a first fragment, else 0
};

// Parses the Ethernet frame of `len` readable bytes at b, of which the whole packet has
// `total_len` (>= len: the rest in further segments). Never reads past len. Always inline:
// it runs once per packet on the fast path, and GCC 12 at -O2 kept it out of line once
// node.cpp called it three times (a call and a 24-byte return through memory a packet).
[[gnu::always_inline]] inline Parsed parse_ether(const uint8_t* b, uint32_t len,
                                                 uint32_t total_len) {
    Parsed p;
    if (len < sizeof(rte_ether_hdr)) return p;

    uint16_t ether_type;
    std::memcpy(&ether_type, b + 12, 2);
    uint32_t off = sizeof(rte_ether_hdr);
    if (ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN)) {
        if (len < off + sizeof(rte_vlan_hdr)) return p;
        std::memcpy(&ether_type, b + off + 2, 2);
        off += sizeof(rte_vlan_hdr);
    }
    if (ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return p;
    if (len < off + sizeof(rte_ipv4_hdr)) return p;
    p.l3_off = uint16_t(off);

    rte_ipv4_hdr ip;
    std::memcpy(&ip, b + off, sizeof ip);
    const uint32_t ihl = (ip.version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4u;
    const uint32_t total = __builtin_bswap16(ip.total_length); // not DPDK's asm volatile
    if ((ip.version_ihl >> 4) != 4 || ihl < sizeof(rte_ipv4_hdr) || total < ihl ||
        total_len < off + total || len < off + ihl)
        return p;

    p.ip_len = uint16_t(total);
    p.l4_off = uint16_t(off + ihl);
    p.proto = ip.next_proto_id;
    p.tos = ip.type_of_service;
    p.src = Ip4{ip.src_addr};
    p.dst = Ip4{ip.dst_addr};
    const uint16_t frag = __builtin_bswap16(ip.fragment_offset);
    p.fragment = (frag & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0;
    p.df = (frag & RTE_IPV4_HDR_DF_FLAG) != 0;
    const bool has_ports =
        p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP || p.proto == IPPROTO_SCTP;
    if (has_ports && !p.fragment && total >= ihl + 4 && len >= off + ihl + 4) {
        std::memcpy(&p.sport.raw, b + off + ihl, 2);
        std::memcpy(&p.dport.raw, b + off + ihl + 2, 2);
    }
    const bool tcp = p.proto == IPPROTO_TCP;
    const uint32_t field = ihl + (tcp ? 16u : 6u); // from the IPv4 header
    if ((tcp || p.proto == IPPROTO_UDP) && !p.fragment && total >= field + 2) {
        uint16_t v;
        if (len >= off + field + 2) {
            std::memcpy(&v, b + off + field, 2);
            p.csum_maybe_partial =
                v == ipv4_pseudo_sum(ip.src_addr, ip.dst_addr, p.proto, uint16_t(total - ihl));
        } else {
            p.csum_maybe_partial = true;
        }
    }
    p.ipv4 = true;
    return p;
}

// The frame in m, from its first segment (the packet's length is pkt_len).
[[gnu::always_inline]] inline Parsed parse_frame(const rte_mbuf* m) {
    return parse_ether(rte_pktmbuf_mtod(m, const uint8_t*), m->data_len, m->pkt_len);
}

// The vector path (issue 14) is compiled where the target has SSE4.1 (every -Dcpu: DPDK's
// baseline, corei7, has SSE4.2). Without it the fast parse always hands over to
// parse_ether and the node's pods stage runs its scalar path whatever dpdk.fast_path says.

// The vector path's parse: the usual frame (untagged IPv4 without options, an unfragmented
// TCP segment whose header is in the first segment, at least 40 bytes) is recognised with
// one 16-byte compare over the EtherType and the IPv4 header's first 12 bytes, and written
// into p with three stores: the offsets, protocol, tos and flags composed in registers,
// then the addresses and ports copied as they lie in the frame. Returns false, p untouched,
// for any other frame (the caller then takes parse_ether). Writing into the caller's p, not
// returning a Parsed: the joined return of both parses made GCC 12 -O3 store the flags as
// bytes and reload them as a word, a store-forwarding stall a packet.
[[gnu::always_inline]] inline bool parse_ether_fast_into(const uint8_t* b, uint32_t len,
                                                         uint32_t total_len, Parsed& p) {
#ifdef __SSE4_1__
    constexpr uint32_t kL3 = sizeof(rte_ether_hdr), kL4 = kL3 + sizeof(rte_ipv4_hdr);
    if (len < kL4 + sizeof(rte_tcp_hdr)) [[unlikely]]
        return false;
    // Bytes 12..27: EtherType 08 00, version/IHL 0x45, tos, length, id, flags and offset
    // (MF and the offset 0: the high byte under 0x3f, the low one), TTL, TCP.
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 12));
    const __m128i mask = _mm_setr_epi8(-1, -1, -1, 0, 0, 0, 0, 0, 0x3f, -1, 0, -1, 0, 0, 0, 0);
    const __m128i want =
        _mm_setr_epi8(0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 0, IPPROTO_TCP, 0, 0, 0, 0);
    uint16_t len_be;
    std::memcpy(&len_be, b + 16, 2);
    const uint16_t total = __builtin_bswap16(len_be);
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(h, mask), want)) != 0xffff ||
        total < kL4 - kL3 + sizeof(rte_tcp_hdr) || total_len < kL3 + total) [[unlikely]]
        return false;
    uint32_t src, dst;
    uint16_t v;
    std::memcpy(&src, b + 26, 4);
    std::memcpy(&dst, b + 30, 4);
    std::memcpy(&v, b + kL4 + 16, 2);
    const bool partial = v == ipv4_pseudo_sum(src, dst, IPPROTO_TCP, uint16_t(total - 20));
    const bool df = (b[20] & (RTE_IPV4_HDR_DF_FLAG >> 8)) != 0;
    // l3_off, ip_len, l4_off, proto, tos | ipv4, fragment, df, csum_maybe_partial
    const uint64_t w0 = uint64_t(kL3) | uint64_t(total) << 16 | uint64_t(kL4) << 32 |
                        uint64_t(IPPROTO_TCP) << 48 | uint64_t(b[15]) << 56;
    const uint32_t w1 = 1u | uint32_t(df) << 16 | uint32_t(partial) << 24;
    auto* d = reinterpret_cast<uint8_t*>(&p);
    std::memcpy(d, &w0, 8);
    std::memcpy(d + 8, &w1, 4);
    std::memcpy(d + 12, b + 26, 12); // src, dst, sport, dport
    return true;
#else
    (void)b, (void)len, (void)total_len, (void)p;
    return false;
#endif
}
static_assert(offsetof(Parsed, ip_len) == 2 && offsetof(Parsed, l4_off) == 4 &&
                  offsetof(Parsed, proto) == 6 && offsetof(Parsed, tos) == 7 &&
                  offsetof(Parsed, ipv4) == 8 && offsetof(Parsed, fragment) == 9 &&
                  offsetof(Parsed, df) == 10 && offsetof(Parsed, csum_maybe_partial) == 11 &&
                  offsetof(Parsed, src) == 12 && offsetof(Parsed, dst) == 16 &&
                  offsetof(Parsed, sport) == 20 && offsetof(Parsed, dport) == 22 &&
                  sizeof(Parsed) == 24 && sizeof(bool) == 1,
              "parse_ether_fast_into writes Parsed by its layout");

// The frame in m, parsed into p as the vector path does: the fast parse, else parse_ether.
// The result is parse_frame's, field for field (tests/unit/parse_test.cpp, fuzz_parse).
// Returns true if the fast parse took it: p is then an untagged IPv4 header without
// options over an unfragmented TCP segment whose 20-byte header is in the first segment.
[[gnu::always_inline]] inline bool parse_frame_fast(const rte_mbuf* m, Parsed& p) {
    const auto* b = rte_pktmbuf_mtod(m, const uint8_t*);
    if (parse_ether_fast_into(b, m->data_len, m->pkt_len, p)) [[likely]]
        return true;
    p = parse_ether(b, m->data_len, m->pkt_len);
    return false;
}
// The same over bytes, for the tests.
inline Parsed parse_ether_fast(const uint8_t* b, uint32_t len, uint32_t total_len) {
    Parsed p;
    if (!parse_ether_fast_into(b, len, total_len, p)) p = parse_ether(b, len, total_len);
    return p;
}

} // namespace ztg
