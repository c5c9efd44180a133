#!/usr/bin/env python3
"""Request-response over TCP, as netperf's TCP_RR: one byte each way per transaction, one at a time.

  tcp-rr.py server ADDR PORT          answers every byte with one byte, for one connection
  tcp-rr.py client ADDR PORT SECONDS  prints JSON: transactions, seconds, per-transaction µs (p50, p99)
"""
import json
import socket
import sys
import time


def server(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(1)
        print("listening", flush=True)
        conn, _ = s.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                b = conn.recv(1)
                if not b:
                    return
                conn.sendall(b)


def client(addr, port, seconds):
    s = socket.create_connection((addr, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = time.perf_counter_ns
    times = []
    start = clock()
    end = start + int(seconds * 1e9)
    t = start
    while t < end:
        s.sendall(b"x")
        if not s.recv(1):
            break
        now = clock()
        times.append(now - t)
        t = now
    s.close()
    times.sort()
    n = len(times)
    q = lambda p: times[min(n - 1, int(p * n))] / 1000 if n else float("nan")
    print(json.dumps({"transactions": n, "seconds": (t - start) / 1e9, "p50Us": q(0.5), "p99Us": q(0.99)}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
