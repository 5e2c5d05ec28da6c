// iptables through iptables-save / iptables-restore --noflush, as Istio drives it. Every
// rule ztgeneve adds carries `-m comment --comment ztgeneve`; only such rules are ever
// removed, and a chain only when it is left empty. The rules of a chain (all but the
// jumps from the built-in chains) are kept in the order given: when ztgeneve's rules of a
// chain are not that sequence, they are taken out and put back in order, at its top.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "config/result.hpp"

namespace ztg {

struct IptRule {
    std::string table; // mangle, nat
    std::string chain;
    std::string match;  // e.g. "-p tcp -m set --match-set ztunnel-pods-ips src" (may be empty)
    std::string target; // e.g. "MARK --set-xmark 0x100/0x100"
    bool jump_at_top = false; // a jump from a built-in chain: inserted at position 1, unordered
};

// As iptables-save prints the rule: "-A CHAIN MATCH [-m comment --comment ztgeneve] -j TARGET".
std::string iptables_saved_form(const IptRule& r, bool comment);
// A saved line without ztgeneve's comment (other comments stay).
std::string iptables_without_comment(const std::string& line);

// The output of `iptables-save -t table`.
Result<std::string> iptables_save(const std::string& table);
// Adds what is missing of `rules` (creating their chains if needed); idempotent.
Status iptables_ensure(const std::vector<IptRule>& rules);
// Removes ztgeneve's copies of `rules`, then any of their chains left empty.
Status iptables_remove(const std::vector<IptRule>& rules);

constexpr const char* kIptComment = "ztgeneve";

// The pure part of ensure / remove, for one table.
// What iptables-save printed for a table: its chains and its rules ("-A CHAIN ...").
struct IptTable {
    std::set<std::string> chains, lines;
    std::map<std::string, std::vector<std::string>> rules; // per chain, the lines in order
};
IptTable parse_iptables_save(const std::string& text);
// iptables-restore --noflush lines (no *table / COMMIT) that add what `have` lacks of
// `rules` (declaring only chains that do not exist: a declared chain is flushed), or
// that delete ztgeneve's copies of them and then their ztunnel-* chains left empty.
// Empty: nothing to do.
std::string iptables_ensure_lines(const std::vector<IptRule>& rules, const IptTable& have);
std::string iptables_remove_lines(const std::vector<IptRule>& rules, const IptTable& have);

} // namespace ztg
