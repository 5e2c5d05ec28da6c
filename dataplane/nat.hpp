// Rewrites one end of an IPv4 UDP packet in place, as the kernel's DNAT (and its undoing on
// the reply) does: the address and port, with the IPv4 header and UDP checksums updated
// incrementally (RFC 1624), not summed again. For DNS capture (pipelines/node.cpp).
#pragma once

#include <cstdint>
#include <cstring>

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_mbuf.h>

#include "dataplane/cksum.hpp"
#include "dataplane/mbuf.hpp"
#include "dataplane/net.hpp"
#include "dataplane/offload.hpp"
#include "dataplane/parse.hpp"

namespace ztg {

enum class UdpEnd : uint8_t { Source, Destination };

// m: an unfragmented IPv4 UDP packet (p = parse_frame(m)) whose UDP header is whole
// (f = l4_checksum_field(m, p), f.field != 0), with a complete checksum (the caller has
// completed a partial one: complete_partial_l4_checksum). A UDP checksum of 0 (none, RFC
// 768) stays 0; one that comes out as 0 is written 0xFFFF, its other form.
inline void rewrite_udp_end(rte_mbuf* m, const Parsed& p, const L4Field& f, UdpEnd end, Ip4 ip,
                            Be16 port) {
    auto* h = rte_pktmbuf_mtod_offset(m, uint8_t*, p.l3_off);
    const uint32_t addr_off = end == UdpEnd::Source ? 12 : 16;
    const uint32_t port_off = p.l4_off + (end == UdpEnd::Source ? 0 : 2);
    Ip4 old_ip;
    std::memcpy(&old_ip.raw, h + addr_off, 4);
    const Be16 old_port{mbuf_read16(m, port_off)};
    auto* iph = reinterpret_cast<rte_ipv4_hdr*>(h);
    iph->hdr_checksum = rte_cpu_to_be_16(
        cksum_replace32(rte_be_to_cpu_16(iph->hdr_checksum), old_ip.host(), ip.host()));
    if (const uint16_t c = rte_be_to_cpu_16(mbuf_read16(m, f.field)); c != 0) {
        const uint16_t n = cksum_replace(cksum_replace32(c, old_ip.host(), ip.host()),
                                         old_port.host(), port.host());
        mbuf_write16(m, f.field, rte_cpu_to_be_16(n == 0 ? 0xFFFF : n));
    }
    std::memcpy(h + addr_off, &ip.raw, 4);
    mbuf_write16(m, port_off, port.raw);
}

} // namespace ztg
