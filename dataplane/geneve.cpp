#include "dataplane/geneve.hpp"

#include <cstring>

namespace ztg {

EncapTemplate make_template(const TunnelParams& tp) {
    EncapTemplate t;
    uint8_t* b = t.bytes.data();

    rte_ether_hdr eth{};
    eth.dst_addr = tp.outer_dst;
    eth.src_addr = tp.outer_src;
    eth.ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    std::memcpy(b, &eth, sizeof eth);

    rte_ipv4_hdr ip{};
    ip.version_ihl = RTE_IPV4_VHL_DEF;
    ip.type_of_service = 0;
    ip.total_length = 0;
    ip.packet_id = 0; // DF set: the ID carries no meaning (RFC 6864)
    ip.fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
    ip.time_to_live = 64;
    ip.next_proto_id = IPPROTO_UDP;
    ip.src_addr = tp.local.raw;
    ip.dst_addr = tp.remote.raw;
    // Host-order sum of the header's 16-bit words, checksum and length taken as 0.
    uint32_t sum = 0;
    const auto* w = reinterpret_cast<const uint8_t*>(&ip);
    for (size_t i = 0; i < sizeof ip; i += 2) sum += uint32_t(w[i]) << 8 | w[i + 1];
    t.ip_sum = sum;
    std::memcpy(b + kOuterIpOff, &ip, sizeof ip);

    rte_udp_hdr udp{};
    udp.dst_port = rte_cpu_to_be_16(tp.udp_port);
    std::memcpy(b + kOuterUdpOff, &udp, sizeof udp);

    rte_geneve_hdr g{};
    g.ver = 0;
    g.opt_len = 0;
    g.oam = 0;
    g.critical = 0;
    g.proto = rte_cpu_to_be_16(kTransEtherBridging);
    g.vni[0] = uint8_t(tp.vni >> 16);
    g.vni[1] = uint8_t(tp.vni >> 8);
    g.vni[2] = uint8_t(tp.vni);
    std::memcpy(b + kGeneveOff, &g, sizeof g);

    rte_ether_hdr inner{};
    inner.dst_addr = tp.inner_dst;
    inner.src_addr = tp.inner_src;
    inner.ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    std::memcpy(b + kOuterLen, &inner, sizeof inner);

    t.udp_checksum = tp.udp_checksum;
    return t;
}

} // namespace ztg
