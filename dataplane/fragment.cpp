#include "dataplane/fragment.hpp"

#include <algorithm>
#include <cstring>

#include <rte_ip.h>

namespace ztg {

namespace {

constexpr uint8_t kOptEnd = 0, kOptNop = 1, kOptCopied = 0x80;

// The options of a later fragment: those without the copied flag become No-Operation.
// A malformed option list is blanked from the bad option on.
void blank_uncopied_options(uint8_t* hdr, uint32_t ihl) {
    for (uint32_t i = sizeof(rte_ipv4_hdr); i < ihl;) {
        const uint8_t type = hdr[i];
        if (type == kOptEnd) return;
        if (type == kOptNop) {
            i++;
            continue;
        }
        const uint32_t len = i + 1 < ihl ? hdr[i + 1] : 0;
        if (len < 2 || i + len > ihl) {
            std::memset(hdr + i, kOptNop, ihl - i);
            return;
        }
        if (!(type & kOptCopied)) std::memset(hdr + i, kOptNop, len);
        i += len;
    }
}

} // namespace

Fragments fragment_ipv4(const rte_mbuf* m, const Parsed& p, uint16_t max_len, rte_mempool* pool,
                        rte_mbuf** out) {
    // parse_frame vouched for the header being in the first segment, the packet in m.
    alignas(8) uint8_t first[60], later[60];
    const auto* ip = rte_pktmbuf_mtod_offset(m, const uint8_t*, p.l3_off);
    const uint32_t ihl = (ip[0] & 0x0f) * 4u;
    std::memcpy(first, ip, ihl);
    if (rte_raw_cksum(first, ihl) != 0xffff) return {0, false, true};
    std::memcpy(later, ip, ihl);
    blank_uncopied_options(later, ihl);

    const uint32_t room = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
    const uint32_t limit = std::min<uint32_t>(max_len, room);
    if (limit < ihl + 8) return {};
    const uint32_t unit = (limit - ihl) & ~7u; // payload bytes per fragment but the last
    const uint32_t payload = p.ip_len - ihl;
    const uint32_t n = (payload + unit - 1) / unit;
    const uint16_t frag =
        rte_be_to_cpu_16(reinterpret_cast<const rte_ipv4_hdr*>(first)->fragment_offset);
    const uint32_t offset0 = frag & RTE_IPV4_HDR_OFFSET_MASK; // in 8-byte units
    const uint16_t last_mf = frag & RTE_IPV4_HDR_MF_FLAG;
    if (n == 0 || n > kMaxFragments || offset0 + (payload - 1) / 8 > RTE_IPV4_HDR_OFFSET_MASK)
        return {};
    if (rte_pktmbuf_alloc_bulk(pool, out, n) != 0) return {0, true};

    for (uint32_t k = 0; k < n; k++) {
        const uint32_t len = std::min(unit, payload - k * unit);
        auto* b = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(out[k], uint16_t(ihl + len)));
        std::memcpy(b, k == 0 ? first : later, ihl);
        auto* h = reinterpret_cast<rte_ipv4_hdr*>(b);
        h->total_length = rte_cpu_to_be_16(uint16_t(ihl + len));
        h->fragment_offset = rte_cpu_to_be_16(
            uint16_t((offset0 + k * unit / 8) | (k + 1 < n ? RTE_IPV4_HDR_MF_FLAG : last_mf)));
        h->hdr_checksum = 0;
        h->hdr_checksum = uint16_t(~rte_raw_cksum(h, ihl));
        const uint32_t from = p.l3_off + ihl + k * unit;
        const void* src = rte_pktmbuf_read(m, from, len, b + ihl); // copies if chained
        if (src != b + ihl) std::memcpy(b + ihl, src, len);
    }
    return {uint16_t(n), false};
}

} // namespace ztg
