// iptables through iptables-save / iptables-restore --noflush, as Istio drives it. Every
// rule ztgeneve adds carries `-m comment --comment ztgeneve`; only such rules are ever
// removed, and a chain only when it is left empty.
#pragma once

#include <string>
#include <vector>

#include "config/result.hpp"

namespace ztg {

struct IptRule {
    std::string table; // mangle, nat
    std::string chain;
    std::string match;  // e.g. "-p tcp -m set --match-set ztunnel-pods-ips src" (may be empty)
    std::string target; // e.g. "MARK --set-xmark 0x100/0x100"
    bool jump_at_top = false; // insert at position 1 instead of appending
};

// The output of `iptables-save -t table`.
Result<std::string> iptables_save(const std::string& table);
// Adds what is missing of `rules` (creating their chains if needed); idempotent.
Status iptables_ensure(const std::vector<IptRule>& rules);
// Removes ztgeneve's copies of `rules`, then any of their chains left empty.
Status iptables_remove(const std::vector<IptRule>& rules);

constexpr const char* kIptComment = "ztgeneve";

} // namespace ztg
