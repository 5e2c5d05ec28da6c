// Completes the TCP/UDP checksum a pod's kernel left to an offload that never ran. With tx
// checksumming on (a veth's default) the sender marks the packet CHECKSUM_PARTIAL and
// leaves in the checksum field the folded, non-complemented pseudo-header sum (Linux's
// __tcp_v4_send_check, udp4_hwcsum); neither net_af_packet nor net_af_xdp tells us so
// (no mbuf flag for TP_STATUS_CSUMNOTREADY, no hint in an AF_XDP descriptor), so the
// field's value is the only sign, and the ztunnel's kernel drops such a packet once it is
// decapsulated there.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <rte_ip.h>
#include <rte_mbuf.h>

#include "dataplane/mbuf.hpp"
#include "dataplane/parse.hpp"

namespace ztg {

namespace offload_detail {

// The folded ones' complement sum of the IPv4 pseudo header (source, destination, zero,
// protocol, L4 length) as it lies in memory, i.e. what rte_ipv4_phdr_cksum(ip, 0) returns,
// from fields parse_frame already read. Summing the raw 32-bit words and folding gives the
// same 16-bit sum as summing their 16-bit halves; {0, proto} read as a little-endian
// 16-bit word is proto << 8.
inline uint16_t pseudo_sum(const Parsed& p, uint32_t l4_len) {
    uint64_t s = uint64_t(p.src.raw) + p.dst.raw + (uint32_t(p.proto) << 8) +
                 rte_cpu_to_be_16(uint16_t(l4_len));
    s = (s & 0xffff) + ((s >> 16) & 0xffff) + (s >> 32); // s < 2^34 before, <= 0x20002 after
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return uint16_t(s);
}

// The byte at offset off (< pkt_len) of m's data, in whichever segment holds it.
inline uint8_t* byte_at(rte_mbuf* m, uint32_t off) {
    while (off >= m->data_len) {
        off -= m->data_len;
        m = m->next;
    }
    return rte_pktmbuf_mtod_offset(m, uint8_t*, off);
}

// The 16-bit field at off as it lies in memory; it may straddle two segments.
inline uint16_t read16(rte_mbuf* m, uint32_t off) {
    if (off + 2 <= m->data_len) [[likely]] {
        uint16_t v;
        std::memcpy(&v, rte_pktmbuf_mtod_offset(m, const uint8_t*, off), 2);
        return v;
    }
    return uint16_t(*byte_at(m, off) | *byte_at(m, off + 1) << 8);
}

inline void write16(rte_mbuf* m, uint32_t off, uint16_t v) {
    if (off + 2 <= m->data_len) [[likely]] {
        std::memcpy(rte_pktmbuf_mtod_offset(m, uint8_t*, off), &v, 2);
        return;
    }
    *byte_at(m, off) = uint8_t(v);
    *byte_at(m, off + 1) = uint8_t(v >> 8);
}

} // namespace offload_detail

// If m (p = parse_frame(m)) is an unfragmented IPv4 TCP or UDP packet whose checksum field
// equals the pseudo-header sum P, completes the checksum as the sender's offload would
// have and returns true; otherwise leaves m as it is and returns false. The packet must be
// whole in m (pkt_len covers the IPv4 total length; parse_frame vouches for it) and its L4
// header long enough to hold the field; a chained mbuf is summed over all its segments.
// Costs the pseudo-header sum and a compare when the checksum is not partial; no
// allocation.
//
// Why a correct checksum is never changed: let X be the sum of the L4 header and payload
// with the checksum field taken as zero. A correct field holds C = ~(P + X). Completion
// only happens when the field holds P, and then writes ~(X + field) = ~(X + P) = C: the
// checksum that is correct for the packet. So a correct checksum that happens to equal P
// is rewritten with itself, and one that differs from P is not looked at again.
//
// A wrong checksum that is not P is left for the receiver to judge. A wrong value that
// equals P (1 in 65536 of random wrong values) is indistinguishable from a partial one
// and gets "corrected": whatever corruption it stood for is then no longer detectable.
//
// The result is what the sender's kernel writes when it completes the sum in software
// (skb_checksum_help): a sum of 0 is written as 0xFFFF, which UDP requires (0 there means
// "no checksum") and which is the same value for TCP in ones' complement. A UDP field of
// 0 is never P (P includes the nonzero protocol, so it is never 0): never touched.
inline bool complete_partial_l4_checksum(rte_mbuf* m, const Parsed& p) {
    using namespace offload_detail;
    if (!p.ipv4 || p.fragment) return false;
    uint32_t field, min_hdr;
    if (p.proto == IPPROTO_TCP) {
        field = 16;
        min_hdr = 20;
    } else if (p.proto == IPPROTO_UDP) {
        field = 6;
        min_hdr = 8;
    } else {
        return false;
    }
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, p.l3_off); // 1st segment
    const uint32_t l4_off = p.l3_off + (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4u;
    const uint32_t end = p.l3_off + uint32_t(p.ip_len);
    if (end < l4_off + min_hdr || m->pkt_len < end) return false;
    const uint32_t l4_len = end - l4_off;
    field += l4_off;
    if (read16(m, field) != pseudo_sum(p, l4_len)) [[likely]]
        return false;
    write16(m, field, 0);
    write16(m, field, l4_checksum(m, ip, l4_off)); // sums P's place as 0
    return true;
}

} // namespace ztg
