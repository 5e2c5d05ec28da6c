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
#include <map>
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
    uint64_t inbound = 0; // to a meshed pod, handed over through the uplink port's device
    uint64_t deleted = 0; // times a link of this name was deleted while it had our program
    XdpLinkCounters& operator+=(const XdpLinkCounters& o) {
        to_ztgeneve += o.to_ztgeneve;
        to_kernel += o.to_kernel;
        no_socket += o.no_socket;
        inbound += o.inbound;
        deleted += o.deleted;
        return *this;
    }
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
    // The xdp ports in config order (their index is the aggregation index N of ztg<N>k), for
    // control/xdp_discovery, which keeps their links attached at run time: a `links: auto`
    // port's follow the meshed pods, a listed link deleted is detached and attached again
    // when a link of its name appears.
    struct Port {
        std::string key;                // "ports[N] (name)"
        std::vector<std::string> links; // the listed links (none with links: auto)
        bool links_auto = false;
    };
    const std::vector<Port>& ports() const { return ports_; }
    // The links with our program now, each with its port.
    std::map<XdpLinkId, uint32_t> attached() const;
    // Port `port`'s program on one more link; the error names the link.
    Status attach_link(uint32_t port, const XdpLinkId& l);
    // Its program off link l; l's counters are kept for the exit line, added to those of a
    // later link of the same name (deleted: the link was deleted, counted with them).
    void detach_link(const XdpLinkId& l, bool deleted);
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
        uint32_t agg = 0; // its port's index in ports_
        bpf_link* bl = nullptr;
    };
    XdpLinkCounters read_link(const Link& l) const;
    void read_counters(std::vector<XdpLinkCounters>& out) const;
    bpf_object* obj_ = nullptr;
    int meshed_fd_ = -1, config_fd_ = -1, links_fd_ = -1;
    // links_ and gone_ change on the control thread (xdp_discovery) while counters() may
    // run on the telemetry or metrics thread: mu_ guards them (never taken by a worker).
    mutable std::mutex mu_;
    std::vector<Link> links_;
    std::vector<Port> ports_;
    std::vector<bpf_program*> progs_;    // per port: its program
    std::vector<std::string> names_;     // per port: its name
    std::vector<XdpLinkCounters> gone_;  // detached at run time, summed by link name
    std::vector<std::string> devices_;   // aggregation kernel ends made (deleting one deletes both)
    std::vector<XdpLinkCounters> final_; // after detach
};

} // namespace ztg
