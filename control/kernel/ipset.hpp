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

// A set as `ipset list NAME -output save` shows it: its `create` line and its members.
struct IpsetHeader {
    std::string type, family; // e.g. hash:ip, inet
    bool comment = false;     // created with comment support
};
struct IpsetContent {
    IpsetHeader header;
    std::vector<IpsetMember> members; // IPv4 members only
};
IpsetContent parse_ipset_save(const std::string& name, const std::string& text);

class Ipset {
  public:
    Ipset();
    ~Ipset();
    Ipset(const Ipset&) = delete;
    Ipset& operator=(const Ipset&) = delete;

    // One command line in ipset syntax, e.g. "add ztunnel-pods-ips 10.244.2.3 -exist".
    Status run(const std::string& line);
    // Set `name`'s header and members, or nothing if the set does not exist.
    Result<std::optional<IpsetContent>> read(const std::string& name);
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
