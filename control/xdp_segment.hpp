// Pods' TSO/GSO frames on net_af_packet ports. A pod with TSO on hands its veth TCP frames
// of up to 64 KB; DPDK 22.11's net_af_packet copies a ring frame into one mbuf and cuts it
// at the ring's frame size (about 2 KB). An XDP program on the host end of a veth makes the
// veth driver take TSO/GSO away from the other end, so the pod's kernel segments to its MTU
// before the frame crosses. XdpSegment attaches ztgeneve's own pass program
// (dataplane/bpf/xdp_pass.c, embedded in the binary) to each net_af_packet port on a veth
// (ports[].segment: kernel) through a BPF link: the kernel detaches it when the link is
// destroyed or the process dies, kill -9 included.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"

struct bpf_link;
struct bpf_object;

namespace ztg {

// libbpf's messages (warnings about an object, the kernel's verifier log) to the log at
// debug level; for every user of libbpf in ztgeneve.
void route_libbpf_log();

// What XdpSegment does with a port, and why (a pure function of the config and the driver).
enum class SegmentAction {
    Attach,    // net_af_packet on a veth, segment: kernel
    Off,       // segment: off
    NotAVeth,  // net_af_packet on another driver: the veth trick does not apply
    NoIface,   // net_af_packet whose interface cannot be read (no iface=, or gone)
    NotPacket, // another device: it gets no GSO frames from a packet socket
};
// driver: the kernel interface's driver (ethtool), if it could be read.
SegmentAction segment_action(const PortConfig& port, const std::optional<std::string>& driver);

class XdpSegment {
  public:
    XdpSegment() = default;
    XdpSegment(const XdpSegment&) = delete;
    XdpSegment& operator=(const XdpSegment&) = delete;
    ~XdpSegment() { detach(); }

    // For each port: attach or not (segment_action), logged once per port; a failure is a
    // warning naming the interface, never fatal. An attached interface with GRO on is warned
    // about (GRO merges the segments again). Call once, after the ports are open.
    void attach(const std::vector<PortConfig>& ports);
    // Destroys the links: the kernel detaches the program (the pods' TSO/GSO come back).
    void detach();
    // The interfaces the program is attached to.
    const std::vector<std::string>& attached() const { return ifaces_; }

  private:
    bool load(); // the embedded object, once; false (logged) if the kernel refuses it
    bpf_object* obj_ = nullptr;
    bool load_failed_ = false;
    std::vector<bpf_link*> links_; // held for the process's life, or until detach()
    std::vector<std::string> ifaces_;
};

} // namespace ztg
