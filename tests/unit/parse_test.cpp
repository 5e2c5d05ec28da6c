// The parser on ordinary, odd and truncated frames: it must classify well-formed IPv4 and
// refuse everything it cannot vouch for, without reading past the frame.
#include <gtest/gtest.h>

#include "dataplane/parse.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

struct ParseTest : ::testing::Test {
    Harness h;
    Parsed parse(const std::vector<uint8_t>& b) {
        rte_mbuf* m = h.frame(b);
        Parsed p = parse_frame(m);
        rte_pktmbuf_free(m);
        return p;
    }
};

TEST_F(ParseTest, PlainTcp) {
    FrameSpec f;
    const Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.l3_off, 14);
    EXPECT_EQ(p.ip_len, 40);
    EXPECT_EQ(p.proto, 6);
    EXPECT_EQ(p.src, ip4(10, 244, 2, 3));
    EXPECT_EQ(p.dst, ip4(10, 96, 0, 10));
    EXPECT_EQ(p.sport.host(), 40000);
    EXPECT_EQ(p.dport.host(), 9080);
    EXPECT_FALSE(p.fragment);
}

TEST_F(ParseTest, VlanTagged) {
    FrameSpec f;
    f.vlan = 42;
    const Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.l3_off, 18);
    EXPECT_EQ(p.dport.host(), 9080);
}

TEST_F(ParseTest, EthernetPaddingIsNotPartOfThePacket) {
    FrameSpec f;
    auto b = make_frame(f);
    b.resize(b.size() + 6, 0xee); // 54 -> 60 bytes: the minimum frame with padding
    const Parsed p = parse(b);
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.ip_len, 40);
}

TEST_F(ParseTest, NonIpv4IsNotIpv4) {
    auto b = make_frame(FrameSpec{});
    b[12] = 0x86; // IPv6 ethertype
    b[13] = 0xdd;
    EXPECT_FALSE(parse(b).ipv4);
    b[12] = 0x08; // ARP
    b[13] = 0x06;
    EXPECT_FALSE(parse(b).ipv4);
}

TEST_F(ParseTest, BadHeaderFieldsAreRefused) {
    auto base = make_frame(FrameSpec{});
    auto b = base;
    b[14] = 0x65; // version 6
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[14] = 0x44; // IHL 4 (16 bytes) is below the minimum
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[16] = 0x00; // total length 0x0010 < IHL*4
    b[17] = 0x10;
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[16] = 0x05; // total length 1280 lies: longer than the frame
    b[17] = 0x00;
    EXPECT_FALSE(parse(b).ipv4);
}

TEST_F(ParseTest, TruncatedAtEveryOffset) {
    FrameSpec f;
    f.vlan = 7;
    const auto full = make_frame(f);
    for (size_t len = 0; len < full.size(); len++) {
        std::vector<uint8_t> b(full.begin(), full.begin() + long(len));
        EXPECT_FALSE(parse(b).ipv4) << "length " << len;
    }
    EXPECT_TRUE(parse(full).ipv4);
}

TEST_F(ParseTest, IpOptionsMoveThePorts) {
    auto b = make_frame(FrameSpec{});
    // Insert 4 bytes of options (NOP NOP NOP EOL) after the 20-byte header; fix IHL/length.
    b.insert(b.begin() + 34, {1, 1, 1, 0});
    b[14] = 0x46;
    b[17] = 44;
    const Parsed p = parse(b);
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.sport.host(), 40000);
    EXPECT_EQ(p.dport.host(), 9080);
}

TEST_F(ParseTest, FragmentsCarryNoPorts) {
    FrameSpec f;
    f.frag = 0x2000; // MF, offset 0: the first fragment
    Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_TRUE(p.fragment);
    EXPECT_EQ(p.sport.raw, 0);
    f.frag = 0x0010; // a later fragment
    p = parse(make_frame(f));
    EXPECT_TRUE(p.fragment);
    EXPECT_EQ(p.dport.raw, 0);
}

} // namespace

// The vector path's parse_ether_fast gives parse_ether's result, field for field, on the
// frames it recognises and on those it hands over: every byte of a plain TCP frame (and
// of a UDP one, and a VLAN-tagged one) set to values that cross each of its checks, and
// every truncation.
TEST_F(ParseTest, FastParseAgreesWithTheReference) {
    auto same = [](const Parsed& a, const Parsed& b) {
        return a.l3_off == b.l3_off && a.ip_len == b.ip_len && a.l4_off == b.l4_off &&
               a.proto == b.proto && a.tos == b.tos && a.ipv4 == b.ipv4 &&
               a.fragment == b.fragment && a.df == b.df &&
               a.csum_maybe_partial == b.csum_maybe_partial && a.src == b.src && a.dst == b.dst &&
               a.sport == b.sport && a.dport == b.dport;
    };
    FrameSpec udp, vlan, big;
    udp.proto = 17;
    vlan.vlan = 3;
    big.payload = 30;
    size_t fast = 0, checked = 0, took = 0;
    for (const FrameSpec& f : {FrameSpec{}, udp, vlan, big}) {
        const auto base = make_frame(f);
        auto check = [&](const std::vector<uint8_t>& b) {
            const Parsed want = parse_ether(b.data(), uint32_t(b.size()), uint32_t(b.size()));
            const Parsed got = parse_ether_fast(b.data(), uint32_t(b.size()), uint32_t(b.size()));
            EXPECT_TRUE(same(got, want)) << "frame of " << b.size() << " bytes";
            // A frame longer in the packet than in this segment: the lengths differ.
            const Parsed want2 = parse_ether(b.data(), uint32_t(b.size()), uint32_t(b.size() + 9));
            EXPECT_TRUE(same(parse_ether_fast(b.data(), uint32_t(b.size()), uint32_t(b.size() + 9)),
                             want2));
            fast += want.ipv4 && want.proto == 6 && want.l3_off == 14;
            checked++;
            // What the vector path's usual redirect relies on when the fast parse takes a
            // frame (parse_frame_fast returns true): untagged IPv4 without options over an
            // unfragmented TCP segment.
            Parsed q;
            if (parse_ether_fast_into(b.data(), uint32_t(b.size()), uint32_t(b.size()), q)) {
                EXPECT_TRUE(q.ipv4 && q.proto == 6 && !q.fragment && q.l3_off == 14 &&
                            q.l4_off == 34)
                    << "frame of " << b.size() << " bytes";
                took++;
            }
        };
        check(base);
        for (size_t i = 12; i < std::min<size_t>(base.size(), 56); i++)
            for (int v : {0x00, 0x01, 0x06, 0x08, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x80, 0xff}) {
                auto b = base;
                b[i] = uint8_t(v);
                check(b);
            }
        // The TCP checksum holding the pseudo-header sum: a partial one.
        if (f.proto == 6 && f.vlan < 0) {
            auto b = base;
            const Parsed p = parse_ether(b.data(), uint32_t(b.size()), uint32_t(b.size()));
            uint32_t s, d;
            std::memcpy(&s, b.data() + 26, 4);
            std::memcpy(&d, b.data() + 30, 4);
            const uint16_t v = ipv4_pseudo_sum(s, d, 6, uint16_t(p.ip_len - 20));
            std::memcpy(b.data() + 50, &v, 2);
            ASSERT_TRUE(
                parse_ether(b.data(), uint32_t(b.size()), uint32_t(b.size())).csum_maybe_partial);
            check(b);
        }
        for (size_t len = 0; len < base.size(); len++)
            check(std::vector<uint8_t>(base.begin(), base.begin() + long(len)));
    }
    EXPECT_GT(fast, 100u) << "the fast parse's own case must be among those compared";
    EXPECT_GT(took, 100u) << "and taken by it";
    EXPECT_GT(checked, 1000u);
}
