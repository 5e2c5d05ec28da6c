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

// A routed hop (RFC 1812 §5.3.1): TTL - 1 with the header checksum adjusted as RFC 1141
// does for this one change (+0x0100, end-around carry). The caller checked TTL > 1.
inline void ipv4_decrement_ttl(rte_ipv4_hdr* ip) {
    ip->time_to_live--;
    const uint32_t sum = uint32_t(rte_be_to_cpu_16(ip->hdr_checksum)) + 0x0100;
    ip->hdr_checksum = rte_cpu_to_be_16(uint16_t(sum + (sum >> 16)));
}

} // namespace ztg
