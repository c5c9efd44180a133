import { test } from 'node:test';
import assert from 'node:assert/strict';
import { C, COUNTER_NAMES, newCounters } from '../../src/datapath/counters.js';
import { renderMetrics, type MetricsSource } from '../../src/observability/metrics.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';

const route = (cidr: string, ip: string) => ({ ...parseCidr(cidr), publicIp: parseIPv4(ip) });

function knownSource(): MetricsSource {
  const counters = newCounters();
  counters[C.tunReadPackets] = 10;
  counters[C.tunReadBytes] = 840;
  counters[C.udpSentPackets] = 9;
  counters[C.udpSentBytes] = 756;
  counters[C.dropTxNoRoute] = 1;
  counters[C.icmpUnreachableSent] = 1;
  counters[C.udpRecvPackets] = 7;
  counters[C.udpRecvBytes] = 588;
  counters[C.tunWritePackets] = 6;
  counters[C.tunWriteBytes] = 504;
  counters[C.tunGroWrites] = 2;
  counters[C.tunGroPackets] = 7;
  counters[C.dropRxSpoofedSource] = 1;
  counters[C.tunReadBatches] = 3;
  counters[C.udpRecvBatches] = 2;
  counters[C.udpRecvErrors] = 4;
  counters[C.tunTsoPackets] = 1;
  counters[C.tunTsoSegments] = 3;
  counters[C.tunUsoPackets] = 2;
  counters[C.tunUsoSegments] = 80;
  counters[C.udpGroRuns] = 1;
  counters[C.udpGroDatagrams] = 2;
  counters[C.spinCaught] = 12;
  counters[C.spinRanOut] = 5;
  counters[C.spinPaused] = 30;
  return {
    counters,
    routes: () => [route('10.244.2.0/24', '192.0.2.2'), route('10.244.3.0/24', '192.0.2.3')],
    lease: () => ({
      subnet: parseCidr('10.244.7.0/24'),
      publicIp: parseIPv4('192.0.2.7'),
      expiresAt: 1_700_000_000_500,
    }),
    offloads: () => ({ tun_tso: true, udp_gro: false }),
  };
}

const EXPECTED =
  `# HELP flannel_ts_tun_read_packets_total Packets read ` +
  `from the TUN device (flannel0), to be sent to peers.
# TYPE flannel_ts_tun_read_packets_total counter
flannel_ts_tun_read_packets_total 10
# HELP flannel_ts_tun_read_bytes_total Bytes of the packets read from the TUN device (flannel0).
# TYPE flannel_ts_tun_read_bytes_total counter
flannel_ts_tun_read_bytes_total 840
# HELP flannel_ts_udp_sent_packets_total Encapsulated packets sent to peers over UDP.
# TYPE flannel_ts_udp_sent_packets_total counter
flannel_ts_udp_sent_packets_total 9
# HELP flannel_ts_udp_sent_bytes_total UDP payload bytes sent to peers.
# TYPE flannel_ts_udp_sent_bytes_total counter
flannel_ts_udp_sent_bytes_total 756
# HELP flannel_ts_dropped_packets_total Packets dropped by the datapath, by ` +
  `direction (tx: flannel0 to UDP, rx: UDP to flannel0) and reason.
# TYPE flannel_ts_dropped_packets_total counter
flannel_ts_dropped_packets_total{direction="tx",reason="malformed"} 0
flannel_ts_dropped_packets_total{direction="tx",reason="oversize"} 0
flannel_ts_dropped_packets_total{direction="tx",reason="no_route"} 1
flannel_ts_dropped_packets_total{direction="tx",reason="ttl_exceeded"} 0
flannel_ts_dropped_packets_total{direction="tx",reason="send_error"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="malformed"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="oversize"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="unknown_sender"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="spoofed_source"} 1
flannel_ts_dropped_packets_total{direction="rx",reason="not_for_us"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="ttl_exceeded"} 0
flannel_ts_dropped_packets_total{direction="rx",reason="write_error"} 0
flannel_ts_dropped_packets_total{direction="tx",reason="bad_offload"} 0
# HELP flannel_ts_icmp_unreachable_sent_total ICMP destination-unreachable messages sent back for packets with no route.
# TYPE flannel_ts_icmp_unreachable_sent_total counter
flannel_ts_icmp_unreachable_sent_total 1
# HELP flannel_ts_icmp_unreachable_failed_total ICMP destination-unreachable ` +
  `messages built but not written to the TUN device.
# TYPE flannel_ts_icmp_unreachable_failed_total counter
flannel_ts_icmp_unreachable_failed_total 0
# HELP flannel_ts_udp_received_packets_total Encapsulated packets received from peers over UDP.
# TYPE flannel_ts_udp_received_packets_total counter
flannel_ts_udp_received_packets_total 7
# HELP flannel_ts_udp_received_bytes_total UDP payload bytes received from peers.
# TYPE flannel_ts_udp_received_bytes_total counter
flannel_ts_udp_received_bytes_total 588
# HELP flannel_ts_tun_written_packets_total Packets written to the TUN device (flannel0), received from peers.
# TYPE flannel_ts_tun_written_packets_total counter
flannel_ts_tun_written_packets_total 6
# HELP flannel_ts_tun_written_bytes_total Bytes of the packets written to the TUN device (flannel0).
# TYPE flannel_ts_tun_written_bytes_total counter
flannel_ts_tun_written_bytes_total 504
# HELP flannel_ts_tun_gro_writes_total Coalesced TCP super-packets written to the TUN device (GRO).
# TYPE flannel_ts_tun_gro_writes_total counter
flannel_ts_tun_gro_writes_total 2
# HELP flannel_ts_tun_gro_packets_total Packets carried by coalesced super-packets (also in tun_written_packets_total).
# TYPE flannel_ts_tun_gro_packets_total counter
flannel_ts_tun_gro_packets_total 7
# HELP flannel_ts_tun_gro_fallbacks_total Times flannel0 refused a super-packet and GRO was turned off.
# TYPE flannel_ts_tun_gro_fallbacks_total counter
flannel_ts_tun_gro_fallbacks_total 0
# HELP flannel_ts_tun_tso_packets_total TSO super-packets read from ` +
  `the TUN device (once each in tun_read_packets_total).
# TYPE flannel_ts_tun_tso_packets_total counter
flannel_ts_tun_tso_packets_total 1
# HELP flannel_ts_tun_tso_segments_total Segments the TSO super-packets were cut into, each one datagram.
# TYPE flannel_ts_tun_tso_segments_total counter
flannel_ts_tun_tso_segments_total 3
# HELP flannel_ts_tun_checksums_completed_total Packets read with a partial checksum that was completed before sending.
# TYPE flannel_ts_tun_checksums_completed_total counter
flannel_ts_tun_checksums_completed_total 0
# HELP flannel_ts_tun_uso_packets_total UDP GSO super-packets read from ` +
  `the TUN device (once each in tun_read_packets_total).
# TYPE flannel_ts_tun_uso_packets_total counter
flannel_ts_tun_uso_packets_total 2
# HELP flannel_ts_tun_uso_segments_total Datagrams the UDP GSO super-packets ` +
  `were cut into, each one datagram on the wire.
# TYPE flannel_ts_tun_uso_segments_total counter
flannel_ts_tun_uso_segments_total 80
# HELP flannel_ts_udp_gro_runs_total Coalesced receives (UDP GRO) from the socket.
# TYPE flannel_ts_udp_gro_runs_total counter
flannel_ts_udp_gro_runs_total 1
# HELP flannel_ts_udp_gro_datagrams_total Datagrams carried by coalesced receives (also in udp_received_packets_total).
# TYPE flannel_ts_udp_gro_datagrams_total counter
flannel_ts_udp_gro_datagrams_total 2
# HELP flannel_ts_read_batches_total Batched reads that returned packets (packets / batches = batch occupancy).
# TYPE flannel_ts_read_batches_total counter
flannel_ts_read_batches_total{source="tun"} 3
flannel_ts_read_batches_total{source="udp"} 2
# HELP flannel_ts_read_errors_total Batched reads that failed with an I/O error.
# TYPE flannel_ts_read_errors_total counter
flannel_ts_read_errors_total{source="tun"} 0
flannel_ts_read_errors_total{source="udp"} 4
# HELP flannel_ts_icmp_time_exceeded_sent_total ICMP time-exceeded messages written back into the TUN device for packets whose TTL ran out.
# TYPE flannel_ts_icmp_time_exceeded_sent_total counter
flannel_ts_icmp_time_exceeded_sent_total 0
# HELP flannel_ts_icmp_time_exceeded_failed_total ICMP time-exceeded messages built but not written to the TUN device.
# TYPE flannel_ts_icmp_time_exceeded_failed_total counter
flannel_ts_icmp_time_exceeded_failed_total 0
# HELP flannel_ts_icmp_rate_limited_total ICMP errors not sent because their destination, or all together, exceeded the rate limit.
# TYPE flannel_ts_icmp_rate_limited_total counter
flannel_ts_icmp_rate_limited_total 0
# HELP flannel_ts_datapath_busy_polls_total Busy-polling after traffic (--datapath-spin-us), by outcome: caught a packet, ran out and slept, stopped because other tasks wanted the CPU (contended), or not started because the spins before caught nothing (paused).
# TYPE flannel_ts_datapath_busy_polls_total counter
flannel_ts_datapath_busy_polls_total{outcome="caught"} 12
flannel_ts_datapath_busy_polls_total{outcome="ran_out"} 5
flannel_ts_datapath_busy_polls_total{outcome="contended"} 0
flannel_ts_datapath_busy_polls_total{outcome="paused"} 30
# HELP flannel_ts_routes Peer routes in the datapath.
# TYPE flannel_ts_routes gauge
flannel_ts_routes 2
# HELP flannel_ts_route_info One series per peer route: the subnet and the public IP it is sent to.
# TYPE flannel_ts_route_info gauge
flannel_ts_route_info{subnet="10.244.2.0/24",public_ip="192.0.2.2"} 1
flannel_ts_route_info{subnet="10.244.3.0/24",public_ip="192.0.2.3"} 1
# HELP flannel_ts_lease_info Our own subnet lease and the public IP it advertises.
# TYPE flannel_ts_lease_info gauge
flannel_ts_lease_info{subnet="10.244.7.0/24",public_ip="192.0.2.7"} 1
# HELP flannel_ts_lease_expiration_timestamp_seconds When our subnet lease expires ` +
  `unless renewed (unix seconds); absent for a reservation.
# TYPE flannel_ts_lease_expiration_timestamp_seconds gauge
flannel_ts_lease_expiration_timestamp_seconds{subnet="10.244.7.0/24"} 1700000000
# HELP flannel_ts_offload_enabled Whether an offload is in force (1) or off, refused by the kernel or by --offloads (0).
# TYPE flannel_ts_offload_enabled gauge
flannel_ts_offload_enabled{offload="tun_tso"} 1
flannel_ts_offload_enabled{offload="udp_gro"} 0
`;

test('renders the exact exposition for a known input', () => {
  assert.equal(renderMetrics(knownSource()), EXPECTED);
});

test('a reservation has lease info but no expiry; no lease has neither', () => {
  const source = knownSource();
  const reserved = renderMetrics({
    ...source,
    lease: () => ({ subnet: parseCidr('10.244.7.0/24'), publicIp: parseIPv4('192.0.2.7'), expiresAt: null }),
  });
  assert.match(reserved, /^flannel_ts_lease_info\{subnet="10.244.7.0\/24",public_ip="192.0.2.7"\} 1$/m);
  assert.doesNotMatch(reserved, /lease_expiration/);
  const none = renderMetrics({ ...source, lease: () => null });
  assert.match(none, /^# TYPE flannel_ts_lease_info gauge$/m);
  assert.doesNotMatch(none, /^flannel_ts_lease_info/m);
  assert.doesNotMatch(none, /lease_expiration/);
});

test('no routes: count 0 and route_info declared without series', () => {
  const out = renderMetrics({ ...knownSource(), routes: () => [] });
  assert.match(out, /^flannel_ts_routes 0$/m);
  assert.match(out, /^# TYPE flannel_ts_route_info gauge$/m);
  assert.doesNotMatch(out, /^flannel_ts_route_info/m);
});

test('every datapath counter appears in exactly one series', () => {
  const counters = newCounters();
  // Distinct values (index + 1000) let each counter be found by its value.
  COUNTER_NAMES.forEach((_, i) => {
    counters[i] = 1000 + i;
  });
  const out = renderMetrics({ counters, routes: () => [], lease: () => null });
  for (let i = 0; i < COUNTER_NAMES.length; i++) {
    const hits = out.split('\n').filter((l) => !l.startsWith('#') && l.endsWith(` ${1000 + i}`));
    assert.equal(hits.length, 1, `${COUNTER_NAMES[i]} should appear once`);
  }
});

test('reads the live counters array at render time', () => {
  const source = knownSource();
  source.counters[C.udpSentPackets] = 2 ** 53;
  assert.match(renderMetrics(source), /^flannel_ts_udp_sent_packets_total 9007199254740992$/m);
});

test('per-peer traffic when the source provides it', () => {
  const out = renderMetrics({
    ...knownSource(),
    peerTraffic: () => [
      {
        ...route('10.244.2.0/24', '192.0.2.2'),
        sentPackets: 5,
        sentBytes: 500,
        sentDrops: 2,
        receivedPackets: 4,
        receivedBytes: 400,
        receivedDrops: 1,
      },
    ],
  });
  assert.match(out, /^# TYPE flannel_ts_peer_sent_packets_total counter$/m);
  assert.match(out, /^flannel_ts_peer_sent_packets_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2"\} 5$/m);
  assert.match(out, /^flannel_ts_peer_sent_bytes_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2"\} 500$/m);
  assert.match(out, /^flannel_ts_peer_received_packets_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2"\} 4$/m);
  assert.match(out, /^flannel_ts_peer_received_bytes_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2"\} 400$/m);
  assert.match(
    out,
    /^flannel_ts_peer_dropped_packets_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2",direction="tx"\} 2$/m,
  );
  assert.match(
    out,
    /^flannel_ts_peer_dropped_packets_total\{subnet="10.244.2.0\/24",public_ip="192.0.2.2",direction="rx"\} 1$/m,
  );
  assert.doesNotMatch(renderMetrics(knownSource()), /peer_sent/);
});

test('every family has HELP and TYPE once, before its samples, and every line is well formed', () => {
  const out = renderMetrics(knownSource());
  assert.ok(out.endsWith('\n'));
  const seen = new Set<string>();
  let current = '';
  for (const line of out.slice(0, -1).split('\n')) {
    const help = /^# HELP (\S+) .+$/.exec(line);
    const type = /^# TYPE (\S+) (counter|gauge)$/.exec(line);
    if (help) {
      assert.ok(!seen.has(help[1]), `${help[1]} declared twice`);
      seen.add(help[1]);
      current = help[1];
    } else if (type) {
      assert.equal(type[1], current);
    } else {
      const sample = /^([a-z_]+)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? -?[0-9.e+]+$/.exec(line);
      assert.ok(sample, `malformed sample line: ${line}`);
      assert.equal(sample[1], current, `${line} outside its family`);
      if (/_total$/.test(current)) assert.match(out, new RegExp(`^# TYPE ${current} counter$`, 'm'));
    }
  }
});
