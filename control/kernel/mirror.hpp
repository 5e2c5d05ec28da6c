// The kernel mirror (DESIGN.md, Kernel mirror): keeps ztgeneve's pod table and the
// kernel's ipset / iptables / ip rules 100-103 / tables 100-102 / istioin / istioout
// configuration (reference.hpp) in step.
//   observe: the kernel is the truth; the ipset is polled every kernel.poll_ms and its
//            difference applied; rules, routes and links are re-read on RTNLGRP events
//            (full re-read after an overflow), iptables every few seconds, and what is
//            missing or different from the reference logged. Never writes.
//   program: ztgeneve's pods are the truth; it installs and keeps the kernel objects of
//            DESIGN.md, "What it replaces", so the kernel can carry the traffic without it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "control/kernel/ipset.hpp"
#include "control/kernel/iptables.hpp"
#include "control/kernel/netlink.hpp"

namespace ztg {

// What the mirror changes in the dataplane.
class PodSink {
  public:
    virtual ~PodSink() = default;
    virtual bool add_pod(Ip4 ip) = 0;
    virtual bool del_pod(Ip4 ip) = 0;
    virtual void pods_committed() = 0; // end of a batch: deleted slots may be reclaimed
};

// The pods to take out of and put into a set of pods `from` to make it `to`, each in
// address order.
struct PodDiff {
    std::vector<Ip4> remove, add;
};
PodDiff diff_pods(const Ip4Set& from, const Ip4Set& to);

// The pure parts of the mirror, for tests.
// Whether program mode can keep its pods in an existing set: hash:ip of family inet (with
// or without comment support); the error names the set and why not.
Status ipset_adoptable(const std::string& set, const IpsetHeader& h);
// ipset commands that make ztgeneve's members of `set` exactly `wanted`; members someone
// else added stay, and a wanted pod among them is not re-added. Ours: with comment
// support, the members with comment "ztgeneve"; without (a set someone else created),
// the members that are in `owned` (the pods ztgeneve wanted before), added without comment.
std::vector<std::string> ipset_program_commands(const std::string& set,
                                                const std::vector<IpsetMember>& members,
                                                const Ip4Set& wanted, bool comments = true,
                                                const Ip4Set& owned = {});
// --cleanup's ipset commands: delete ztgeneve's members, then destroy the set if nothing
// of anyone else's is left in it. A set without comment support is not ztgeneve's: only
// the config's `pods` are deleted from it, and it stays.
std::vector<std::string> ipset_cleanup_commands(const std::string& set, const IpsetContent& set_now,
                                                const std::vector<Ip4>& pods);

class KernelMirror {
  public:
    KernelMirror(const Config& cfg, PodSink& sink);
    ~KernelMirror();

    // program: install everything (an object that cannot be installed gets one error line
    // and the rest is still installed). observe: the first full read. An error returned
    // means ztgeneve cannot do its job (program: an ipset of that name it cannot use).
    Status start();
    // Called from the control loop; does work at most every poll_ms.
    void poll();
    // program mode: the pods ztgeneve wants (config + run-time changes).
    Status set_pods(const std::vector<Ip4>& pods);
    // Removes exactly what program mode installs, leaving foreign objects alone.
    static Status cleanup(const Config& cfg);

    uint64_t resyncs() const { return resyncs_; }
    size_t mirrored() const { return current_.size(); }
    // The last ipset read or write that succeeded (epoch if none yet), and how many failed.
    std::chrono::steady_clock::time_point last_sync() const { return last_sync_; }
    uint64_t sync_errors() const { return sync_errors_; }
    // observe: the reference objects found present, missing, different at the last read.
    size_t present() const { return present_; }
    size_t missing() const { return missing_; }
    size_t different() const { return different_; }

  private:
    Status sync_ipset_observe();
    Status sync_ipset_program();
    Status synced(Status s);            // records the outcome of a sync
    std::vector<std::string> install(); // program: everything; the errors, one per object
    void sync_routes(std::vector<std::string>& errors);
    void report_errors(const std::vector<std::string>& errors, bool always);
    void check_routing(); // observe: log what is missing or different from the reference

    const Config& cfg_;
    PodSink& sink_;
    Ipset ipset_;
    Rtnl rtnl_;
    std::unique_ptr<RtnlWatch> watch_;
    Ip4Set current_; // what the pod table holds from the mirror
    Ip4Set wanted_;  // program: ztgeneve's pods
    Ip4Set owned_;   // program, a set without comments: the pods it held for us last time
    bool ipset_refused_ = false, said_no_comment_ = false;
    std::chrono::steady_clock::time_point next_poll_{}, next_assert_{};
    std::string last_disagreement_, last_ipset_error_;
    std::vector<std::string> last_errors_;
    uint64_t resyncs_ = 0;
    std::chrono::steady_clock::time_point last_sync_{};
    uint64_t sync_errors_ = 0;
    size_t present_ = 0, missing_ = 0, different_ = 0;
};

} // namespace ztg
