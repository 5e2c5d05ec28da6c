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

#include "dataplane/cksum.hpp"
#include "dataplane/mbuf.hpp"
#include "dataplane/parse.hpp"

namespace ztg {

namespace offload_detail {

// The pseudo-header sum from the fields parse_frame read.
[[gnu::always_inline]] inline uint16_t pseudo_sum(const Parsed& p, uint32_t l4_len) {
    return ipv4_pseudo_sum(p.src.raw, p.dst.raw, p.proto, uint16_t(l4_len));
}

} // namespace offload_detail

// Where the TCP/UDP checksum field of m (p = parse_frame(m)) is, if m is an unfragmented
// IPv4 TCP or UDP packet whose L4 header is long enough to hold it: field, the field's
// offset in the packet, and l4_len, the L4 length the pseudo header covers. field == 0:
// none. Inline and branch-light: it runs for every packet from a pod.
struct L4Field {
    uint32_t field = 0, l4_off = 0, l4_len = 0;
};
[[gnu::always_inline]] inline L4Field l4_checksum_field(const rte_mbuf* m, const Parsed& p) {
    const bool tcp = p.proto == IPPROTO_TCP;
    if (!p.ipv4 || p.fragment || !(tcp || p.proto == IPPROTO_UDP)) return {};
    const uint32_t field = tcp ? 16 : 6, min_hdr = tcp ? 20 : 8;
    const uint32_t end = p.l3_off + uint32_t(p.ip_len);
    if (end < p.l4_off + min_hdr || m->pkt_len < end) return {};
    return {p.l4_off + field, p.l4_off, end - p.l4_off};
}

// Whether that field (f = l4_checksum_field(m, p)) holds the pseudo-header sum P: the
// cheap half of the check, a 16-bit read and the sum of fields p already holds.
[[gnu::always_inline]] inline bool l4_checksum_is_partial(rte_mbuf* m, const Parsed& p,
                                                          const L4Field& f) {
    return f.field != 0 && mbuf_read16(m, f.field) == offload_detail::pseudo_sum(p, f.l4_len);
}

// The expensive half, out of line: sums the L4 header and payload with the field as 0
// and writes the complement (the field held P, which the sum must not include).
[[gnu::noinline]] inline void complete_l4_checksum(rte_mbuf* m, const Parsed& p, const L4Field& f) {
    mbuf_write16(m, f.field, 0);
    mbuf_write16(
        m, f.field,
        l4_checksum(m, rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, p.l3_off), f.l4_off));
}

// If m (p = parse_frame(m)) is an unfragmented IPv4 TCP or UDP packet whose checksum field
// equals the pseudo-header sum P, completes the checksum as the sender's offload would
// have and returns true; otherwise leaves m as it is and returns false. The packet must be
// whole in m (pkt_len covers the IPv4 total length; parse_frame vouches for it) and its L4
// header long enough to hold the field; a chained mbuf is summed over all its segments.
// Costs a test of the parse's flag when the checksum is certainly not partial; no allocation.
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
//
// p must come from parse_frame of m: its csum_maybe_partial flag (set by the parse, never
// false for a partial checksum) answers most packets before the field is looked at.
[[gnu::always_inline]] inline bool complete_partial_l4_checksum(rte_mbuf* m, const Parsed& p) {
    if (!p.csum_maybe_partial) [[likely]]
        return false;
    const L4Field f = l4_checksum_field(m, p);
    if (!l4_checksum_is_partial(m, p, f)) [[likely]]
        return false;
    complete_l4_checksum(m, p, f);
    return true;
}

} // namespace ztg
