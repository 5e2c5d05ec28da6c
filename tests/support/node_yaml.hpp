// A valid node config as YAML, for tests that load a config and change a key of it.
#pragma once

#include <string>

namespace ztg::test {

inline const std::string kNodeYaml = R"(
role: node
ports:
  - {name: pods0, role: pods, devargs: "net_af_packet0,iface=v0", twin: "net_tap0,iface=t0"}
  - {name: zt, role: ztunnel, devargs: "net_af_packet1,iface=v1"}
tunnel:
  local_ip: 10.244.2.1
  remote_ip: 10.244.2.10
  inner_src_mac: "02:00:00:00:7f:01"
  inner_dst_mac: "02:00:00:00:7f:02"
pods: [10.244.2.3, 10.244.2.2]
)";

} // namespace ztg::test
