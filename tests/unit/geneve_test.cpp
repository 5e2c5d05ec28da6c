// Encapsulation against bytes worked out by hand from RFC 8926 and RFC 791, the checksum
// arithmetic, ECN (RFC 6040) and the UDP source-port hash.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include <rte_ip.h>

#include "dataplane/geneve.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

std::vector<uint8_t> bytes(const rte_mbuf* m) {
    const auto* p = rte_pktmbuf_mtod(m, const uint8_t*);
    return {p, p + m->data_len};
}

// The 50 outer bytes + inner Ethernet of a 40-byte inner packet (IPv4 + TCP SYN), lab
// tunnel, worked out by hand: outer IPv4 total length 40 + 14 + 8 + 8 + 20 = 90 (0x5a),
// UDP length 70 (0x46), checksum over 4500 005a 0000 4000 4011 0af4 0201 0af4 020a.
const std::vector<uint8_t> kExpectedHeader = {
    0x02, 0x00, 0x00, 0x00, 0x02, 0x0a,             // outer dst: the ztunnel's MAC
    0x02, 0x00, 0x00, 0x00, 0x01, 0x0a,             // outer src: our ztunnel-port MAC
    0x08, 0x00,                                     // IPv4
    0x45, 0x00, 0x00, 0x5a, 0x00, 0x00, 0x40, 0x00, // v4 ihl5, tos 0, len 90, id 0, DF
    0x40, 0x11, 0x20, 0xa1,                         // ttl 64, UDP, checksum
    0x0a, 0xf4, 0x02, 0x01, 0x0a, 0xf4, 0x02, 0x0a, // 10.244.2.1 -> 10.244.2.10
    0xff, 0xff, 0x17, 0xc1, 0x00, 0x46, 0x00, 0x00, // sport (checked apart), 6081, len 70, csum 0
    0x00, 0x00, 0x65, 0x58, 0x00, 0x03, 0xe9, 0x00, // ver 0 optlen 0, O=0 C=0, TEB, VNI 1001
    0x02, 0x00, 0x00, 0x00, 0x7f, 0x02,             // inner dst: pistioout
    0x02, 0x00, 0x00, 0x00, 0x7f, 0x01,             // inner src: istioout
    0x08, 0x00,
};

struct GeneveTest : ::testing::Test {
    Harness h;
    EncapTemplate t = lab_snapshot().outbound().tmpl;

    rte_mbuf* encap(const FrameSpec& f, std::vector<uint8_t>* inner_ip = nullptr) {
        auto frame = make_frame(f);
        rte_mbuf* m = h.frame(frame);
        const Parsed p = parse_frame(m);
        EXPECT_TRUE(p.ipv4);
        if (inner_ip)
            inner_ip->assign(frame.begin() + p.l3_off, frame.begin() + p.l3_off + p.ip_len);
        EXPECT_TRUE(encapsulate(m, p, t));
        return m;
    }
};

TEST_F(GeneveTest, HeaderMatchesHandWorkedBytes) {
    std::vector<uint8_t> inner;
    rte_mbuf* m = encap(FrameSpec{}, &inner);
    auto out = bytes(m);
    ASSERT_EQ(out.size(), 64u + 40u);
    std::vector<uint8_t> hdr(out.begin(), out.begin() + 64);
    hdr[34] = hdr[35] = 0xff; // the source port is a hash: checked below
    EXPECT_EQ(hdr, kExpectedHeader);
    EXPECT_EQ(std::vector<uint8_t>(out.begin() + 64, out.end()), inner) << "inner IPv4/TCP changed";
    EXPECT_GE(out[34] << 8 | out[35], 49152);
    rte_pktmbuf_free(m);
}

TEST_F(GeneveTest, ChecksumAgreesWithDpdkForEveryLengthAndEcn) {
    for (uint16_t payload :
         {uint16_t(0), uint16_t(1), uint16_t(2), uint16_t(100), uint16_t(1410)}) {
        for (uint8_t ecn = 0; ecn < 4; ecn++) {
            FrameSpec f;
            f.payload = payload;
            f.tos = uint8_t(0xb8 | ecn); // DSCP EF on the inner packet is not copied
            rte_mbuf* m = encap(f);
            auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, 14);
            EXPECT_EQ(ip->type_of_service, ecn) << "RFC 6040 normal mode copies ECN, DSCP 0";
            EXPECT_EQ(rte_be_to_cpu_16(ip->total_length), 20 + 20 + payload + 50);
            EXPECT_EQ(rte_ipv4_cksum(ip), 0) << "a header with its checksum folds to 0";
            const uint16_t stored = ip->hdr_checksum;
            ip->hdr_checksum = 0;
            EXPECT_EQ(stored, rte_ipv4_cksum(ip));
            rte_pktmbuf_free(m);
        }
    }
}

TEST_F(GeneveTest, HandWorkedChecksumWithCe) {
    FrameSpec f;
    f.tos = 3; // CE is copied too in normal mode
    rte_mbuf* m = encap(f);
    const auto out = bytes(m);
    EXPECT_EQ(out[15], 0x03);
    EXPECT_EQ(out[24], 0x20);
    EXPECT_EQ(out[25], 0x9e);
    rte_pktmbuf_free(m);
}

TEST_F(GeneveTest, VlanAndPaddingDoNotReachTheInnerFrame) {
    FrameSpec f;
    f.vlan = 100;
    auto frame = make_frame(f);
    frame.resize(64, 0xee); // padded
    rte_mbuf* m = h.frame(frame);
    const Parsed p = parse_frame(m);
    ASSERT_TRUE(encapsulate(m, p, t));
    EXPECT_EQ(m->pkt_len, 64u + 40u);
    const auto out = bytes(m);
    EXPECT_EQ(out[62], 0x08);
    EXPECT_EQ(out[63], 0x00);
    EXPECT_EQ(out[64], 0x45);
    rte_pktmbuf_free(m);
}

TEST_F(GeneveTest, UdpChecksumWhenConfigured) {
    TunnelParams tp;
    Snapshot s = lab_snapshot();
    tp.outer_src = s.link_mac;
    tp.outer_dst = s.nexthop_mac;
    tp.local = s.local_ip;
    tp.remote = s.remote_ip;
    tp.udp_checksum = true;
    t = make_template(tp);
    FrameSpec f;
    f.payload = 33;
    rte_mbuf* m = encap(f);
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, 14);
    auto* udp = rte_pktmbuf_mtod_offset(m, rte_udp_hdr*, 34);
    EXPECT_NE(udp->dgram_cksum, 0);
    EXPECT_EQ(rte_ipv4_udptcp_cksum_verify(ip, udp), 0);
    rte_pktmbuf_free(m);
}

TEST_F(GeneveTest, SourcePortStablePerFlowSpreadAcrossFlowsNeverZero) {
    std::set<uint16_t> ports;
    for (uint32_t i = 0; i < 1000; i++) {
        FrameSpec f;
        f.src = 0x0af40200 + (i % 200);
        f.sport = uint16_t(30000 + i);
        auto frame = make_frame(f);
        rte_mbuf* m = h.frame(frame);
        const Parsed p = parse_frame(m);
        const uint16_t a = flow_source_port(p);
        EXPECT_EQ(a, flow_source_port(parse_frame(m))) << "not stable";
        EXPECT_GE(a, 49152);
        ports.insert(a);
        rte_pktmbuf_free(m);
    }
    // 1000 flows into 16384 ports: a uniform hash leaves ~30 collisions.
    EXPECT_GT(ports.size(), 950u);
}

TEST_F(GeneveTest, SourcePortDependsOnEveryTupleField) {
    const FrameSpec base;
    auto port = [&](const FrameSpec& f) {
        rte_mbuf* m = h.frame(make_frame(f));
        const uint16_t v = flow_source_port(parse_frame(m));
        rte_pktmbuf_free(m);
        return v;
    };
    const uint16_t p0 = port(base);
    FrameSpec f = base;
    f.src++;
    EXPECT_NE(port(f), p0);
    f = base;
    f.dst++;
    EXPECT_NE(port(f), p0);
    f = base;
    f.sport++;
    EXPECT_NE(port(f), p0);
    f = base;
    f.dport++;
    EXPECT_NE(port(f), p0);
}

TEST_F(GeneveTest, NoHeadroomIsRefused) {
    auto frame = make_frame(FrameSpec{});
    rte_mbuf* m = h.frame(frame);
    // Move the data to the start of the buffer: after dropping 14 bytes of Ethernet only 14
    // bytes of headroom remain, less than the 64 the template needs.
    m->data_off = 0;
    std::memcpy(rte_pktmbuf_mtod(m, void*), frame.data(), frame.size());
    const Parsed p = parse_frame(m);
    EXPECT_FALSE(encapsulate(m, p, t));
    rte_pktmbuf_free(m);
}

#ifdef __SSE4_1__
// The vector path's header write is the scalar one's, byte for byte: every ECN value,
// lengths across the range, source ports at both ends, with and without a template whose
// addresses make the checksum carry.
TEST_F(GeneveTest, WideHeaderWriteAgreesWithTheReference) {
    EncapTemplate other = t;
    other.bytes[26] = 0xff; // outer source 255.x: a sum with carries
    other.ip_sum += 0xff00 - 0x0a00;
    for (const EncapTemplate* tp : {&t, &other})
        for (uint16_t len : {uint16_t(20 + 50), uint16_t(90), uint16_t(1514), uint16_t(0xffff)})
            for (uint8_t ecn = 0; ecn < 4; ecn++)
                for (uint16_t sport : {uint16_t(0xc000), uint16_t(0xd00d), uint16_t(0xffff)}) {
                    alignas(64) uint8_t want[64], got[64];
                    std::memset(want, 0xa5, sizeof want);
                    std::memset(got, 0x5a, sizeof got);
                    write_tunnel_headers(want, *tp, EncapTemplate::kSize, len, ecn, sport);
                    write_tunnel_headers_wide(got, *tp, len, ecn, sport);
                    EXPECT_EQ(0, std::memcmp(want, got, 64))
                        << "len " << len << " ecn " << int(ecn) << " sport " << sport;
                }
}
#endif

} // namespace
