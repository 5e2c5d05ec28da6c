// Parse stage: Ethernet, one optional 802.1Q tag, IPv4. Reads only bytes that are in the
// first segment; anything it cannot vouch for is marked not-IPv4 and never redirected.
#pragma once

#include <cstdint>
#include <cstring>

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include "dataplane/net.hpp"

namespace ztg {

struct Parsed {
    uint16_t l3_off = 0; // bytes of Ethernet (+VLAN) before the IPv4 header; set whenever
                         // 20 bytes of an IPv4 header are there, valid or not (0: none)
    uint16_t ip_len = 0; // IPv4 total length (trusted: checked against the frame)
    uint8_t proto = 0;   // IPv4 protocol
    uint8_t tos = 0;     // DSCP + ECN
    bool ipv4 = false;   // a well-formed IPv4 header that fits in the frame
    bool fragment = false;
    bool df = false; // Don't Fragment
    Ip4 src, dst;
    Be16 sport, dport; // TCP/UDP/SCTP ports of a first fragment, else 0
};

// Parses the Ethernet frame of `len` readable bytes at b, of which the whole packet has
// `total_len` (>= len: the rest in further segments). Never reads past len. Inline: it runs
// once per packet on the fast path.
inline Parsed parse_ether(const uint8_t* b, uint32_t len, uint32_t total_len) {
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
    const uint32_t total = rte_be_to_cpu_16(ip.total_length);
    if ((ip.version_ihl >> 4) != 4 || ihl < sizeof(rte_ipv4_hdr) || total < ihl ||
        total_len < off + total || len < off + ihl)
        return p;

    p.ip_len = uint16_t(total);
    p.proto = ip.next_proto_id;
    p.tos = ip.type_of_service;
    p.src = Ip4{ip.src_addr};
    p.dst = Ip4{ip.dst_addr};
    const uint16_t frag = rte_be_to_cpu_16(ip.fragment_offset);
    p.fragment = (frag & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0;
    p.df = (frag & RTE_IPV4_HDR_DF_FLAG) != 0;
    const bool has_ports =
        p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP || p.proto == IPPROTO_SCTP;
    if (has_ports && !p.fragment && total >= ihl + 4 && len >= off + ihl + 4) {
        std::memcpy(&p.sport.raw, b + off + ihl, 2);
        std::memcpy(&p.dport.raw, b + off + ihl + 2, 2);
    }
    p.ipv4 = true;
    return p;
}

// The frame in m, from its first segment (the packet's length is pkt_len).
inline Parsed parse_frame(const rte_mbuf* m) {
    return parse_ether(rte_pktmbuf_mtod(m, const uint8_t*), m->data_len, m->pkt_len);
}

} // namespace ztg
