#!/usr/bin/env python3
"""Open WebSocket connections to a Kurir load balancer and report what happened.

  wsprobe.py ws://127.0.0.1:8080/ws --token JWT --count 6 --hold 5 --out result.json

Each connection does the HTTP upgrade, reads the `welcome` frame (which names the
gateway node), then stays open for --hold seconds (answering nothing; the default
gateway idle timeout is far longer) and records a close frame's code if the
server closes first (1012 = draining). Standard library only, bounded in time.
Writes a JSON list of {"status", "node", "close_code"} to --out (or stdout).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
from urllib.parse import quote, urlparse


def read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = read_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(sock, 8))[0]
    mask = read_exact(sock, 4) if b1 & 0x80 else None
    data = read_exact(sock, n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, data


def probe(url: str, token: str, hold: float, out: dict) -> None:
    u = urlparse(url)
    path = (u.path or "/ws") + (f"?token={quote(token)}" if token else "")
    try:
        sock = socket.create_connection((u.hostname, u.port or 80), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        status = int(head.split(b" ", 2)[1])
        out["status"] = status
        if status != 101:
            return
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:  # frame bytes that arrived with the handshake
            sock = _Prefixed(sock, rest)
        deadline = time.monotonic() + hold
        while True:
            sock.settimeout(max(0.05, min(5.0, deadline - time.monotonic())))
            try:
                op, data = read_frame(sock)
            except socket.timeout:
                if time.monotonic() >= deadline:
                    break
                continue
            if op == 0x1:
                msg = json.loads(data)
                if msg.get("type") == "welcome":
                    out["node"] = msg.get("node")
            elif op == 0x8:
                out["close_code"] = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                break
            elif op == 0x9:  # ping -> pong (masked, as a client must)
                mask = os.urandom(4)
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
                sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(data)) + mask + payload)
            if time.monotonic() >= deadline:
                break
        try:  # polite close (masked close frame, code 1000)
            mask = os.urandom(4)
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(struct.pack("!H", 1000)))
            sock.sendall(struct.pack("!BB", 0x88, 0x82) + mask + payload)
        except OSError:
            pass
        sock.close()
    except (OSError, ConnectionError, ValueError) as e:
        out.setdefault("error", str(e))


class _Prefixed:
    """A socket whose first reads come from bytes already received."""

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        self._s, self._p = sock, prefix

    def recv(self, n: int) -> bytes:
        if self._p:
            out, self._p = self._p[:n], self._p[n:]
            return out
        return self._s.recv(n)

    def __getattr__(self, name):
        return getattr(self._s, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--token", default="")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--hold", type=float, default=0.5)
    ap.add_argument("--stagger", type=float, default=0.05, help="seconds between connection attempts")
    ap.add_argument("--out")
    args = ap.parse_args()
    results = [{"status": None, "node": None, "close_code": None} for _ in range(min(args.count, 1000))]
    threads = []
    for r in results:
        t = threading.Thread(target=probe, args=(args.url, args.token, args.hold, r), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(args.stagger)
    for t in threads:
        t.join(timeout=args.hold + 15)
    text = json.dumps(results)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
