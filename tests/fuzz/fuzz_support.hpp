// Shared pieces of the libFuzzer targets: the input format of a burst, mbufs built from
// fuzz bytes whose tailroom is poisoned for ASan (so that reading one byte past a segment's
// data is reported, not silently served from the mbuf's spare room), and the checks that
// every target makes after a stage: each mbuf given to the stage is sent at most once or
// freed, the pool's in-use count returns to its start, and the stage's counters account for
// every frame it was given.
//
// Burst input format (fuzz_node_pods, fuzz_decap, fuzz_endpoint):
//   mode:u8, then up to kBurst records  len:u16 (big endian) shape:u8 bytes[len]
// A record cut short by the end of the input takes what is left. shape bit 7: the frame
// is a chain whose first segment holds (shape & 0x7f) bytes (at least 1); frames longer than
// a segment's room are chained in any case. mode bits are the target's own (see each).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <rte_mbuf.h>

#include "dataplane/counters.hpp"
#include "dataplane/parse.hpp"
#include "dataplane/worker.hpp"

namespace ztg::fuzz {

// Aborts (a libFuzzer crash, input saved) with the failed condition and a message.
[[noreturn]] void fail(const char* file, int line, const char* cond, const std::string& msg);
#define FUZZ_CHECK(cond, msg)                                                                      \
    do {                                                                                           \
        if (!(cond)) ::ztg::fuzz::fail(__FILE__, __LINE__, #cond, (msg));                          \
    } while (0)

constexpr size_t kMaxFrame = 9600;    // jumbo frames and then some
constexpr uint16_t kSegRoom = 2048;   // data room of one segment (default mbuf size)
constexpr uint16_t kLowHeadroom = 32; // below the 64 bytes encapsulation needs

// Known, reported bugs whose check is relaxed while fuzzing so that the fuzzer keeps
// exploring past them (their reproducers live in tests/fuzz/regressions/<target>/ and are
// replayed strictly by scripts/fuzz). ZTG_FUZZ_STRICT=1 in the environment makes every
// check strict. Each id is documented in tests/fuzz/regressions/README.md.
bool known_issue(const char* id);

struct Record {
    const uint8_t* data = nullptr;
    size_t len = 0;
    uint8_t shape = 0;
};

struct BurstInput {
    uint8_t mode = 0;
    std::vector<Record> frames;
};

BurstInput split_burst(const uint8_t* data, size_t size, size_t max_frames = kBurst);

// An mbuf (chain) holding bytes; first_seg: bytes in the first segment (0: as many as fit).
// headroom: of the first segment. Tailroom of every segment is ASan-poisoned.
rte_mbuf* make_mbuf(rte_mempool* pool, const uint8_t* bytes, size_t len, size_t first_seg,
                    uint16_t headroom = RTE_PKTMBUF_HEADROOM);
rte_mbuf* make_mbuf(rte_mempool* pool, const Record& r, uint16_t headroom = RTE_PKTMBUF_HEADROOM);

// Makes every buffer make_mbuf poisoned addressable again. Called once the input is done
// (Tracker::free_all does it): a stage may allocate an mbuf whose buffer was an input's.
void unpoison_all();

// All segments' data, in order.
std::vector<uint8_t> bytes_of(const rte_mbuf* m);

// rte_mbuf_check on m and the chain's lengths; aborts if the chain is inconsistent.
void check_mbuf(const rte_mbuf* m, const char* where);

// Counters that give a frame's fate (a verdict or a drop reason), as opposed to rx/tx,
// arp_sent, events_lost and the icmp_* ones (an ICMP error sent about a frame that also
// has a fate).
bool is_verdict(Ctr c);
uint64_t verdict_sum(const DeviceCounters& d);
void reset_counters(std::vector<DeviceCounters>& cs);
std::string counters_str(const DeviceCounters& d);

// The mbufs handed to a stage and where each one went.
struct Tracker {
    struct In {
        std::vector<uint8_t> bytes;
        int out_dev = -1; // device it was sent to, -1 if not sent
    };
    std::map<const rte_mbuf*, size_t> index;
    std::vector<In> in;
    std::vector<std::vector<rte_mbuf*>> out;   // [device]: everything sent
    std::vector<std::vector<rte_mbuf*>> extra; // [device]: sent mbufs the stage allocated

    void add(rte_mbuf* m, std::vector<uint8_t> bytes);
    // Takes what the stage queued on every device (ctx.tx) and records each mbuf's device;
    // aborts if a mbuf was sent twice, or was not one of the inputs unless allow_new (an
    // mbuf the stage allocated, e.g. an ICMP error: listed in extra).
    void collect(WorkerCtx& ctx, bool allow_new = false);
    // Frees every output; aborts unless the pool's in-use count is back to baseline.
    void free_all(rte_mempool* pool, unsigned baseline);
};

std::string hex(const uint8_t* p, size_t n);
inline std::string hex(const std::vector<uint8_t>& v) {
    return hex(v.data(), v.size());
}

// Big-endian reads from a byte vector (callers check the bounds).
inline uint16_t be16(const std::vector<uint8_t>& b, size_t off) {
    return uint16_t(b[off] << 8 | b[off + 1]);
}
inline uint32_t be32(const std::vector<uint8_t>& b, size_t off) {
    return uint32_t(b[off]) << 24 | uint32_t(b[off + 1]) << 16 | uint32_t(b[off + 2]) << 8 |
           b[off + 3];
}
// True if the 20+ byte IPv4 header at b[off] (ihl words) has a valid checksum.
// The frame as its sender meant it: an unfragmented IPv4 TCP/UDP packet (p: parse_frame of
// it) whose checksum field holds the pseudo-header sum, left to offload, gets its checksum
// completed (summed word by word, independently of dataplane/offload.hpp). Returns
// whether it did.
bool complete_partial_model(std::vector<uint8_t>& b, const Parsed& p);
bool ip_checksum_ok(const std::vector<uint8_t>& b, size_t off, size_t ihl);

} // namespace ztg::fuzz
