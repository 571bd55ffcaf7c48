#!/usr/bin/env python3
"""The "fragment pin" against a running gateway: N connections each send an unfinished
text message (FRAGMENT bytes, FIN unset) and then a ping every second, for SECONDS.
Prints the gateway's RSS (from /proc/PID/status) before, with the fragments in, and at
the end, and how the connections were closed.

    scripts/fragment-pin.py HOST:PORT GATEWAY_PID JWT_SECRET [N] [FRAGMENT] [SECONDS]

Loopback only; bounded in connections and time.
"""
import base64, hashlib, hmac, json, os, select, socket, struct, sys, time


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret, user):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + 600}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def masked(fin, opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def main():
    addr, pid, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    fragment = int(sys.argv[5]) if len(sys.argv) > 5 else 60_000
    seconds = int(sys.argv[6]) if len(sys.argv) > 6 else 20
    host, port = addr.rsplit(":", 1)
    socks = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(
            f"GET /ws?token={token(secret, f'pin-{i}')} HTTP/1.1\r\nHost: {addr}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        s.setblocking(False)
        socks.append(s)
    time.sleep(1)
    idle = rss_kib(pid)
    print(f"{n} idle connections: RSS {idle} KiB")
    body = b" " * fragment
    for s in socks:
        s.setblocking(True)
        s.sendall(masked(False, 0x1, body))
        s.setblocking(False)
    start = time.time()
    closes, alive, peak = {}, set(socks), idle
    ping = masked(True, 0x9, b"")
    while time.time() - start < seconds and alive:
        for s in list(alive):
            try:
                s.send(ping)
            except OSError:
                pass
        end = time.time() + 1
        while time.time() < end and alive:
            ready, _, _ = select.select(list(alive), [], [], max(0, end - time.time()))
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                at = data.find(b"\x88")
                if at >= 0 and len(data) >= at + 4:
                    code = struct.unpack(">H", data[at + 2 : at + 4])[0]
                    closes[code] = closes.get(code, 0) + 1
                    alive.discard(s)
                elif not data:
                    closes["eof"] = closes.get("eof", 0) + 1
                    alive.discard(s)
        rss = rss_kib(pid)
        peak = max(peak, rss)
        print(f"t={time.time() - start:4.1f}s open={len(alive):4d} RSS {rss} KiB (+{rss - idle} KiB)")
    print(f"peak with fragments: +{peak - idle} KiB over idle = {(peak - idle) / n:.1f} KiB per connection")
    print(f"closed: {closes}; still open after {seconds} s: {len(alive)}")
    for s in socks:
        s.close()


main()
