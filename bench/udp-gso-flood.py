#!/usr/bin/env python3
"""Runs inside a pod namespace for bench/uso.ts.

    python3 udp-gso-flood.py send ADDR PORT SECONDS SIZE PER  -> sends PER datagrams of SIZE bytes per
        sendto (UDP_SEGMENT = SIZE), as fast as the socket takes them, for SECONDS; prints how many
    python3 udp-gso-flood.py sink PORT                      -> prints "ready", then drains PORT until killed
"""
import socket
import sys
import time

UDP_SEGMENT = 103  # linux/udp.h


def send(addr: str, port: int, seconds: float, size: int, per: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
    message = bytes(size * per)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.sendto(message, (addr, port))
            sent += per
        except OSError:  # ENOBUFS and the like under a flood: try again
            pass
    print(sent, flush=True)


def sink(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(('0.0.0.0', port))
    print('ready', flush=True)
    while True:
        s.recv(65536)


if sys.argv[1] == 'send':
    send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
else:
    sink(int(sys.argv[2]))
