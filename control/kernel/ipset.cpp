#include "control/kernel/ipset.hpp"

#include <arpa/inet.h>

#include <cstdarg>
#include <mutex>
#include <sstream>

extern "C" {
#include <libipset/ipset.h>
#include <libipset/session.h>
#include <libipset/types.h>
}

namespace ztg {

Ipset::Ipset() {
    static std::once_flag types;
    std::call_once(types, [] { ipset_load_types(); });
}

Ipset::~Ipset() = default;

int Ipset::out(struct ::ipset_session*, void* p, const char* fmt, ...) {
    auto* self = static_cast<Ipset*>(p);
    // libipset hands over its whole output buffer at once (several KiB): size it first.
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    const int n = vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        const size_t at = self->output_.size();
        self->output_.resize(at + size_t(n) + 1);
        vsnprintf(self->output_.data() + at, size_t(n) + 1, fmt, again);
        self->output_.resize(at + size_t(n));
    }
    va_end(again);
    return 0;
}

int Ipset::custom_error(struct ::ipset* h, void* p, int status, const char* msg, ...) {
    auto* self = static_cast<Ipset*>(p);
    char buf[1024];
    va_list ap;
    va_start(ap, msg);
    vsnprintf(buf, sizeof buf, msg, ap);
    va_end(ap);
    self->error_ = buf;
    ipset_session_report_reset(ipset_session(h));
    return status == IPSET_NO_PROBLEM ? 0 : -1;
}

int Ipset::standard_error(struct ::ipset* h, void* p) {
    auto* self = static_cast<Ipset*>(p);
    struct ::ipset_session* s = ipset_session(h);
    const char* msg = ipset_session_report_msg(s);
    if (ipset_session_report_type(s) == IPSET_WARNING) { // warnings are not failures
        ipset_session_report_reset(s);
        return 0;
    }
    self->error_ = msg != nullptr ? msg : "unknown error";
    while (!self->error_.empty() && (self->error_.back() == '\n' || self->error_.back() == ' '))
        self->error_.pop_back();
    ipset_session_report_reset(s);
    return -1;
}

Status Ipset::run(const std::string& line) {
    // A fresh session per command: libipset keeps state (its set-name cache, the last
    // error) across commands, which goes stale when other programs change the sets.
    handle_ = ipset_init();
    if (handle_ == nullptr) return err("ipset: cannot initialise libipset");
    ipset_custom_printf(handle_, custom_error, standard_error, out, this);
    output_.clear();
    error_.clear();
    std::string buf = line;
    const int rc = ipset_parse_line(handle_, buf.data());
    ipset_fini(handle_);
    handle_ = nullptr;
    if (rc < 0 || !error_.empty())
        return err("ipset '" + line + "': " + (error_.empty() ? "failed" : error_));
    return Ok{};
}

bool Ipset::exists(const std::string& name) {
    return run("list " + name + " -name").ok();
}

IpsetContent parse_ipset_save(const std::string& name, const std::string& text) {
    IpsetContent out;
    std::istringstream in(text);
    std::string line;
    const std::string create = "create " + name + " ", prefix = "add " + name + " ";
    while (std::getline(in, line)) {
        if (line.rfind(create, 0) == 0) {
            std::istringstream f(line.substr(create.size()));
            std::string word;
            f >> out.header.type;
            while (f >> word)
                if (word == "family")
                    f >> out.header.family;
                else if (word == "comment")
                    out.header.comment = true;
            continue;
        }
        if (line.rfind(prefix, 0) != 0) continue;
        std::istringstream f(line.substr(prefix.size()));
        std::string addr, word;
        f >> addr;
        in_addr a{};
        if (inet_pton(AF_INET, addr.c_str(), &a) != 1) continue; // not hash:ip inet
        IpsetMember m;
        m.ip = Ip4{a.s_addr}; // network byte order, as inet_pton writes it
        while (f >> word)
            if (word == "comment") {
                std::string rest;
                std::getline(f, rest);
                const auto q1 = rest.find('"'), q2 = rest.rfind('"');
                if (q1 != std::string::npos && q2 > q1)
                    m.comment = rest.substr(q1 + 1, q2 - q1 - 1);
            }
        out.members.push_back(std::move(m));
    }
    return out;
}

Result<std::optional<IpsetContent>> Ipset::read(const std::string& name) {
    if (!exists(name)) return std::optional<IpsetContent>{};
    if (auto s = run("list " + name + " -output save"); !s) return err(s.error());
    return std::optional<IpsetContent>{parse_ipset_save(name, output_)};
}

} // namespace ztg
