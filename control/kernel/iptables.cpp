#include "control/kernel/iptables.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

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

std::string saved_form(const IptRule& r) {
    return "-A " + r.chain + " " + with_comment(r);
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
        else if (line.rfind("-A ", 0) == 0)
            v.lines.insert(line);
    }
    return v;
}

std::string iptables_ensure_lines(const std::vector<IptRule>& rs, const IptTable& have) {
    std::ostringstream out;
    std::set<std::string> declared;
    for (const IptRule& r : rs) // only new chains: with --noflush a declared chain is flushed
        if (!have.chains.count(r.chain) && declared.insert(r.chain).second)
            out << ":" << r.chain << " - [0:0]\n";
    for (const IptRule& r : rs)
        if (!have.lines.count(saved_form(r)))
            out << (r.jump_at_top ? "-I " + r.chain + " 1 " : "-A " + r.chain + " ")
                << with_comment(r) << "\n";
    return out.str();
}

std::string iptables_remove_lines(const std::vector<IptRule>& rs, const IptTable& have) {
    std::ostringstream out;
    std::map<std::string, size_t> left; // rules per chain after the removal
    for (const auto& line : have.lines) left[line.substr(3, line.find(' ', 3) - 3)]++;
    for (const IptRule& r : rs)
        if (have.lines.count(saved_form(r))) {
            out << "-D " << r.chain << " " << with_comment(r) << "\n";
            left[r.chain]--;
        }
    for (const IptRule& r : rs) // a chain of ours that nothing else uses any more
        if (have.chains.count(r.chain) && left[r.chain] == 0 && r.chain.find("ztunnel-") == 0) {
            out << "-X " << r.chain << "\n";
            left[r.chain] = 1; // once
        }
    return out.str();
}

Status iptables_ensure(const std::vector<IptRule>& rules) {
    return per_table(rules, iptables_ensure_lines);
}

Status iptables_remove(const std::vector<IptRule>& rules) {
    return per_table(rules, iptables_remove_lines);
}

} // namespace ztg
