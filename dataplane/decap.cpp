#include "dataplane/decap.hpp"

#include <cstring>

#include <rte_ether.h>
#include <rte_geneve.h>
#include <rte_ip.h>
#include <rte_udp.h>

#include "dataplane/cksum.hpp"

namespace ztg {

namespace {

GeneveView drop(Ctr why) {
    GeneveView v;
    v.verdict = Tunnel::Drop;
    v.reason = why;
    return v;
}

} // namespace

GeneveView inspect_geneve(const rte_mbuf* m, const Parsed& parsed, const DecapParams& p) {
    const auto* b = rte_pktmbuf_mtod(m, const uint8_t*);
    const uint32_t len = m->data_len;
    GeneveView v;
    if (parsed.l3_off == 0) return v; // no IPv4 header
    const uint32_t off = parsed.l3_off;
    rte_ipv4_hdr ip;
    std::memcpy(&ip, b + off, sizeof ip);
    if (ip.next_proto_id != IPPROTO_UDP || ip.src_addr != p.remote.raw ||
        ip.dst_addr != p.local.raw)
        return v;
    const uint32_t ihl = (ip.version_ihl & 0x0f) * 4u;
    if (len < off + ihl + sizeof(rte_udp_hdr)) return v;
    rte_udp_hdr udp;
    std::memcpy(&udp, b + off + ihl, sizeof udp);
    if (udp.dst_port != rte_cpu_to_be_16(p.udp_port)) return v;

    // From here on the frame claims to be our tunnel: every defect is a counted drop.
    const uint32_t total = rte_be_to_cpu_16(ip.total_length);
    if ((ip.version_ihl >> 4) != 4 || ihl < sizeof(rte_ipv4_hdr) ||
        total < ihl + sizeof(rte_udp_hdr) || off + total > m->pkt_len || off + total > len)
        return drop(Ctr::decap_bad_outer);
    if (rte_raw_cksum(b + off, ihl) != 0xffff) return drop(Ctr::decap_bad_outer);
    if (rte_be_to_cpu_16(ip.fragment_offset) & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
        return drop(Ctr::decap_bad_outer); // the kernel would reassemble; we never fragment
    const uint32_t udp_len = rte_be_to_cpu_16(udp.dgram_len);
    if (udp_len != total - ihl || udp_len < sizeof(rte_udp_hdr) + sizeof(rte_geneve_hdr))
        return drop(Ctr::decap_bad_outer);
    if (udp.dgram_cksum != 0) {
        const auto* iph = reinterpret_cast<const rte_ipv4_hdr*>(b + off);
        if (rte_ipv4_udptcp_cksum_verify(iph, b + off + ihl) != 0)
            return drop(Ctr::decap_bad_outer);
    }
    const uint32_t g = off + ihl + sizeof(rte_udp_hdr);
    const uint8_t ver_optlen = b[g], flags = b[g + 1];
    if ((ver_optlen >> 6) != 0) return drop(Ctr::decap_bad_version);
    const uint32_t opt_len = (ver_optlen & 0x3f) * 4u;
    if (flags & 0x80) return drop(Ctr::decap_oam); // O: a control message, never forwarded
    if ((flags & 0x40) && opt_len != 0)
        return drop(Ctr::decap_critical); // C: options we cannot parse
    const uint32_t inner = g + uint32_t(sizeof(rte_geneve_hdr)) + opt_len;
    if (inner + sizeof(rte_ether_hdr) > off + total) return drop(Ctr::decap_bad_outer);
    uint16_t proto;
    std::memcpy(&proto, b + g + 2, 2);
    if (proto != rte_cpu_to_be_16(RTE_GENEVE_TYPE_ETH)) return drop(Ctr::decap_bad_inner);

    v.verdict = Tunnel::Ok;
    v.inner_off = uint16_t(inner);
    v.outer_end = uint16_t(off + total);
    v.vni = uint32_t(b[g + 4]) << 16 | uint32_t(b[g + 5]) << 8 | b[g + 6];
    v.outer_ecn = ip.type_of_service & RTE_IPV4_HDR_ECN_MASK;
    return v;
}

bool ecn_decapsulate(uint8_t outer, uint8_t* ip) {
    constexpr uint8_t kNotEct = 0, kEct1 = 1, kEct0 = 2, kCe = 3;
    const uint8_t inner = ip[1] & 3;
    uint8_t out = inner;
    if (outer == kCe) {
        if (inner == kNotEct) return false;
        out = kCe;
    } else if (outer == kEct1 && inner == kEct0) {
        out = kEct1;
    }
    if (out != inner) {
        const uint16_t old_word = uint16_t(ip[0] << 8 | ip[1]);
        ip[1] = uint8_t((ip[1] & ~3) | out);
        const uint16_t new_word = uint16_t(ip[0] << 8 | ip[1]);
        const uint16_t hc = cksum_replace(uint16_t(ip[10] << 8 | ip[11]), old_word, new_word);
        ip[10] = uint8_t(hc >> 8);
        ip[11] = uint8_t(hc);
    }
    return true;
}

} // namespace ztg
