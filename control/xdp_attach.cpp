#include "control/xdp_attach.hpp"

#include <net/if.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "control/xdp_segment.hpp"
#include "dataplane/bpf/xdp_redirect.h"

extern "C" {
#include "dataplane/bpf/xdp_redirect_maps.h"
}

namespace ztg {

namespace {

struct NlSock {
    nl_sock* s = nl_socket_alloc();
    NlSock() {
        if (s != nullptr && nl_connect(s, NETLINK_ROUTE) != 0) {
            nl_socket_free(s);
            s = nullptr;
        }
    }
    ~NlSock() {
        if (s != nullptr) nl_socket_free(s);
    }
};

// Deletes link `name` if it exists; true if it was there.
bool delete_link(nl_sock* s, const std::string& name) {
    rtnl_link* l = rtnl_link_alloc();
    rtnl_link_set_name(l, name.c_str());
    const bool gone = rtnl_link_delete(s, l) == 0;
    rtnl_link_put(l);
    return gone;
}

int set_up(nl_sock* s, const std::string& name) {
    rtnl_link* cur = nullptr;
    if (int rc = rtnl_link_get_kernel(s, 0, name.c_str(), &cur); rc < 0) return rc;
    rtnl_link* ch = rtnl_link_alloc();
    rtnl_link_set_flags(ch, IFF_UP);
    const int rc = rtnl_link_change(s, cur, ch, 0);
    rtnl_link_put(ch);
    rtnl_link_put(cur);
    return rc;
}

// The pair's own sysctl: no IPv6, so the kernel sends nothing of its own into ztgeneve.
void no_ipv6(const std::string& name) {
    std::ofstream f("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6");
    if (f) f << "1\n";
}

std::string port_key(size_t i, const PortConfig& p) {
    return "ports[" + std::to_string(i) + "] (" + p.name + ")";
}

} // namespace

Status XdpAttach::make_devices(const Config& cfg) {
    NlSock nl;
    for (size_t i = 0; i < cfg.ports.size(); i++) {
        const PortConfig& p = cfg.ports[i];
        if (port_kind(p.kind).attach != Attach::Xdp) continue;
        if (nl.s == nullptr) return err("cannot open a netlink socket for the aggregation devices");
        if (delete_link(nl.s, p.agg))
            spdlog::info("xdp: {}: deleted {} left by an earlier ztgeneve", port_key(i, p), p.agg);
        rtnl_link* l = rtnl_link_veth_alloc();
        rtnl_link* peer = rtnl_link_veth_get_peer(l);
        rtnl_link_set_name(l, p.agg.c_str());
        rtnl_link_set_name(peer, p.agg_xsk.c_str());
        for (rtnl_link* e : {l, peer}) {
            rtnl_link_set_num_rx_queues(e, cfg.dpdk.workers);
            rtnl_link_set_num_tx_queues(e, cfg.dpdk.workers);
            rtnl_link_set_flags(e, IFF_NOARP);
            // The tunnel's packets (tunnel.mtu, at most kXdpMaxMtu) and the pods' frames up to
            // the larger of 1500 and that cross the pair whole (a longer one is dropped by veth).
            rtnl_link_set_mtu(e, std::max<unsigned>(1500, cfg.tunnel.mtu));
        }
        const int rc = rtnl_link_add(nl.s, l, NLM_F_CREATE | NLM_F_EXCL);
        rtnl_link_put(peer);
        rtnl_link_put(l);
        if (rc < 0)
            return err(port_key(i, p) + ": cannot create the aggregation veth pair " + p.agg + "/" +
                       p.agg_xsk + ": " + nl_geterror(rc));
        devices_.push_back(p.agg);
        for (const std::string& e : {p.agg, p.agg_xsk}) {
            no_ipv6(e);
            if (int r = set_up(nl.s, e); r < 0)
                return err(port_key(i, p) + ": cannot set " + e + " up: " + nl_geterror(r));
        }
    }
    return Ok{};
}

Status XdpAttach::attach(const Config& cfg, const std::vector<Ip4>& pods) {
    std::vector<size_t> ports;
    for (size_t i = 0; i < cfg.ports.size(); i++)
        if (port_kind(cfg.ports[i].kind).attach == Attach::Xdp) ports.push_back(i);
    if (ports.empty()) return Ok{};
    if (ports.size() > ZTG_MAX_AGG)
        return err("ports: at most " + std::to_string(ZTG_MAX_AGG) + " ports with attach: xdp");
    route_libbpf_log();
    bpf_object_open_opts opts{};
    opts.sz = sizeof opts;
    opts.object_name = "ztg_xdp_redirect";
    obj_ = bpf_object__open_mem(kXdpRedirectObject, sizeof kXdpRedirectObject, &opts);
    if (obj_ == nullptr)
        return err(std::string("xdp: cannot open the programs: ") + std::strerror(errno));
    bpf_map__set_max_entries(bpf_object__find_map_by_name(obj_, "ztg_meshed"), cfg.pod_capacity);
    if (bpf_object__load(obj_) != 0) {
        const int e = errno;
        bpf_object__close(obj_);
        obj_ = nullptr;
        return err(std::string("xdp: the kernel refused ztgeneve's programs: ") + std::strerror(e) +
                   " (they need XDP on veth, bpf_redirect_neigh and the conntrack kfuncs "
                   "bpf_xdp_ct_lookup and bpf_ct_release: Linux 6.0+ with conntrack and BTF)");
    }
    auto fd = [&](const char* map) { return bpf_map__fd(bpf_object__find_map_by_name(obj_, map)); };
    meshed_fd_ = fd("ztg_meshed");
    config_fd_ = fd("ztg_config");
    links_fd_ = fd("ztg_links");
    const int agg_fd = fd("ztg_agg");
    ztg_cfg c{};
    c.zt_ip = cfg.tunnel.remote_ip.raw;
    c.udp_port = htons(cfg.tunnel.udp_port);
    c.host_ip = cfg.tunnel.local_ip.raw;
    for (uint8_t pr : cfg.protocols) c.protocols[pr >> 3] |= uint8_t(1u << (pr & 7));
    // Inbound: the uplink port's aggregation index (config: one, and only with inbound).
    c.inbound_agg = ZTG_NO_AGG;
    for (uint32_t a = 0; a < ports.size(); a++)
        if (cfg.ports[ports[a]].kind == DevKind::XdpUplink) c.inbound_agg = a;
    if (c.inbound_agg != ZTG_NO_AGG)
        for (uint8_t pr : cfg.inbound.protocols)
            c.inbound_protocols[pr >> 3] |= uint8_t(1u << (pr & 7));
    const uint32_t zero = 0;
    if (bpf_map_update_elem(config_fd_, &zero, &c, BPF_ANY) != 0)
        return err(std::string("xdp: cannot write the programs' settings: ") +
                   std::strerror(errno));
    for (Ip4 ip : pods) mesh(ip, true);

    for (uint32_t a = 0; a < ports.size(); a++) {
        const PortConfig& p = cfg.ports[ports[a]];
        const std::string key = port_key(ports[a], p);
        const unsigned agg = if_nametoindex(p.agg.c_str());
        if (agg == 0 || bpf_map_update_elem(agg_fd, &a, &agg, BPF_ANY) != 0)
            return err(key + ": cannot use the aggregation device " + p.agg + ": " +
                       std::strerror(errno));
        bpf_tc_hook hook{};
        hook.sz = sizeof hook;
        hook.ifindex = int(agg);
        hook.attach_point = BPF_TC_INGRESS;
        bpf_tc_opts to{};
        to.sz = sizeof to;
        to.prog_fd = bpf_program__fd(
            bpf_object__find_program_by_name(obj_, port_kind(p.kind).tc_program.data()));
        if (int rc = bpf_tc_hook_create(&hook); rc != 0 && rc != -EEXIST)
            return err(key + ": cannot add a clsact qdisc to " + p.agg + ": " + std::strerror(-rc));
        if (int rc = bpf_tc_attach(&hook, &to); rc != 0)
            return err(key + ": cannot attach the tc program to " + p.agg + ": " +
                       std::strerror(-rc));
        bpf_program* prog =
            bpf_object__find_program_by_name(obj_, port_kind(p.kind).xdp_program.data());
        ports_.push_back({key, p.links, p.links_auto});
        progs_.push_back(prog);
        names_.push_back(p.name);
        for (size_t k = 0; k < p.links.size(); k++) {
            const std::string& name = p.links[k];
            const std::string lkey = key + ".links[" + std::to_string(k) + "] (" + name + ")";
            const unsigned ifindex = if_nametoindex(name.c_str());
            if (ifindex == 0) return err(lkey + ": no such link: " + std::strerror(errno));
            if (auto s = attach_link(a, {name, ifindex}); !s) return err(lkey + ": " + s.error());
        }
        if (p.links_auto)
            spdlog::info("xdp: {}: links: auto: each meshed pod's link (the route to its "
                         "address) will redirect into {} (net_af_xdp on {})",
                         key, p.agg, p.agg_xsk);
        else
            spdlog::info("xdp: {}: {} link(s) redirect into {} (net_af_xdp on {}), replies "
                         "routed by the kernel's FIB from {}",
                         key, p.links.size(), p.agg, p.agg_xsk, p.agg);
    }
    c.ready = 1; // the sockets are bound and polled: let the programs redirect
    if (bpf_map_update_elem(config_fd_, &zero, &c, BPF_ANY) != 0)
        return err(std::string("xdp: cannot enable the programs: ") + std::strerror(errno));
    return Ok{};
}

Status XdpAttach::attach_link(uint32_t port, const XdpLinkId& id) {
    if (port >= ports_.size()) return err("no such xdp port");
    for (const Link& l : links_)
        if (l.ifindex == id.ifindex) // never two entries for one ifindex in ztg_links
            return err("ifindex " + std::to_string(id.ifindex) + " is " + l.name + "'s already");
    const int ncpu = libbpf_num_possible_cpus();
    std::vector<ztg_link> per_cpu(size_t(ncpu > 0 ? ncpu : 1)); // counters from 0
    for (ztg_link& v : per_cpu) v.agg = port;
    if (bpf_map_update_elem(links_fd_, &id.ifindex, per_cpu.data(), BPF_ANY) != 0) {
        const int e = errno;
        return err(std::string("cannot add it to the programs' links: ") + std::strerror(e) +
                   (e == E2BIG ? " (at most " + std::to_string(ZTG_MAX_LINKS) + " links)"
                               : std::string()));
    }
    bpf_link* l = bpf_program__attach_xdp(progs_[port], int(id.ifindex));
    if (l == nullptr) {
        const int e = errno;
        bpf_map_delete_elem(links_fd_, &id.ifindex);
        return err(std::string("cannot attach the XDP program: ") + std::strerror(e) +
                   (e == EBUSY || e == EEXIST
                        ? " (another XDP program is attached; ztgeneve attaches only where none "
                          "is)"
                        : ""));
    }
    std::lock_guard g(mu_);
    links_.push_back({id.name, names_[port], id.ifindex, port, l});
    return Ok{};
}

std::map<XdpLinkId, uint32_t> XdpAttach::attached() const {
    std::map<XdpLinkId, uint32_t> out;
    for (const Link& l : links_) out.emplace(XdpLinkId{l.name, l.ifindex}, l.agg);
    return out;
}

void XdpAttach::detach_link(const XdpLinkId& id, bool deleted) {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < links_.size(); i++) {
        Link& l = links_[i];
        if (l.ifindex != id.ifindex || l.name != id.name) continue;
        bpf_link__destroy(l.bl); // the kernel's link first: from here on it carries l
        XdpLinkCounters c = read_link(l);
        auto g = std::find_if(gone_.begin(), gone_.end(),
                              [&](const XdpLinkCounters& x) { return x.link == l.name; });
        if (g == gone_.end()) g = gone_.insert(gone_.end(), XdpLinkCounters{l.name, l.port});
        *g += c;
        g->deleted += deleted ? 1 : 0;
        // A new link may get this ifindex: it must not find l's entry (nor its counters).
        bpf_map_delete_elem(links_fd_, &l.ifindex);
        links_.erase(links_.begin() + long(i));
        return;
    }
}

bool XdpAttach::attached_in_kernel(const XdpLinkId& id) const {
    for (const Link& l : links_) {
        if (l.ifindex != id.ifindex || l.name != id.name) continue;
        bpf_link_info info{};
        uint32_t len = sizeof info;
        // The kernel clears the link's ifindex when it deletes the device under it.
        return bpf_obj_get_info_by_fd(bpf_link__fd(l.bl), &info, &len) == 0 &&
               info.xdp.ifindex == id.ifindex;
    }
    return false;
}

void XdpAttach::mesh(Ip4 ip, bool meshed) {
    if (meshed_fd_ < 0) return;
    const uint8_t one = 1;
    const int rc = meshed ? bpf_map_update_elem(meshed_fd_, &ip.raw, &one, BPF_ANY)
                          : bpf_map_delete_elem(meshed_fd_, &ip.raw);
    if (rc != 0 && !(errno == ENOENT && !meshed))
        spdlog::error("xdp: cannot {} pod {} in the kernel's meshed set: {}",
                      meshed ? "add" : "remove", format_ip(ip), std::strerror(errno));
}

XdpLinkCounters XdpAttach::read_link(const Link& l) const {
    const int ncpu = libbpf_num_possible_cpus();
    std::vector<ztg_link> per_cpu(size_t(ncpu > 0 ? ncpu : 1));
    XdpLinkCounters c{l.name, l.port};
    if (bpf_map_lookup_elem(links_fd_, &l.ifindex, per_cpu.data()) == 0)
        for (const ztg_link& v : per_cpu) {
            c.to_ztgeneve += v.to_ztgeneve;
            c.inbound += v.inbound;
            c.to_kernel += v.to_kernel;
            c.no_socket += v.no_socket;
        }
    return c;
}

// The attached links, each with what links of its name counted before (detached at run
// time), then the detached ones no link of that name replaced.
void XdpAttach::read_counters(std::vector<XdpLinkCounters>& out) const {
    const size_t first = out.size();
    for (const Link& l : links_) out.push_back(read_link(l));
    for (const XdpLinkCounters& g : gone_) {
        auto it = std::find_if(out.begin() + long(first), out.end(),
                               [&](const XdpLinkCounters& x) { return x.link == g.link; });
        if (it == out.end()) {
            out.push_back(g);
            continue;
        }
        *it += g;
    }
}

std::vector<XdpLinkCounters> XdpAttach::counters() const {
    std::lock_guard g(mu_);
    if (obj_ == nullptr) return final_;
    std::vector<XdpLinkCounters> out;
    read_counters(out);
    return out;
}

void XdpAttach::detach() {
    if (obj_ == nullptr) return;
    // The links first: from here on the kernel carries every frame of every link.
    std::lock_guard g(mu_);
    for (Link& l : links_) bpf_link__destroy(l.bl);
    final_.clear();
    read_counters(final_);
    links_.clear();
    gone_.clear();
    ports_.clear();
    progs_.clear();
    names_.clear();
    bpf_object__close(obj_);
    obj_ = nullptr;
    meshed_fd_ = config_fd_ = links_fd_ = -1;
}

void XdpAttach::remove_devices() {
    if (devices_.empty()) return;
    NlSock nl;
    for (const std::string& d : devices_)
        if (nl.s == nullptr || !delete_link(nl.s, d))
            spdlog::warn("xdp: could not delete the aggregation device {}", d);
    devices_.clear();
}

} // namespace ztg
