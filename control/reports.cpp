#include <cstdio>
#include <sstream>

#include "control/runtime.hpp"

namespace ztg {

uint64_t Runtime::counter(size_t dev, Ctr c) const {
    uint64_t sum = c == Ctr::drop_kernel_ring ? ring_stats_.drops(dev) : 0;
    for (const auto& w : counters_) sum += w[dev].get(c);
    return sum;
}

std::string Runtime::counters_json() const {
    std::ostringstream o;
    // all: the sum over workers plus what the control thread counts (drop_kernel_ring).
    auto block = [&](const std::vector<const std::vector<DeviceCounters>*>& ws, bool all) {
        o << "{";
        for (size_t d = 0; d < info_.size(); d++) {
            o << (d ? "," : "") << "\"" << info_[d].name << "\":{";
            for (size_t c = 0; c < kNumCtr; c++) {
                uint64_t v = 0;
                if (all)
                    v = counter(d, Ctr(c));
                else
                    for (auto* w : ws) v += (*w)[d].get(Ctr(c));
                o << (c ? "," : "") << "\"" << kCtrName[c] << "\":" << v;
            }
            o << "}";
        }
        o << "}";
    };
    std::vector<const std::vector<DeviceCounters>*> all;
    for (const auto& w : counters_) all.push_back(&w);
    o << "{\"ports\":";
    block(all, true);
    o << ",\"workers\":[";
    for (size_t i = 0; i < counters_.size(); i++) {
        o << (i ? "," : "") << "{\"id\":" << i << ",\"ports\":";
        block({&counters_[i]}, false);
        o << "}";
    }
    o << "],\"xdp\":{";
    const auto xdp = xdp_counters();
    for (size_t i = 0; i < xdp.size(); i++)
        o << (i ? "," : "") << "\"" << xdp[i].link << "\":{\"port\":\"" << xdp[i].port
          << "\",\"to_ztgeneve\":" << xdp[i].to_ztgeneve << ",\"inbound\":" << xdp[i].inbound
          << ",\"to_kernel\":" << xdp[i].to_kernel << ",\"no_socket\":" << xdp[i].no_socket
          << ",\"deleted\":" << xdp[i].deleted << "}";
    o << "},\"mbufs_in_use\":" << mbufs_in_use() << ",\"pods\":" << pod_count()
      << ",\"generation\":" << generation_.load(std::memory_order_relaxed) << "}";
    return o.str();
}

std::string Runtime::counters_table() const {
    std::ostringstream o;
    char line[256];
    std::snprintf(line, sizeof line, "%-22s %-18s %14s\n", "device", "counter", "packets");
    o << line;
    for (size_t d = 0; d < info_.size(); d++)
        for (size_t c = 0; c < kNumCtr; c++)
            if (uint64_t v = counter(d, Ctr(c)); v != 0) {
                std::snprintf(line, sizeof line, "%-22s %-18s %14llu\n", info_[d].name.c_str(),
                              kCtrName[c], static_cast<unsigned long long>(v));
                o << line;
            }
    for (const XdpLinkCounters& x : xdp_counters()) // the kernel's programs, per link
        for (auto [name, v] : {std::pair{"xdp_to_ztgeneve", x.to_ztgeneve},
                               {"xdp_inbound", x.inbound},
                               {"xdp_to_kernel", x.to_kernel},
                               {"xdp_no_socket", x.no_socket},
                               {"xdp_link_deleted", x.deleted}})
            if (v != 0) {
                std::snprintf(line, sizeof line, "%-22s %-18s %14llu\n", x.link.c_str(), name,
                              static_cast<unsigned long long>(v));
                o << line;
            }
    return o.str();
}

} // namespace ztg
