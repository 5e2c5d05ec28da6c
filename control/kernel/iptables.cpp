#include "control/kernel/iptables.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

extern char** environ;

namespace ztg {

namespace {

// Runs argv with `input` on stdin; returns stdout, or an error with stderr's last line.
Result<std::string> run(const std::vector<std::string>& argv, const std::string& input) {
    int in[2], out[2], errp[2];
    if (pipe(in) != 0 || pipe(out) != 0 || pipe(errp) != 0)
        return err(argv[0] + ": pipe: " + std::strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    for (int fd : {in[1], out[0], errp[0], in[0], out[1], errp[1]})
        posix_spawn_file_actions_addclose(&fa, fd);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid;
    const int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    close(errp[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        close(errp[0]);
        return err(argv[0] + ": cannot run: " + std::strerror(rc) + " (is iptables installed?)");
    }
    // Inputs here are small (a few rules): write all, then read both pipes to the end.
    size_t off = 0;
    while (off < input.size()) {
        const ssize_t n = write(in[1], input.data() + off, input.size() - off);
        if (n <= 0) break;
        off += size_t(n);
    }
    close(in[1]);
    auto drain = [](int fd) {
        std::string s;
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, size_t(n));
        close(fd);
        return s;
    };
    std::string o = drain(out[0]), e = drain(errp[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
        std::string cmd;
        for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
        return err(cmd + ": " + (e.empty() ? "failed" : e));
    }
    return o;
}

// The rule as we give it and as iptables-save prints it back: matches, our comment, target.
std::string with_comment(const IptRule& r) {
    return (r.match.empty() ? "" : r.match + " ") + "-m comment --comment " + kIptComment + " -j " +
           r.target;
}

const std::string kOurs = std::string(" -m comment --comment ") + kIptComment + " ";

bool is_ours(const std::string& line) {
    return line.find(kOurs) != std::string::npos;
}

// "-A CHAIN rest" -> "-D CHAIN rest"
std::string delete_line(const std::string& saved) {
    return "-D" + saved.substr(2);
}

// For each table the rules name: what iptables-save shows, and the lines `edit` writes
// for it (empty: nothing to do), applied in one iptables-restore --noflush transaction.
using Edit = std::string (*)(const std::vector<IptRule>& rules, const IptTable& have);

Status per_table(const std::vector<IptRule>& rules, Edit edit) {
    std::map<std::string, std::vector<IptRule>> by_table;
    for (const auto& r : rules) by_table[r.table].push_back(r);
    for (const auto& [table, rs] : by_table) {
        auto have = iptables_save(table);
        if (!have) return err(have.error());
        const std::string lines = edit(rs, parse_iptables_save(*have));
        if (lines.empty()) continue;
        if (auto s = run({"iptables-restore", "--noflush", "-w", "5"},
                         "*" + table + "\n" + lines + "COMMIT\n");
            !s)
            return err("iptables (" + table + "): " + s.error());
    }
    return Ok{};
}

} // namespace

std::string iptables_saved_form(const IptRule& r, bool comment) {
    if (comment) return "-A " + r.chain + " " + with_comment(r);
    return "-A " + r.chain + " " + (r.match.empty() ? "" : r.match + " ") + "-j " + r.target;
}

std::string iptables_without_comment(const std::string& line) {
    std::string s = line;
    if (const auto at = s.find(kOurs); at != std::string::npos) s.erase(at, kOurs.size() - 1);
    return s;
}

Result<std::string> iptables_save(const std::string& table) {
    return run({"iptables-save", "-t", table}, "");
}

IptTable parse_iptables_save(const std::string& text) {
    IptTable v;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(':', 0) == 0)
            v.chains.insert(line.substr(1, line.find(' ') - 1));
        else if (line.rfind("-A ", 0) == 0) {
            v.lines.insert(line);
            v.rules[line.substr(3, line.find(' ', 3) - 3)].push_back(line);
        }
    }
    return v;
}

namespace {

// The chains of `rs` that keep an order (all but the built-in chains the jumps are in),
// each with its rules, in the order they first appear.
std::vector<std::pair<std::string, std::vector<const IptRule*>>>
ordered_chains(const std::vector<IptRule>& rs) {
    std::vector<std::pair<std::string, std::vector<const IptRule*>>> out;
    for (const IptRule& r : rs) {
        if (r.jump_at_top) continue;
        auto it =
            std::find_if(out.begin(), out.end(), [&](const auto& c) { return c.first == r.chain; });
        if (it == out.end()) it = out.insert(out.end(), {r.chain, {}});
        it->second.push_back(&r);
    }
    return out;
}

const std::vector<std::string>& chain_rules(const IptTable& t, const std::string& chain) {
    static const std::vector<std::string> none;
    const auto it = t.rules.find(chain);
    return it == t.rules.end() ? none : it->second;
}

} // namespace

std::string iptables_ensure_lines(const std::vector<IptRule>& rs, const IptTable& have) {
    std::ostringstream out;
    std::set<std::string> declared;
    for (const IptRule& r : rs) // only new chains: with --noflush a declared chain is flushed
        if (!have.chains.count(r.chain) && declared.insert(r.chain).second)
            out << ":" << r.chain << " - [0:0]\n";
    for (const auto& [chain, want] : ordered_chains(rs)) {
        std::vector<std::string> ours, wanted;
        size_t foreign = 0;
        for (const std::string& l : chain_rules(have, chain))
            (is_ours(l) ? ours.push_back(l) : void(foreign++));
        for (const IptRule* r : want) wanted.push_back(iptables_saved_form(*r, true));
        if (ours == wanted) continue;
        // Ours out, then back in order above everyone else's (one transaction).
        for (const std::string& l : ours) out << delete_line(l) << "\n";
        for (size_t i = 0; i < want.size(); i++)
            out << (foreign == 0 ? "-A " + chain + " "
                                 : "-I " + chain + " " + std::to_string(i + 1) + " ")
                << with_comment(*want[i]) << "\n";
    }
    for (const IptRule& r : rs)
        if (r.jump_at_top && !have.lines.count(iptables_saved_form(r, true)))
            out << "-I " + r.chain + " 1 " << with_comment(r) << "\n";
    return out.str();
}

std::string iptables_remove_lines(const std::vector<IptRule>& rs, const IptTable& have) {
    std::ostringstream out;
    std::set<std::string> mine, chains;
    for (const IptRule& r : rs) {
        mine.insert(iptables_saved_form(r, true));
        chains.insert(r.chain);
    }
    std::map<std::string, size_t> left; // rules per chain after the removal
    for (const std::string& chain : chains)
        for (const std::string& l : chain_rules(have, chain)) {
            if (mine.count(l))
                out << delete_line(l) << "\n"; // every copy
            else
                left[chain]++;
        }
    for (const std::string& chain : chains) // a chain of ours that nothing else uses any more
        if (have.chains.count(chain) && left[chain] == 0 && chain.find("ztunnel-") == 0)
            out << "-X " << chain << "\n";
    return out.str();
}

Status iptables_ensure(const std::vector<IptRule>& rules) {
    return per_table(rules, iptables_ensure_lines);
}

Status iptables_remove(const std::vector<IptRule>& rules) {
    return per_table(rules, iptables_remove_lines);
}

} // namespace ztg
