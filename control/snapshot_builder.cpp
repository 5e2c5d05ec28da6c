#include "control/snapshot_builder.hpp"

#include "control/ether.hpp"
#include "dataplane/geneve.hpp"

namespace ztg {

std::unique_ptr<Snapshot> build_snapshot(const Config& cfg, const Topology& topo,
                                         const std::optional<rte_ether_addr>& nexthop,
                                         uint64_t generation) {
    auto s = std::make_unique<Snapshot>();
    const TunnelConfig& t = cfg.tunnel;
    s->remote_ip = t.remote_ip;
    s->local_ip = t.local_ip;
    for (uint8_t p : cfg.protocols) s->set_redirect(p);
    s->max_inner_len = uint16_t(t.mtu - kOuterLen);
    s->fragment = t.fragment;
    s->link_mac = topo.devs[topo.link].mac;
    s->nexthop_known = nexthop.has_value();
    s->arp_refresh_ms = t.next_hop_mac ? 0 : t.arp_refresh_ms;
    if (nexthop) s->nexthop_mac = *nexthop;
    TunnelParams tp;
    tp.outer_src = s->link_mac;
    tp.outer_dst = s->nexthop_mac;
    tp.local = s->local_ip;
    tp.remote = s->remote_ip;
    tp.vni = t.vni;
    tp.udp_port = t.udp_port;
    tp.inner_src = to_ether(t.inner_src_mac);
    tp.inner_dst = to_ether(t.inner_dst_mac);
    tp.udp_checksum = t.udp_checksum;
    s->decap.local = s->local_ip;
    s->decap.remote = s->remote_ip;
    s->decap.udp_port = t.udp_port;
    // The tunnels: the node's one (istioout), or one per tunnel tap of the endpoint, whose
    // inner frames are the kernel's own (no inner Ethernet header of ours).
    if (cfg.role == Role::Node) {
        s->add_tunnel({t.vni, kNoDev, make_template(tp), tp.inner_src, tp.inner_dst, t.inner_ip});
        if (const InboundConfig& in = cfg.inbound; in.enabled) {
            // istioin: the same outer headers, VNI 1000, istioin -> pistioin inside.
            TunnelParams ip = tp;
            ip.vni = in.vni;
            ip.inner_src = to_ether(in.inner_src_mac);
            ip.inner_dst = to_ether(in.inner_dst_mac);
            s->add_tunnel(
                {in.vni, kNoDev, make_template(ip), ip.inner_src, ip.inner_dst, in.inner_ip});
            s->inbound = true;
            s->dns_capture = in.dns_capture;
            for (uint8_t p : in.protocols) s->inbound_protocols[p >> 6] |= uint64_t(1) << (p & 63);
        }
    } else {
        for (size_t d = 0; d < topo.devs.size(); d++)
            if (port_kind(topo.devs[d].kind).carries_vni) {
                TunnelParams per = tp;
                per.vni = topo.devs[d].vni;
                s->add_tunnel({per.vni, uint16_t(d), make_template(per), {}, {}, {}});
            }
    }
    s->generation = generation;
    return s;
}

} // namespace ztg
