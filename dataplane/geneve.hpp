// Geneve encapsulation as the kernel's istioout device does it (RFC 8926): a 64-byte
// template (outer Ethernet + IPv4 + UDP + Geneve, then the inner Ethernet header) is
// copied in front of the packet's IPv4 header; per packet only the lengths, the ECN bits,
// the incremental IPv4 checksum and the UDP source port change.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include <rte_ether.h>
#include <rte_geneve.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>
#include <rte_udp.h>

#include "dataplane/cksum.hpp"
#include "dataplane/crc32c.hpp"
#include "dataplane/mbuf.hpp"
#include "dataplane/net.hpp"
#include "dataplane/parse.hpp"

namespace ztg {

constexpr uint16_t kGenevePort = RTE_GENEVE_DEFAULT_PORT;     // 6081
constexpr uint16_t kTransEtherBridging = RTE_GENEVE_TYPE_ETH; // 0x6558
constexpr uint16_t kOuterLen = sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr) +
                               sizeof(rte_geneve_hdr); // 50
constexpr uint16_t kOuterIpOff = sizeof(rte_ether_hdr);
constexpr uint16_t kOuterUdpOff = kOuterIpOff + sizeof(rte_ipv4_hdr);
constexpr uint16_t kGeneveOff = kOuterUdpOff + sizeof(rte_udp_hdr);
static_assert(kOuterLen == 50, "outer headers are 14 + 20 + 8 + 8 bytes");

struct TunnelParams {
    rte_ether_addr outer_src{}, outer_dst{}; // this port's MAC, the ztunnel next hop
    Ip4 local, remote;                       // outer source, outer destination
    uint32_t vni = 1001;
    uint16_t udp_port = kGenevePort;
    rte_ether_addr inner_src{}, inner_dst{}; // istioout, pistioout
    bool udp_checksum = false;
};

// The precomputed header: exactly one cache line.
struct alignas(64) EncapTemplate {
    static constexpr uint16_t kSize = kOuterLen + sizeof(rte_ether_hdr); // 64
    std::array<uint8_t, kSize> bytes{};
    uint32_t ip_sum = 0; // one's-complement sum of the outer IPv4 header, length 0, ECN 0
    bool udp_checksum = false;
};
static_assert(sizeof(EncapTemplate::bytes) == 64);

EncapTemplate make_template(const TunnelParams& t);

// UDP source port for a flow (RFC 8926 §3.3): CRC32-C (one instruction per word) over
// the inner addresses, then ports and protocol, folded into the dynamic range
// 49152-65535, so it is never 0 and stable per flow. Fragments hash with ports 0.
inline uint16_t flow_source_port(const Parsed& p) {
    uint32_t h = crc32c_8byte(uint64_t(p.src.raw) << 32 | p.dst.raw, 0x5A17C0DEu);
    h = crc32c_8byte(uint64_t(p.sport.raw) << 16 | p.dport.raw | uint64_t(p.proto) << 32, h);
    return uint16_t(0xC000u | ((h ^ (h >> 16)) & 0x3FFFu));
}

// Writes the template's headers at h and what changes per packet: the outer IPv4 total
// length (outer_len) and checksum, the ECN bits, the UDP source port and length. hdr is 64
// or kOuterLen, as for push_tunnel_headers. The UDP checksum, if on, is the caller's.
inline void write_tunnel_headers(uint8_t* h, const EncapTemplate& t, uint16_t hdr,
                                 uint16_t outer_len, uint8_t ecn, uint16_t sport) {
    if (hdr == EncapTemplate::kSize) {
        rte_mov64(h, t.bytes.data());
    } else {
        rte_mov32(h, t.bytes.data());
        rte_mov16(h + 32, t.bytes.data() + 32);
        std::memcpy(h + 48, t.bytes.data() + 48, kOuterLen - 48);
    }
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(h + kOuterIpOff);
    ip->type_of_service = ecn;
    ip->total_length = rte_cpu_to_be_16(outer_len);
    // The template's sum was taken in host order of the 16-bit words; tos is the low byte
    // of the first word, the total length the second word.
    ip->hdr_checksum = rte_cpu_to_be_16(fold_complement(t.ip_sum + ecn + outer_len));
    auto* udp = reinterpret_cast<rte_udp_hdr*>(h + kOuterUdpOff);
    udp->src_port = rte_cpu_to_be_16(sport);
    udp->dgram_len = rte_cpu_to_be_16(uint16_t(outer_len - sizeof(rte_ipv4_hdr)));
}

#ifdef __SSE4_1__
// write_tunnel_headers for a 64-byte header, as the vector path writes it: the template's
// four 16-byte lanes are loaded, the per-packet fields put into lanes 0..2 in registers, and
// the header leaves in four 16-byte stores (AVX2: two 32-byte ones), with no narrow store
// over a wide one. The same bytes as write_tunnel_headers (tests/unit/geneve_test.cpp).
[[gnu::always_inline]] inline void write_tunnel_headers_wide(uint8_t* h, const EncapTemplate& t,
                                                             uint16_t outer_len, uint8_t ecn,
                                                             uint16_t sport) {
    const auto* s = reinterpret_cast<const __m128i*>(t.bytes.data()); // 64-byte aligned
    __m128i a = _mm_load_si128(s), b = _mm_load_si128(s + 1);
    __m128i c = _mm_load_si128(s + 2);
    const __m128i d = _mm_load_si128(s + 3);
    const uint16_t sum = fold_complement(t.ip_sum + ecn + outer_len);
    a = _mm_insert_epi8(a, ecn, kOuterIpOff + 1);                            // tos: byte 15
    b = _mm_insert_epi16(b, __builtin_bswap16(outer_len), 0);                // 16-17
    b = _mm_insert_epi16(b, __builtin_bswap16(sum), 4);                      // 24-25
    c = _mm_insert_epi16(c, __builtin_bswap16(sport), 1);                    // 34-35
    c = _mm_insert_epi16(c, __builtin_bswap16(uint16_t(outer_len - 20)), 3); // 38-39
#ifdef __AVX2__
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), _mm256_set_m128i(b, a));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 32), _mm256_set_m128i(d, c));
#else
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 16), b);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 32), c);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 48), d);
#endif
}

// encapsulate's common case on the vector path: a one-segment mbuf whose IPv4 header has
// the 64 bytes of headroom before it, without the outer UDP checksum; the caller has
// checked all three and the tunnel MTU. The same result as encapsulate.
[[gnu::always_inline]] inline void encapsulate_wide(rte_mbuf* m, const Parsed& p,
                                                    const EncapTemplate& t) {
    const uint16_t off = uint16_t(m->data_off + p.l3_off - EncapTemplate::kSize);
    const uint16_t len = uint16_t(p.ip_len + EncapTemplate::kSize);
    m->data_off = off;
    m->data_len = len;
    m->pkt_len = len;
    write_tunnel_headers_wide(static_cast<uint8_t*>(m->buf_addr) + off, t,
                              uint16_t(len - sizeof(rte_ether_hdr)), p.tos & RTE_IPV4_HDR_ECN_MASK,
                              flow_source_port(p));
}
#endif

// Prepends the tunnel headers to m and fills in what changes per packet. hdr is 64 (the
// outer headers plus the template's inner Ethernet header: m holds an L3 payload) or
// kOuterLen (m already starts with the inner Ethernet header). Returns false, m unchanged,
// if the mbuf lacks headroom.
inline bool push_tunnel_headers(rte_mbuf* m, const EncapTemplate& t, uint16_t hdr, uint8_t ecn,
                                uint16_t sport) {
    auto* h = reinterpret_cast<uint8_t*>(rte_pktmbuf_prepend(m, hdr));
    if (h == nullptr) return false;
    const uint16_t outer_len = uint16_t(m->pkt_len - sizeof(rte_ether_hdr));
    write_tunnel_headers(h, t, hdr, outer_len, ecn, sport);
    if (t.udp_checksum) {
        auto* udp = reinterpret_cast<rte_udp_hdr*>(h + kOuterUdpOff);
        udp->dgram_cksum = 0;
        udp->dgram_cksum =
            l4_checksum(m, reinterpret_cast<rte_ipv4_hdr*>(h + kOuterIpOff), kOuterUdpOff);
    }
    return true;
}

// Encapsulates the IPv4 packet described by p (parsed from m) as istioout does: the pod's
// Ethernet header (and VLAN tag, and any padding) is replaced by the template's inner one.
// The caller has checked that p.ip_len fits the tunnel MTU. Returns false (m to be
// dropped) if the mbuf lacks headroom. Always inline: GCC 12 at -O2 had made it a call
// from the pods stage (callgrind: 18 of the stage's 376 instructions a packet).
[[gnu::always_inline]] inline bool encapsulate(rte_mbuf* m, const Parsed& p,
                                               const EncapTemplate& t) {
    // RFC 6040 normal mode: the outer ECN field is a copy of the inner one; DSCP stays 0.
    const uint8_t ecn = p.tos & RTE_IPV4_HDR_ECN_MASK;
    const uint32_t l3 = uint32_t(m->data_off) + p.l3_off; // the IPv4 header in the buffer
    if (m->nb_segs == 1 && l3 >= EncapTemplate::kSize && !t.udp_checksum) [[likely]] {
        // The common case, without the generic helpers' checks and read-backs: the headers
        // end where the IPv4 packet starts; the Ethernet padding is cut off.
        const uint16_t off = uint16_t(l3 - EncapTemplate::kSize);
        const uint16_t len = uint16_t(p.ip_len + EncapTemplate::kSize);
        m->data_off = off;
        m->data_len = len;
        m->pkt_len = len;
        write_tunnel_headers(static_cast<uint8_t*>(m->buf_addr) + off, t, EncapTemplate::kSize,
                             uint16_t(len - sizeof(rte_ether_hdr)), ecn, flow_source_port(p));
        return true;
    }
    if (m->nb_segs == 1) {
        m->data_off = uint16_t(l3);
        m->pkt_len = p.ip_len;
        m->data_len = p.ip_len;
    } else {
        rte_pktmbuf_adj(m, p.l3_off);
        truncate(m, p.ip_len);
    }
    return push_tunnel_headers(m, t, EncapTemplate::kSize, ecn, flow_source_port(p));
}

} // namespace ztg
