// The node role (DESIGN.md): pods ports classify and redirect (or pass to their twin), the
// ztunnel port decapsulates ztunnel's Geneve to the pods and passes the rest to its twin;
// worker 0 resolves the ztunnel's MAC by ARP. The twins' stage is from_twin (common.hpp).
#pragma once

#include "dataplane/worker.hpp"

namespace ztg {

const Pipeline& node_pipeline();

// The stages, exposed for tests and benchmarks.
void node_from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
// attach: xdp: the kernel has chosen the frames (dataplane/bpf/xdp_redirect.c).
void node_from_xdp_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
// attach: xdp, inbound: the kernel's program chose each frame; into istioin (VNI 1000).
void node_from_xdp_uplink(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void node_from_ztunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void node_from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void node_tick(WorkerCtx& ctx);

} // namespace ztg
