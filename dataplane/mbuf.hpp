// mbuf helpers that hold for chained (multi-segment) mbufs too, where DPDK's own fall
// short: rte_pktmbuf_trim only trims within the last segment, and DPDK 22.11's
// rte_raw_cksum_mbuf loses carries when a segment starts at an odd offset.
#pragma once

#include <cstdint>
#include <cstring>

#include <rte_ip.h>
#include <rte_mbuf.h>

#include "dataplane/cksum.hpp"

namespace ztg {

// Cuts m to its first `len` bytes, freeing whole segments past them. len <= pkt_len.
inline void truncate(rte_mbuf* m, uint32_t len) {
    if (m->pkt_len <= len) return;
    if (m->nb_segs == 1) [[likely]] {
        m->data_len = uint16_t(len);
        m->pkt_len = len;
        return;
    }
    uint32_t left = len;
    rte_mbuf* seg = m;
    uint16_t segs = 1;
    while (left > seg->data_len && seg->next != nullptr) {
        left -= seg->data_len;
        seg = seg->next;
        segs++;
    }
    seg->data_len = uint16_t(left);
    if (seg->next != nullptr) {
        rte_pktmbuf_free(seg->next); // frees the rest of the chain
        seg->next = nullptr;
    }
    m->nb_segs = segs;
    m->pkt_len = len;
}

// The UDP (or TCP) checksum of the IPv4 datagram whose L4 header starts at l4_off of m,
// over every segment: each segment's sum is folded to 16 bits before it is byte-swapped
// for an odd starting offset.
inline uint16_t l4_checksum(const rte_mbuf* m, const rte_ipv4_hdr* ip, uint32_t l4_off) {
    const uint32_t l4_len =
        uint32_t(rte_be_to_cpu_16(ip->total_length)) - (ip->version_ihl & 0xf) * 4u;
    uint32_t sum = rte_ipv4_phdr_cksum(ip, 0);
    uint32_t off = l4_off, done = 0;
    for (const rte_mbuf* seg = m; seg != nullptr && done < l4_len; seg = seg->next) {
        if (off >= seg->data_len) {
            off -= seg->data_len;
            continue;
        }
        const uint32_t n = std::min<uint32_t>(seg->data_len - off, l4_len - done);
        uint32_t s = rte_raw_cksum(rte_pktmbuf_mtod_offset(seg, const uint8_t*, off), n); // folded
        if (done & 1) s = ((s & 0xff) << 8) | (s >> 8);
        sum += s;
        done += n;
        off = 0;
    }
    const uint16_t c = fold_complement(sum);
    return c == 0 ? 0xffff : c; // UDP: 0 means "no checksum"
}

// The byte at offset off (< pkt_len) of m's data, in whichever segment holds it.
inline uint8_t* mbuf_byte_at(rte_mbuf* m, uint32_t off) {
    while (off >= m->data_len) {
        off -= m->data_len;
        m = m->next;
    }
    return rte_pktmbuf_mtod_offset(m, uint8_t*, off);
}

// The 16-bit field at off (off + 2 <= pkt_len) as it lies in memory; it may straddle two
// segments.
inline uint16_t mbuf_read16(rte_mbuf* m, uint32_t off) {
    if (off + 2 <= m->data_len) [[likely]] {
        uint16_t v;
        std::memcpy(&v, rte_pktmbuf_mtod_offset(m, const uint8_t*, off), 2);
        return v;
    }
    return uint16_t(*mbuf_byte_at(m, off) | *mbuf_byte_at(m, off + 1) << 8);
}

inline void mbuf_write16(rte_mbuf* m, uint32_t off, uint16_t v) {
    if (off + 2 <= m->data_len) [[likely]] {
        std::memcpy(rte_pktmbuf_mtod_offset(m, uint8_t*, off), &v, 2);
        return;
    }
    *mbuf_byte_at(m, off) = uint8_t(v);
    *mbuf_byte_at(m, off + 1) = uint8_t(v >> 8);
}

} // namespace ztg
