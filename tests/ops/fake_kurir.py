#!/usr/bin/env python3
"""Stand-in for kurir-gateway / kurir-dispatcher, for testing deploy/local-cluster.sh
before (or without) the real binaries. Standard library only.

  fake_kurir.py gateway      # KURIR_LISTEN, KURIR_METRICS_LISTEN, KURIR_NODE_ID, KURIR_DRAIN_SECONDS
  fake_kurir.py dispatcher   # KURIR_GRPC_LISTEN (plain TCP accept), KURIR_METRICS_LISTEN

It honours the HTTP surface of docs/contract-notes.md that the ops kit relies on:
/healthz, /readyz (503 once draining), /metrics with kurir_gateway_connections,
and a minimal WebSocket /ws that sends a `welcome` frame naming the node. On
SIGTERM the gateway turns unready, closes its sockets with 1012 and exits after
KURIR_DRAIN_SECONDS, like the real one. It refuses to start without
KURIR_JWT_SECRET (gateway) or KURIR_API_KEYS (dispatcher), as the real ones do.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import struct
import sys

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def addr(var: str, default: str) -> tuple[str, int]:
    host, _, port = os.environ.get(var, default).rpartition(":")
    return host or "0.0.0.0", int(port)


class Node:
    def __init__(self, role: str) -> None:
        self.role = role
        self.node_id = os.environ.get("KURIR_NODE_ID", f"fake-{os.getpid()}")
        self.ready = True
        self.sockets: set[asyncio.StreamWriter] = set()
        self.opened = 0
        self.stop = asyncio.Event()

    def metrics(self) -> str:
        lines = []
        if self.role == "gateway":
            lines += ["# TYPE kurir_gateway_connections gauge", f"kurir_gateway_connections {len(self.sockets)}",
                      "# TYPE kurir_gateway_connections_opened_total counter",
                      f"kurir_gateway_connections_opened_total {self.opened}",
                      "# TYPE kurir_gateway_ready gauge", f"kurir_gateway_ready {1 if self.ready else 0}"]
        else:
            lines += ["# TYPE kurir_dispatcher_published_total counter", "kurir_dispatcher_published_total 0"]
        return "\n".join(lines) + "\n"

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ") + ["", "", ""])[:3]
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        path = target.split("?", 1)[0]
        if path == "/ws" and self.role == "gateway" and headers.get("upgrade", "").lower() == "websocket":
            await self.websocket(reader, writer, headers)
            return
        if path == "/healthz":
            status, body, ctype = 200, "ok", "text/plain"
        elif path == "/readyz":
            status = 200 if self.ready else 503
            body, ctype = json.dumps({"ready": self.ready, "node": self.node_id}), "application/json"
        elif path == "/metrics":
            status, body, ctype = 200, self.metrics(), "text/plain; version=0.0.4"
        elif path == "/" and self.role == "gateway":
            status, body, ctype = 200, f"<html><body>fake kurir gateway {self.node_id}</body></html>", "text/html"
        else:
            status, body, ctype = 404, "not found", "text/plain"
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        data = body.encode()
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def websocket(self, reader, writer, headers) -> None:
        if not self.ready:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        accept = base64.b64encode(hashlib.sha1((headers.get("sec-websocket-key", "") + WS_GUID).encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.sockets.add(writer)
        self.opened += 1
        welcome = json.dumps({"type": "welcome", "connection_id": f"c{self.opened}", "node": self.node_id,
                              "user": "fake", "heartbeat_ms": 25000}).encode()
        writer.write(frame(0x1, welcome))
        await writer.drain()
        try:
            while True:
                hdr = await reader.readexactly(2)
                n = hdr[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4) if hdr[1] & 0x80 else b""
                await reader.readexactly(n)
                if hdr[0] & 0x0F == 0x8:  # close
                    writer.write(frame(0x8, struct.pack("!H", 1000)))
                    await writer.drain()
                    break
                _ = mask
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.sockets.discard(writer)
            writer.close()

    async def drain(self) -> None:
        """The gateway's SIGTERM sequence, compressed."""
        self.ready = False
        spread = float(os.environ.get("KURIR_DRAIN_SECONDS", "10"))
        socks = list(self.sockets)
        for i, w in enumerate(socks):
            try:
                w.write(frame(0x8, struct.pack("!H", 1012) + b"draining"))
                await w.drain()
                w.close()
            except ConnectionError:
                pass
            if socks:
                await asyncio.sleep(spread / max(len(socks), 1) / 4)
        await asyncio.sleep(min(spread, 1.0))
        self.stop.set()


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def main(role: str) -> int:
    if role == "gateway" and not (os.environ.get("KURIR_JWT_SECRET") or os.environ.get("KURIR_JWT_PUBLIC_KEY_FILE")):
        print("error: KURIR_JWT_SECRET or KURIR_JWT_PUBLIC_KEY_FILE is required", file=sys.stderr)
        return 2
    if role == "dispatcher" and not os.environ.get("KURIR_API_KEYS"):
        print("error: KURIR_API_KEYS is required", file=sys.stderr)
        return 2
    node = Node(role)
    servers = []
    if role == "gateway":
        servers.append(await asyncio.start_server(node.http, *addr("KURIR_LISTEN", "0.0.0.0:8080")))
        servers.append(await asyncio.start_server(node.http, *addr("KURIR_METRICS_LISTEN", "0.0.0.0:9100")))
    else:
        async def grpc(reader, writer):
            writer.close()
        servers.append(await asyncio.start_server(grpc, *addr("KURIR_GRPC_LISTEN", "0.0.0.0:50051")))
        servers.append(await asyncio.start_server(node.http, *addr("KURIR_METRICS_LISTEN", "0.0.0.0:9101")))
    loop = asyncio.get_running_loop()

    def on_term():
        if role == "gateway":
            asyncio.ensure_future(node.drain())
        else:
            node.ready = False
            node.stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    print(f"fake {role} {node.node_id} listening", file=sys.stderr, flush=True)
    await node.stop.wait()
    for s in servers:
        s.close()
    print(f"fake {role} {node.node_id} stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("gateway", "dispatcher"):
        sys.exit("usage: fake_kurir.py gateway|dispatcher")
    sys.exit(asyncio.run(main(sys.argv[1])))
