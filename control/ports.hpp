// Ports: how many mbufs their rings need, and their queue sizes. Opening, configuring and
// starting them is Runtime's (control/ports.cpp), which owns the topology.
#pragma once

#include <cstdint>

#include "config/config.hpp"
#include "config/result.hpp"

namespace ztg {

constexpr uint16_t kRxDesc = 512;
constexpr uint16_t kTxDesc = 512;
// net_af_xdp (attach: xdp ports) fills each rx queue's XSK fill ring with this many mbufs at
// setup (DPDK 22.11's ETH_AF_XDP_DFLT_NUM_DESCS), whatever the rx descriptors asked for.
constexpr uint16_t kXskFillDesc = 2048;

// The mempool's size: dpdk.mbufs if set (refused, naming the key, if it cannot fill every
// device's rx rings and keep packets moving), else every ring full plus what workers hold
// in flight plus slack.
Result<uint32_t> mbuf_count(const Config& cfg);

} // namespace ztg
