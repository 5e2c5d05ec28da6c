// Small actions the pipelines share: hand a frame to the kernel twin, learn a next hop.
#pragma once

#include <rte_arp.h>
#include <rte_ether.h>

#include "dataplane/worker.hpp"

namespace ztg {

// To the receiving port's kernel twin, unchanged; dropped and counted if it has none.
inline void to_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, BurstTally& t) {
    const uint16_t twin = ctx.shared->topo->devs[dev].peer;
    if (twin == kNoDev) {
        t.inc(Ctr::drop_no_twin);
        rte_pktmbuf_free(m);
        return;
    }
    t.inc(Ctr::pass);
    ctx.send(twin, m);
}

// If m is an ARP request or reply whose sender is `ip`, returns the sender's MAC.
inline const rte_ether_addr* arp_sender_mac(const rte_mbuf* m, Ip4 ip) {
    if (m->data_len < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return nullptr;
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return nullptr;
    const auto* arp = reinterpret_cast<const rte_arp_hdr*>(eth + 1);
    if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
        arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)
        return nullptr;
    uint32_t sip;
    std::memcpy(&sip, &arp->arp_data.arp_sip, 4);
    return sip == ip.raw ? &arp->arp_data.arp_sha : nullptr;
}

} // namespace ztg
