#include "dataplane/fragment.hpp"

#include <algorithm>
#include <cerrno>

#include <rte_ip.h>
#include <rte_ip_frag.h>

#include "dataplane/mbuf.hpp"

namespace ztg {

Fragments fragment_ipv4(rte_mbuf* m, const Parsed& p, uint16_t max_len, rte_mempool* pool,
                        rte_mbuf** out) {
    // parse_frame vouched for the header being in the first segment, the packet in m.
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, p.l3_off);
    if (rte_ipv4_cksum(ip) != 0) return {0, false, true}; // a valid header sums to 0xffff
    const uint32_t ihl = rte_ipv4_hdr_len(ip);
    const uint32_t room = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
    const uint32_t limit = std::min<uint32_t>(max_len, room);
    if (limit < ihl + 8) return {};
    const uint32_t payload = p.ip_len - ihl;
    const uint32_t offset0 = rte_be_to_cpu_16(ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK;
    // DPDK does not check that the last offset still fits the 13-bit field.
    if (payload == 0 || offset0 + (payload - 1) / 8 > RTE_IPV4_HDR_OFFSET_MASK) return {};

    // DPDK's copy fragmenter wants the mbuf to start at the IPv4 header and end with it.
    rte_pktmbuf_adj(m, p.l3_off);
    truncate(m, p.ip_len);
    const int32_t n =
        rte_ipv4_fragment_copy_nonseg_packet(m, out, kMaxFragments, uint16_t(limit), pool);
    if (n <= 0) return {0, n == -ENOMEM, false};
    for (int32_t k = 0; k < n; k++) { // DPDK leaves the checksum 0
        auto* h = rte_pktmbuf_mtod(out[k], rte_ipv4_hdr*);
        h->hdr_checksum = rte_ipv4_cksum(h);
    }
    return {uint16_t(n), false, false};
}

} // namespace ztg
