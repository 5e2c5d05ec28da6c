#include "control/xdp_segment.hpp"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include <spdlog/spdlog.h>

#include "control/devargs.hpp"
#include "dataplane/bpf/xdp_pass.h"

namespace ztg {

namespace {

bool is_af_packet(const PortConfig& p) {
    return p.devargs.rfind("net_af_packet", 0) == 0;
}

// One ethtool request on iface in this network namespace; false if it failed.
bool ethtool(const std::string& iface, void* req) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface.c_str());
    ifr.ifr_data = static_cast<char*>(req);
    const bool ok = ioctl(fd, SIOCETHTOOL, &ifr) == 0;
    close(fd);
    return ok;
}

std::optional<std::string> driver_of(const std::string& iface) {
    ethtool_drvinfo info{};
    info.cmd = ETHTOOL_GDRVINFO;
    if (!ethtool(iface, &info)) return std::nullopt;
    return std::string(info.driver, strnlen(info.driver, sizeof info.driver));
}

bool gro_on(const std::string& iface) {
    ethtool_value v{};
    v.cmd = ETHTOOL_GGRO;
    return ethtool(iface, &v) && v.data != 0;
}

int libbpf_log(libbpf_print_level level, const char* fmt, va_list ap) {
    if (level == LIBBPF_DEBUG) return 0;
    char buf[512];
    const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::string line(buf, n < 0 ? 0 : std::min(size_t(n), sizeof buf - 1));
    while (!line.empty() && line.back() == '\n') line.pop_back();
    spdlog::debug("libbpf: {}", line);
    return n;
}

} // namespace

void route_libbpf_log() {
    libbpf_set_print(libbpf_log);
}

SegmentAction segment_action(const PortConfig& port, const std::optional<std::string>& driver) {
    if (!is_af_packet(port)) return SegmentAction::NotPacket;
    if (port.segment == Segment::Off) return SegmentAction::Off;
    if (!driver) return SegmentAction::NoIface;
    return *driver == "veth" ? SegmentAction::Attach : SegmentAction::NotAVeth;
}

bool XdpSegment::load() {
    if (obj_ != nullptr) return true;
    if (load_failed_) return false;
    route_libbpf_log();
    bpf_object_open_opts opts{};
    opts.sz = sizeof opts;
    opts.object_name = "ztg_xdp_pass";
    obj_ = bpf_object__open_mem(kXdpPassObject, sizeof kXdpPassObject, &opts);
    int e = errno;
    if (obj_ != nullptr && bpf_object__load(obj_) != 0) {
        e = errno;
        bpf_object__close(obj_);
        obj_ = nullptr;
    }
    if (obj_ == nullptr) {
        load_failed_ = true;
        spdlog::warn("segment: the kernel refused ztgeneve's XDP pass program: {}; pods' TSO/GSO "
                     "frames will arrive cut at the packet ring's frame size",
                     std::strerror(e));
    }
    return obj_ != nullptr;
}

void XdpSegment::attach(const std::vector<PortConfig>& ports) {
    for (size_t i = 0; i < ports.size(); i++) {
        const PortConfig& p = ports[i];
        const std::string key = "ports[" + std::to_string(i) + "] (" + p.name + ")";
        const auto iface = devargs_iface(p.devargs);
        const auto driver = iface ? driver_of(*iface) : std::nullopt;
        switch (segment_action(p, driver)) {
        case SegmentAction::NotPacket:
            spdlog::debug("segment: {}: not net_af_packet, nothing to attach", key);
            continue;
        case SegmentAction::Off:
            spdlog::info("segment: {}: segment off: nothing attached to {}; TSO/GSO frames from "
                         "its peer larger than the packet ring's frames arrive cut short",
                         key, iface.value_or("its interface"));
            continue;
        case SegmentAction::NoIface:
            spdlog::warn("segment: {}: cannot read the driver of interface {}: nothing attached",
                         key, iface.value_or("(no iface= in devargs)"));
            continue;
        case SegmentAction::NotAVeth:
            spdlog::info("segment: {}: {} is no veth (driver {}): nothing attached; its "
                         "segmentation offloads are its own",
                         key, *iface, *driver);
            continue;
        case SegmentAction::Attach:
            break;
        }
        const unsigned ifindex = if_nametoindex(iface->c_str());
        if (ifindex == 0 || !load()) {
            if (ifindex == 0)
                spdlog::warn("segment: {}: cannot attach the XDP program to {}: {}", key, *iface,
                             std::strerror(errno));
            continue;
        }
        bpf_program* prog = bpf_object__find_program_by_name(obj_, "ztg_xdp_pass");
        bpf_link* link = prog != nullptr ? bpf_program__attach_xdp(prog, int(ifindex)) : nullptr;
        if (link == nullptr) {
            spdlog::warn("segment: {}: cannot attach the XDP program to {}: {}; its peer's TSO/GSO "
                         "frames will arrive cut at the packet ring's frame size",
                         key, *iface, std::strerror(errno));
            continue;
        }
        links_.push_back(link);
        ifaces_.push_back(*iface);
        spdlog::info("segment: {}: XDP pass program attached to veth {} (a BPF link, detached "
                     "when ztgeneve exits): the veth takes TSO/GSO from its peer, whose kernel "
                     "segments to the MTU",
                     key, *iface);
        if (gro_on(*iface))
            spdlog::warn("segment: {}: GRO is on on {}: the kernel merges the segments again "
                         "into frames the packet ring cuts short; turn it off: ethtool -K {} "
                         "gro off",
                         key, *iface, *iface);
    }
}

void XdpSegment::detach() {
    for (bpf_link* l : links_) bpf_link__destroy(l);
    links_.clear();
    ifaces_.clear();
    if (obj_ != nullptr) bpf_object__close(obj_);
    obj_ = nullptr;
}

} // namespace ztg
