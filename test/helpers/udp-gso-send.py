#!/usr/bin/env python3
"""Runs inside a pod namespace (test/integration/tun-uso.test.ts): sends COUNT numbered datagrams
with UDP GSO, PER datagrams per sendto (setsockopt UDP_SEGMENT = SIZE), the last datagram of each
sendto SHORTER bytes shorter, as a QUIC stack or wireguard-go sends. Each datagram is the pattern of
test/helpers/udp-burst.ts (a big-endian u32 sequence number, then (seq*31 + i*7) & 0xff), so its
receiver checks every byte.

    python3 udp-gso-send.py ADDR PORT COUNT SIZE PER SHORTER
"""
import socket
import sys
import time

UDP_SEGMENT = 103  # linux/udp.h


def pattern(seq: int, size: int) -> bytes:
    head = seq.to_bytes(4, 'big')
    return head + bytes(((seq * 31 + i * 7) & 0xff) for i in range(4, size))


def main() -> None:
    addr, port, count, size, per, shorter = sys.argv[1], *map(int, sys.argv[2:7])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
    seq = 0
    while seq < count:
        n = min(per, count - seq)
        sizes = [size] * (n - 1) + [size - shorter]
        s.sendto(b''.join(pattern(seq + i, sizes[i]) for i in range(n)), (addr, port))
        seq += n
        time.sleep(0.002)  # paced: the receiver's socket buffer, not the datapath, would drop a flood


main()
