// The endpoint role (DESIGN.md, Endpoint role): the ztunnel side of the tunnel for a
// kernel without Geneve. Geneve from the node is decapsulated into the tap of its VNI
// (pistioout for 1001, pistioin for 1000); what the kernel sends out of such a tap is
// encapsulated back to the node; everything else on the uplink passes to and from its twin.
#pragma once

#include "dataplane/worker.hpp"

namespace ztg {

const Pipeline& endpoint_pipeline();

void endpoint_from_uplink(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void endpoint_from_tunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);

} // namespace ztg
