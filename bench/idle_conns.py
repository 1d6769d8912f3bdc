#!/usr/bin/env python3
"""Memory per idle HTTP/1.1 keep-alive client connection of a running proxy.

For each N given, opens N connections one after another, each making one
GET PATH before the next opens (so the proxy needs about one upstream
connection: this is the cost of idle *client* connections), holds them
idle, and prints the proxy's RSS delta (VmRSS, before the first connection
and once all N are idle) divided by N. Closes them before the next N.

Usage: idle_conns.py PID HOST:PORT [N...] (default N: 1000 10000)
       idle_conns.py --start 'CMD' HOST:PORT [N...]   (starts CMD, stops it by PID)
"""
import resource
import shlex
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    while len(body) < clen:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head.split(b"\r\n", 1)[0]


def wait_up(host, port, deadline_s=30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {host}:{port} after {deadline_s}s")


def measure(pid, host, port, n, path="/ok"):
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    # One warm-up request so first-use allocations are not counted.
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(req)
    read_response(s)
    s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    socks, failed = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            if b" 200 " not in read_response(s):
                failed += 1
            socks.append(s)
        except (OSError, ConnectionError, ValueError):
            failed += 1
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    held = len(socks)
    per = (after - before) * 1024 / max(held, 1)
    print(f"N={n} held={held} failed={failed} rss_before={before} KiB "
          f"rss_idle={after} KiB per_connection={per:.0f} B", flush=True)
    time.sleep(1.0)


def main():
    args = sys.argv[1:]
    proc = None
    if args and args[0] == "--start":
        proc = subprocess.Popen(shlex.split(args[1]))
        pid, args = proc.pid, args[2:]
    else:
        pid, args = int(args[0]), args[1:]
    host, _, port = args[0].rpartition(":")
    sizes = [int(a) for a in args[1:]] or [1000, 10000]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        wait_up(host, int(port))
        for n in sizes:
            measure(pid, host, int(port), n)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
