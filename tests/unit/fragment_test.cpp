// IPv4 fragmentation of a redirect too big for the tunnel (tunnel.too_big: fragment): the
// fragments' headers (RFC 791), their payloads put back together, options, a fragment
// split again, chained input, an empty pool, a bad header; and through the node stage.
#include <gtest/gtest.h>

#include <rte_ip.h>
#include <rte_udp.h>

#include <algorithm>
#include <cstring>

#include "dataplane/fragment.hpp"
#include "dataplane/geneve.hpp"
#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

constexpr uint32_t kPod = 0x0af40203;

// An Ethernet + IPv4 frame without DF: ip_len bytes of IPv4 with ihl options bytes given,
// payload bytes 0, 1, 2, ... (mod 251), IP ID 0x1234.
std::vector<uint8_t> frame(uint16_t ip_len, std::vector<uint8_t> options = {}, uint16_t frag = 0) {
    FrameSpec f;
    f.frag = frag;
    std::vector<uint8_t> b = make_frame(f); // for its Ethernet and IPv4 header
    b.resize(14 + 20);
    b.insert(b.end(), options.begin(), options.end());
    const size_t ihl = 20 + options.size();
    b[14] = uint8_t(0x40 | ihl / 4);
    b[16] = uint8_t(ip_len >> 8);
    b[17] = uint8_t(ip_len);
    b[18] = 0x12;
    b[19] = 0x34;
    for (size_t i = ihl; i < ip_len; i++) b.push_back(uint8_t(i % 251));
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(b.data() + 14);
    ip->hdr_checksum = 0;
    ip->hdr_checksum = uint16_t(~rte_raw_cksum(ip, ihl));
    return b;
}

// b in an mbuf, chained every 1500 bytes (a pool buffer holds 2048).
rte_mbuf* mbuf_of(Harness& h, const std::vector<uint8_t>& b) {
    rte_mbuf* m = nullptr;
    for (size_t at = 0; at < b.size(); at += 1500) {
        rte_mbuf* seg =
            h.frame({b.begin() + long(at), b.begin() + long(std::min(b.size(), at + 1500))});
        if (m == nullptr)
            m = seg;
        else
            EXPECT_EQ(rte_pktmbuf_chain(m, seg), 0);
    }
    return m;
}

struct Frag {
    uint16_t offset; // bytes
    bool mf;
    std::vector<uint8_t> header, payload;
};

std::vector<Frag> split(Harness& h, const std::vector<uint8_t>& b, uint16_t max_len,
                        Fragments* res = nullptr) {
    rte_mbuf* m = mbuf_of(h, b);
    const Parsed p = parse_frame(m);
    EXPECT_TRUE(p.ipv4);
    rte_mbuf* out[kMaxFragments];
    const Fragments f = fragment_ipv4(m, p, max_len, h.pool, out);
    if (res != nullptr) *res = f;
    std::vector<Frag> v;
    for (uint16_t k = 0; k < f.n; k++) {
        EXPECT_EQ(out[k]->nb_segs, 1);
        EXPECT_GE(rte_pktmbuf_headroom(out[k]), EncapTemplate::kSize);
        const auto* d = rte_pktmbuf_mtod(out[k], const uint8_t*);
        const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(d);
        const size_t ihl = (d[0] & 0xf) * 4u;
        EXPECT_EQ(rte_be_to_cpu_16(ip->total_length), out[k]->pkt_len);
        EXPECT_LE(out[k]->pkt_len, max_len);
        EXPECT_EQ(rte_raw_cksum(d, ihl), 0xffff) << "header checksum of fragment " << k;
        const uint16_t fo = rte_be_to_cpu_16(ip->fragment_offset);
        EXPECT_EQ(fo & RTE_IPV4_HDR_DF_FLAG, 0);
        v.push_back({uint16_t((fo & RTE_IPV4_HDR_OFFSET_MASK) * 8),
                     (fo & RTE_IPV4_HDR_MF_FLAG) != 0,
                     {d, d + ihl},
                     {d + ihl, d + out[k]->pkt_len}});
        rte_pktmbuf_free(out[k]);
    }
    rte_pktmbuf_free(m);
    return v;
}

TEST(Fragment, SplitsIntoEightByteUnitsThatPutTogetherGiveThePacket) {
    Harness h;
    const auto b = frame(3000);
    const auto f = split(h, b, 1450);
    ASSERT_EQ(f.size(), 3u); // (1450 - 20) & ~7 = 1424: 1424 + 1424 + 132 = 2980
    EXPECT_EQ(f[0].payload.size(), 1424u);
    EXPECT_EQ(f[2].payload.size(), 132u);
    std::vector<uint8_t> whole;
    for (size_t k = 0; k < f.size(); k++) {
        EXPECT_EQ(f[k].offset, whole.size());
        EXPECT_EQ(f[k].mf, k + 1 < f.size());
        EXPECT_EQ(f[k].header[4], 0x12) << "IP ID kept";
        EXPECT_EQ(f[k].header[5], 0x34);
        EXPECT_EQ(std::memcmp(f[k].header.data() + 12, b.data() + 14 + 12, 8), 0) << "addresses";
        whole.insert(whole.end(), f[k].payload.begin(), f[k].payload.end());
    }
    EXPECT_EQ(whole, std::vector<uint8_t>(b.begin() + 34, b.end()));
}

TEST(Fragment, LaterFragmentsKeepOnlyCopiedOptions) {
    Harness h;
    // Router Alert (148: copied) then Record Route (7: not copied), 4 bytes each.
    const std::vector<uint8_t> opts = {0x94, 0x04, 0x00, 0x00, 0x07, 0x04, 0x05, 0x00};
    const auto f = split(h, frame(2000, opts), 1000);
    ASSERT_EQ(f.size(), 3u); // (1000 - 28) & ~7 = 968
    EXPECT_EQ(std::vector<uint8_t>(f[0].header.begin() + 20, f[0].header.end()), opts);
    for (size_t k = 1; k < f.size(); k++) {
        ASSERT_EQ(f[k].header.size(), 24u) << "Record Route is left out";
        EXPECT_EQ(f[k].header[0], 0x46);
        EXPECT_EQ(std::vector<uint8_t>(f[k].header.begin() + 20, f[k].header.end()),
                  (std::vector<uint8_t>{0x94, 0x04, 0x00, 0x00}));
    }
}

TEST(Fragment, AFragmentSplitAgainKeepsItsOffsetAndMoreFragments) {
    Harness h;
    const auto f = split(h, frame(1500, {}, RTE_IPV4_HDR_MF_FLAG | 100), 1000);
    ASSERT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0].offset, 800);
    EXPECT_EQ(f[1].offset, 800 + 976);
    EXPECT_TRUE(f[0].mf);
    EXPECT_TRUE(f[1].mf) << "the last piece of a middle fragment is not the last of the packet";
    const auto g = split(h, frame(1500, {}, 100), 1000);
    ASSERT_EQ(g.size(), 2u);
    EXPECT_FALSE(g[1].mf);
}

TEST(Fragment, ChainedInputIsCopiedAcrossSegments) {
    Harness h;
    const auto b = frame(1800);
    rte_mbuf* m = h.frame(std::vector<uint8_t>(b.begin(), b.begin() + 700));
    rte_mbuf* tail = h.frame(std::vector<uint8_t>(b.begin() + 700, b.end()));
    ASSERT_EQ(rte_pktmbuf_chain(m, tail), 0);
    const Parsed p = parse_frame(m);
    ASSERT_TRUE(p.ipv4);
    rte_mbuf* out[kMaxFragments];
    const Fragments f = fragment_ipv4(m, p, 1000, h.pool, out);
    ASSERT_EQ(f.n, 2);
    std::vector<uint8_t> whole;
    for (uint16_t k = 0; k < f.n; k++) {
        const auto* d = rte_pktmbuf_mtod(out[k], const uint8_t*);
        whole.insert(whole.end(), d + 20, d + out[k]->pkt_len);
        rte_pktmbuf_free(out[k]);
    }
    EXPECT_EQ(whole, std::vector<uint8_t>(b.begin() + 34, b.end()));
    rte_pktmbuf_free(m);
}

TEST(Fragment, NothingMadeWhenItCannotBeSplitOrThePoolIsDry) {
    Harness h;
    Fragments r;
    EXPECT_TRUE(split(h, frame(3000, std::vector<uint8_t>(40, 1)), 66, &r).empty())
        << "60-byte header: no room for 8 bytes";
    EXPECT_FALSE(r.no_mbuf);
    EXPECT_TRUE(split(h, frame(1900), 40, &r).empty()) << "118 > kMaxFragments";
    EXPECT_TRUE(split(h, frame(1500, {}, 8100), 1000, &r).empty()) << "past offset 65528";
    auto bad = frame(1500);
    bad[14 + 10] ^= 1; // header checksum
    EXPECT_TRUE(split(h, bad, 1000, &r).empty()) << "a bad header must not be made valid";
    EXPECT_TRUE(r.bad_header);

    // A pool with 4 mbufs: 1 for the packet, 3 free; 4 fragments are needed.
    rte_mempool* tiny = rte_pktmbuf_pool_create("frag_tiny", 4, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                                int(rte_socket_id()));
    ASSERT_NE(tiny, nullptr);
    const auto b = frame(1500);
    rte_mbuf* m = rte_pktmbuf_alloc(tiny);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, uint16_t(b.size())), b.data(), b.size());
    rte_mbuf* out[kMaxFragments];
    const Fragments f = fragment_ipv4(m, parse_frame(m), 500, tiny, out);
    EXPECT_EQ(f.n, 0);
    EXPECT_TRUE(f.no_mbuf);
    EXPECT_EQ(rte_mempool_in_use_count(tiny), 1u) << "a partial bulk get leaked";
    rte_pktmbuf_free(m);
    rte_mempool_free(tiny);
}

// Through the node stage: each fragment in its own Geneve frame that fits the MTU, all
// with the packet's flow hash; counted once as fragmented, and per fragment.
TEST(FragmentStage, TooBigWithoutDfLeavesAsFittingFragments) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    const unsigned before = rte_mempool_in_use_count(h.pool);
    const auto b = frame(3000);
    h.run_pods({mbuf_of(h, b)});
    auto zt = h.take(Harness::kZt);
    ASSERT_EQ(zt.size(), 3u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::fragmented), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::fragments), 3u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_too_big), 0u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 0u);
    std::vector<uint8_t> whole;
    uint16_t sport = 0;
    for (rte_mbuf* m : zt) {
        EXPECT_LE(m->pkt_len, 14u + 1500u);
        const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
        const auto* udp = reinterpret_cast<const rte_udp_hdr*>(d + kOuterUdpOff);
        if (sport == 0) sport = udp->src_port;
        EXPECT_EQ(udp->src_port, sport) << "one flow, one path";
        EXPECT_EQ(rte_be_to_cpu_16(udp->dst_port), 6081);
        EXPECT_EQ(rte_raw_cksum(d + 14, 20), 0xffff) << "outer checksum";
        EXPECT_EQ(rte_be_to_cpu_16(reinterpret_cast<const rte_ipv4_hdr*>(d + 14)->total_length),
                  m->pkt_len - 14);
        whole.insert(whole.end(), d + 64 + 20, d + m->pkt_len);
        rte_pktmbuf_free(m);
    }
    EXPECT_EQ(whole, std::vector<uint8_t>(b.begin() + 34, b.end()));
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before) << "the original packet leaked";
}

TEST(FragmentStage, BadHeaderChecksumIsDroppedNotMadeValid) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    const unsigned before = rte_mempool_in_use_count(h.pool);
    auto b = frame(3000);
    b[14 + 10] ^= 1; // header checksum
    h.run_pods({mbuf_of(h, b)});
    EXPECT_EQ(h.take(Harness::kZt).size(), 0u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_bad_header), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::fragmented), 0u);
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before);
}

TEST(FragmentStage, TooBigDropConfiguredDropsAndCounts) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    Snapshot s = lab_snapshot();
    s.fragment = false;
    h.set_snapshot(s);
    const unsigned before = rte_mempool_in_use_count(h.pool);
    h.run_pods({mbuf_of(h, frame(3000))});
    EXPECT_EQ(h.take(Harness::kZt).size(), 0u);
    EXPECT_EQ(h.take(Harness::kPods).size(), 0u) << "no ICMP without DF";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_too_big), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::fragmented), 0u);
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before);
}

} // namespace
