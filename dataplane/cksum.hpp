// The Internet checksum's arithmetic, written once: folding a 32-bit one's-complement sum
// (RFC 1071) and updating a checksum in place when one 16-bit word changes (RFC 1624).
#pragma once

#include <cstdint>

#include <rte_byteorder.h>
#include <rte_ip.h>

namespace ztg {

// A 32-bit one's-complement sum folded to 16 bits (end-around carries added back).
constexpr uint16_t fold(uint32_t sum) {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    return uint16_t(sum);
}

// Folded and complemented: the checksum field of a header whose words sum to `sum`.
constexpr uint16_t fold_complement(uint32_t sum) {
    return uint16_t(~fold(sum));
}

// RFC 1624 eqn. 3: the checksum hc (host order) after one 16-bit word of the covered data
// changed from old_word to new_word (host order): HC' = ~(~HC + ~m + m').
constexpr uint16_t cksum_replace(uint16_t hc, uint16_t old_word, uint16_t new_word) {
    return fold_complement(uint32_t(uint16_t(~hc)) + uint16_t(~old_word) + new_word);
}

// The same when a 32-bit field (an IPv4 address, host order) changed: both its words.
constexpr uint16_t cksum_replace32(uint16_t hc, uint32_t old_field, uint32_t new_field) {
    return fold_complement(uint32_t(uint16_t(~hc)) + uint16_t(~(old_field >> 16)) +
                           uint16_t(~old_field) + (new_field >> 16) + (new_field & 0xFFFF));
}

// The folded ones' complement sum of the IPv4 pseudo header (source, destination, zero,
// protocol, L4 length) as it lies in memory, i.e. what rte_ipv4_phdr_cksum(ip, 0) returns
// (src, dst: network order as read; l4_len: host order). Summing the raw 32-bit words and
// folding gives the same 16-bit sum as summing their 16-bit halves; {0, proto} read as a
// little-endian 16-bit word is proto << 8. __builtin_bswap16, not rte_cpu_to_be_16:
// DPDK's is an asm volatile for a variable, which the compiler cannot schedule.
[[gnu::always_inline]] inline uint16_t ipv4_pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto,
                                                       uint16_t l4_len) {
    uint64_t s = uint64_t(src) + dst + (uint32_t(proto) << 8) + __builtin_bswap16(l4_len);
    s = (s & 0xffff) + ((s >> 16) & 0xffff) + (s >> 32); // s < 2^34 before, <= 0x20002 after
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return uint16_t(s);
}

// A routed hop (RFC 1812 §5.3.1): TTL - 1 with the header checksum adjusted as RFC 1141
// does for this one change (+0x0100, end-around carry). The caller checked TTL > 1.
inline void ipv4_decrement_ttl(rte_ipv4_hdr* ip) {
    ip->time_to_live--;
    const uint32_t sum = uint32_t(rte_be_to_cpu_16(ip->hdr_checksum)) + 0x0100;
    ip->hdr_checksum = rte_cpu_to_be_16(uint16_t(sum + (sum >> 16)));
}

} // namespace ztg
