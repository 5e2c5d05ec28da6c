"""Helpers of perf/compare: traffic (pcap), sides (testpmd / ztgeneve / OVS), check (tshark), env, report."""
