#!/usr/bin/env python3
"""A backend service that notifies a user through Kurir, in Python (grpcio).

It mints a client token for the user (what your login endpoint would hand the browser),
asks whether the user is online, follows the receipts of what it sends, sends one stored
notification and waits until a device received (DELIVERED) and acknowledged (ACKED) it.

    python3 -m pip install -r requirements.txt
    python3 -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
        ../../proto/kurir/v1/dispatcher.proto
    KURIR_API_KEY=… KURIR_JWT_SECRET=… python3 notify.py --user alice

Settings: KURIR_ENDPOINT (host:port of the dispatcher, default 127.0.0.1:50051),
KURIR_API_KEY (one of the dispatcher's KURIR_API_KEYS), KURIR_JWT_SECRET (the gateways'
HS256 secret, only for minting the client token), KURIR_TLS_CA (a PEM CA file: use TLS).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from kurir.v1 import dispatcher_pb2 as kurir  # noqa: E402
from kurir.v1 import dispatcher_pb2_grpc as kurir_grpc  # noqa: E402


def mint_client_token(secret: str, user: str, topics=(), ttl_seconds: int = 3600) -> str:
    """An HS256 JWT the gateway accepts: `sub` is the user, `topics` what they may
    subscribe to, `exp` when it stops working. Mint it in your backend after the user
    logged in; never ship the secret to a browser."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": user, "exp": int(time.time()) + ttl_seconds}
    if topics:
        claims["topics"] = list(topics)
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def channel(endpoint: str) -> grpc.Channel:
    ca = os.environ.get("KURIR_TLS_CA")
    if ca:
        with open(ca, "rb") as f:
            return grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(f.read()))
    return grpc.insecure_channel(endpoint)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="alice")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for ACKED (0: do not wait)")
    args = parser.parse_args()

    endpoint = os.environ.get("KURIR_ENDPOINT", "127.0.0.1:50051").removeprefix("http://")
    metadata = (("authorization", f"Bearer {os.environ['KURIR_API_KEY']}"),)
    secret = os.environ.get("KURIR_JWT_SECRET", "").split(",")[0]
    if secret:
        print(json.dumps({"client_token": mint_client_token(secret, args.user, ["news"])}), flush=True)

    stub = kurir_grpc.DispatcherStub(channel(endpoint))

    presence = stub.GetPresence(kurir.GetPresenceRequest(user_ids=[args.user]), metadata=metadata, timeout=5)
    for p in presence.users:
        print(json.dumps({"presence": p.user_id, "online": p.online, "connections": p.connections}), flush=True)

    # Follow receipts before sending, so none is missed.
    receipts = stub.WatchReceipts(kurir.WatchReceiptsRequest(user_ids=[args.user]), metadata=metadata)
    seen: "queue.Queue[kurir.Receipt]" = queue.Queue()

    def follow():
        try:
            for receipt in receipts:
                seen.put(receipt)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                print(f"receipts ended: {e.code().name}", file=sys.stderr)

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.2)  # the watch is registered once the stream's headers are back

    reply = stub.Send(
        kurir.SendRequest(
            user_ids=[args.user],
            notification=kurir.Notification(
                title="Registration approved",
                body="Your competency registration was approved.",
                data={"kind": "registration", "status": "approved"},
                priority=kurir.PRIORITY_HIGH,
            ),
            ttl_seconds=3600,  # stored: replayed on reconnect until acked or an hour passed
            idempotency_key=str(uuid.uuid4()),  # reuse it when you retry the same send
        ),
        metadata=metadata,
        timeout=10,
    )
    print(json.dumps({"sent": reply.id, "online_users": reply.online_users, "stored_users": reply.stored_users}), flush=True)

    deadline = time.monotonic() + args.wait
    acked = args.wait == 0
    while not acked and time.monotonic() < deadline:
        try:
            r = seen.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if r.id != reply.id:
            continue
        status = kurir.ReceiptStatus.Name(r.status)
        print(json.dumps({"receipt": status, "user": r.user_id, "node": r.node}), flush=True)
        acked = r.status == kurir.ACKED
    receipts.cancel()
    if not acked:
        print(f"no ACKED receipt within {args.wait}s (is {args.user} connected?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
