// The kernel's ipsets through libipset: commands in ipset's own syntax, output parsed from
// its "save" format. Errors carry ipset's message and name the set.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/result.hpp"
#include "dataplane/net.hpp"

struct ipset;
struct ipset_session;

namespace ztg {

struct IpsetMember {
    Ip4 ip;
    std::string comment;
};

class Ipset {
  public:
    Ipset();
    ~Ipset();
    Ipset(const Ipset&) = delete;
    Ipset& operator=(const Ipset&) = delete;

    // One command line in ipset syntax, e.g. "add ztunnel-pods-ips 10.244.2.3 -exist".
    Status run(const std::string& line);
    // The members of hash:ip set `name`, or nothing if the set does not exist.
    Result<std::optional<std::vector<IpsetMember>>> members(const std::string& name);
    bool exists(const std::string& name);

  private:
    static int out(struct ::ipset_session*, void* p, const char* fmt, ...)
        __attribute__((format(printf, 3, 4)));
    static int custom_error(struct ::ipset*, void* p, int status, const char* msg, ...)
        __attribute__((format(printf, 4, 5)));
    static int standard_error(struct ::ipset*, void* p);

    struct ::ipset* handle_ = nullptr;
    std::string output_, error_;
};

} // namespace ztg
