// The node role (DESIGN.md, Data flow): pods ports classify and redirect, the ztunnel
// port and the kernel twins pass through; worker 0 resolves the ztunnel's MAC by ARP.
#pragma once

#include "dataplane/worker.hpp"

namespace ztg {

const Pipeline& node_pipeline();

// The stages, exposed for tests and benchmarks.
void node_from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void node_from_ztunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
void node_tick(WorkerCtx& ctx);

} // namespace ztg
