// Ports with `attach: xdp` (DESIGN.md, "The live-node attach"): the kernel keeps its links,
// their addresses, routes and neighbours; ztgeneve's programs (dataplane/bpf/xdp_redirect.c)
// hand it only its traffic. Per port, ztgeneve makes one aggregation veth pair: `agg`, the
// kernel end every link of the port redirects into (XDP devmap) and where what ztgeneve sends
// arrives (a tc program routes it to the pod's or ztunnel's own link), and `agg_xsk`, the end
// net_af_xdp opens. So 110 pods take one DPDK port, not 110.
//
// Fallback: the programs on the links are attached through BPF links, which the kernel
// destroys when ztgeneve exits or is killed (kill -9 included): the kernel then carries every
// frame. The aggregation pairs are ztgeneve's own; a restart deletes what a killed instance
// left and makes them again, so nothing is doubled.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/result.hpp"

struct bpf_link;
struct bpf_object;
struct bpf_program;

namespace ztg {

// A link's in-kernel counters, summed over CPUs.
struct XdpLinkCounters {
    std::string link;
    std::string port;
    uint64_t to_ztgeneve = 0, to_kernel = 0, no_socket = 0;
};

// A kernel link as ztgeneve attaches to it: an ifindex the kernel may give a new link once
// this one is deleted, so both name and ifindex say which link it is.
struct XdpLinkId {
    std::string name;
    unsigned ifindex = 0;
    auto operator<=>(const XdpLinkId&) const = default;
};

class XdpAttach {
  public:
    XdpAttach() = default;
    XdpAttach(const XdpAttach&) = delete;
    XdpAttach& operator=(const XdpAttach&) = delete;
    ~XdpAttach() {
        detach();
        remove_devices();
    }

    // Before EAL: the aggregation pairs of the config's xdp ports (a killed instance's
    // are deleted first). Nothing to do without xdp ports.
    Status make_devices(const Config& cfg);
    // Once the ports are started and workers poll them: load the programs, fill their maps
    // (pods: the initial meshed set), attach tc to each aggregation end and XDP to each link,
    // then let the programs redirect. An error names the port and link.
    Status attach(const Config& cfg, const std::vector<Ip4>& pods);
    bool active() const { return obj_ != nullptr; }
    // The meshed set the pods' programs read. Control calls mesh(ip, true) after adding the
    // pod to its table and mesh(ip, false) before removing it, so a frame the kernel hands
    // over always finds its pod.
    void mesh(Ip4 ip, bool meshed);
    // A pods port with `links: auto` (control/xdp_discovery): its links follow the meshed
    // pods at run time. discovers(): there is such a port and attach() succeeded.
    bool discovers() const { return obj_ != nullptr && auto_agg_ >= 0; }
    std::vector<XdpLinkId> discovered() const;
    // The port's program on one more link; the error names the link.
    Status attach_discovered(const XdpLinkId& l);
    // Its program off link l; l's counters are kept for the exit line, added to those of a
    // later link of the same name.
    void detach_discovered(const XdpLinkId& l);
    // Whether the kernel still runs our program on l (false once its link is deleted).
    bool attached_in_kernel(const XdpLinkId& l) const;
    // The links' programs off (the kernel carries everything at once); counters kept.
    void detach();
    // After the ports are closed: the aggregation pairs go.
    void remove_devices();
    std::vector<XdpLinkCounters> counters() const;

  private:
    struct Link {
        std::string name, port;
        unsigned ifindex = 0;
        bpf_link* bl = nullptr;
        bool discovered = false;
    };
    Status attach_link(uint32_t agg, bpf_program* prog, const std::string& port,
                       const XdpLinkId& id, bool discovered);
    XdpLinkCounters read_link(const Link& l) const;
    void read_counters(std::vector<XdpLinkCounters>& out) const;
    bpf_object* obj_ = nullptr;
    int meshed_fd_ = -1, config_fd_ = -1, links_fd_ = -1;
    // links_ and gone_ change on the control thread (links: auto) while counters() may run
    // on the telemetry or metrics thread: mu_ guards them (never taken by a worker).
    mutable std::mutex mu_;
    std::vector<Link> links_;
    int auto_agg_ = -1; // the links: auto port's aggregation index, -1: none
    bpf_program* auto_prog_ = nullptr;
    std::string auto_port_;
    std::vector<XdpLinkCounters> gone_;  // detached at run time, summed by link name
    std::vector<std::string> devices_;   // aggregation kernel ends made (deleting one deletes both)
    std::vector<XdpLinkCounters> final_; // after detach
};

} // namespace ztg
