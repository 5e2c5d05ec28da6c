// The typed, validated configuration (YAML schema in config/README.md). Produced by
// load_config(); every rejection names the key path and the reason.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/result.hpp"
#include "dataplane/net.hpp"
#include "dataplane/port_kind.hpp"

namespace ztg {

using Mac = std::array<uint8_t, 6>;

// IPv4 addresses are Ip4 (dataplane/net.hpp: network byte order inside, host() and
// from_host() the only ways across). Sets and maps of them sort in address order.
struct Ip4Order {
    bool operator()(Ip4 a, Ip4 b) const { return a.host() < b.host(); }
};
using Ip4Set = std::set<Ip4, Ip4Order>;

// ports[].segment: who cuts a pod's TSO/GSO frames down to the MTU before a net_af_packet
// port reads them (control/xdp_segment.cpp). Kernel: the pod's kernel, made to by an XDP pass
// program on the veth's host end; Off: nothing is attached (frames larger than the packet
// ring's frames arrive cut short).
enum class Segment : uint8_t { Kernel, Off };

struct PortConfig {
    std::string name;
    DevKind kind = DevKind::Pods; // ports[].role, a row of kPortKinds
    std::string devargs;
    std::optional<std::string> twin; // devargs of the kernel twin (a net_tap)
    std::optional<Mac> mac;          // our source MAC on this link (default: the twin's)
    std::optional<uint32_t> vni;     // role tunnel: the VNI carried (set from tunnel.vni if absent)
    Segment segment = Segment::Kernel; // applies to net_af_packet ports on a veth
    // attach: xdp (kinds XdpPods, XdpZtunnel, XdpUplink): the kernel's links its programs go on,
    // and the aggregation veth pair it makes: agg (the kernel end the links redirect into, and
    // where its replies leave) and agg_xsk (the end net_af_xdp opens; devargs names it).
    std::vector<std::string> links;
    // links: auto (a pods port, kernel.mode observe or program): no list; each meshed pod's
    // link is found at run time from the route to its address (control/xdp_discovery).
    bool links_auto = false;
    std::string agg, agg_xsk;
    bool operator==(const PortConfig&) const = default;
};

struct DpdkConfig {
    uint32_t workers = 1;
    uint32_t memory_mb = 256;
    bool no_huge = true;
    std::string file_prefix; // empty: ztgeneve-<pid>
    std::vector<std::string> eal_args;
    uint32_t idle_sleep_us = 0; // 0: busy-poll
    uint32_t mbufs = 0;         // 0: sized from ports and queues
    bool vector_path = true;    // fast_path: vector (else scalar)
    bool operator==(const DpdkConfig&) const = default;
};

struct TunnelConfig {
    uint32_t vni = 1001;
    uint16_t udp_port = 6081;
    Ip4 local_ip;
    Ip4 remote_ip;
    std::optional<Mac> next_hop_mac; // empty: resolve by ARP
    uint32_t arp_refresh_ms = 5000;  // with ARP: re-ask a known peer this often
    Mac inner_src_mac{};
    Mac inner_dst_mac{};
    bool udp_checksum = false;
    uint16_t mtu = 1500;
    bool fragment = true;                 // too_big: fragment (node role), else drop
    Ip4 inner_ip = ip4(192, 168, 127, 1); // istioout's address (node role)
    bool operator==(const TunnelConfig&) const = default;
};

enum class KernelMode { Off, Observe, Program };

struct KernelConfig {
    KernelMode mode = KernelMode::Off;
    std::string ipset = "ztunnel-pods-ips";
    uint32_t poll_ms = 100;
    std::string ztunnel_dev;                   // the kernel's link to ztunnel (table 101 route)
    std::string istioout = "istioout";         // the Geneve link's name
    Ip4 istioout_peer = ip4(192, 168, 127, 2); // pistioout, table 101's gateway
    std::string istioin = "istioin";           // the inbound Geneve link (VNI 1000, table 100)
    bool dns_capture = false; // program: nat DNAT of the pods' UDP/53 to ztunnel:15053
    bool operator==(const KernelConfig&) const = default;
};

// inbound: the kernel's rule 103 / table 100 (`istioin`, VNI 1000), the skips and
// ztunnel's proxied connections (node role; off unless the section is there).
struct InboundConfig {
    bool enabled = false;
    uint32_t vni = 1000;
    Mac inner_src_mac{};                  // istioin
    Mac inner_dst_mac{};                  // pistioin
    Ip4 inner_ip = ip4(192, 168, 126, 1); // istioin's address
    std::vector<uint8_t> protocols{6};    // redirected into istioin (never UDP)
    uint32_t max_flows = 65536;           // the proxied-connection table's size limit
    uint32_t idle_timeout_s = 7200;       // an idle proxied connection is forgotten
    uint32_t closing_timeout_s = 120;     // after its FIN or RST
    // DNS capture in the dataplane: a meshed pod's UDP/53 to ZT_IP:15053 and the answers
    // translated back (the kernel's rule for it is kernel.dns_capture, program mode).
    bool dns_capture = false;
    uint32_t dns_idle_timeout_s = 5; // a captured query's entry without a packet this long
    static constexpr uint32_t kMaxTimeoutS = 432000; // the longest (idle_timeout_s): 5 days
    bool operator==(const InboundConfig&) const = default;
};

// The largest MTU of a veth that has an XDP program (without multi-buffer): the aggregation
// pairs of `attach: xdp` ports carry the tunnel's packets at tunnel.mtu, so it bounds that.
constexpr uint16_t kXdpMaxMtu = 3506;

// The HTTP endpoint for Prometheus (/metrics) and probes (/healthz, /readyz); off unless
// metrics.listen is set.
constexpr uint16_t kDefaultMetricsPort = 16081;
struct MetricsConfig {
    std::string address; // IPv4 or IPv6 literal; empty: off
    uint16_t port = kDefaultMetricsPort;
    bool operator==(const MetricsConfig&) const = default;
};

struct Config {
    std::string source; // file name, for messages
    Role role = Role::Node;
    DpdkConfig dpdk;
    std::vector<PortConfig> ports;
    TunnelConfig tunnel;
    std::vector<uint8_t> protocols{6}; // IPv4 protocol numbers redirected
    std::vector<Ip4> pods;
    uint32_t pod_capacity = 65536;
    std::string log_level = "info";
    KernelConfig kernel;
    MetricsConfig metrics;
    InboundConfig inbound;
};

Result<Config> load_config(const std::string& path);
Result<Config> parse_config(const std::string& yaml_text, const std::string& source);

// The DPDK device name in devargs ("net_tap0,iface=x" -> "net_tap0").
std::string device_name(const std::string& devargs);
std::string format_ip(Ip4 ip);
std::string format_mac(const Mac& mac);

} // namespace ztg
