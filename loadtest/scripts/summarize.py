#!/usr/bin/env python3
"""Medians (min–max) of the bench.sh runs, as Markdown rows for BENCHMARKS.md.

    loadtest/scripts/summarize.py [/tmp/kurir-bench]
"""
import json
import statistics
import sys
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kurir-bench")


def runs(name):
    docs = []
    for p in sorted(OUT.glob(f"{name}.*.json")):
        try:
            docs.append(json.loads(p.read_text()))
        except (json.JSONDecodeError, OSError):
            pass
    return docs


def get(doc, path):
    for part in path.split("/"):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def fmt(v, scale=1.0, digits=0):
    return f"{v * scale:,.{digits}f}"


def row(name, label, path, scale=1.0, digits=0):
    vals = [v for v in (get(d, path) for d in runs(name)) if isinstance(v, (int, float))]
    if not vals:
        print(f"| {label} | n/a | | {name} |")
        return
    med = statistics.median(vals)
    print(
        f"| {label} | {fmt(med, scale, digits)} | {fmt(min(vals), scale, digits)}–{fmt(max(vals), scale, digits)} | {name} ×{len(vals)} |"
    )


print("| figure | median | min–max | runs |")
print("|---|---|---|---|")
m = "metrics/"
for key, what in (("one", "1 frame per write"), ("batched", "8 frames per write"), ("paced", "1 frame per write, 5,000 writes/s")):
    row("floor", f"floor, {what}: writer CPU per write (µs)", m + f"{key}_cpu_us_per_write", 1, 2)
    row("floor", f"floor, {what}: frames per writer CPU-second", m + f"{key}_frames_per_cpu_second")
row("connect-1gw", "gateway bytes per idle connection (15,000 on one gateway)", m + "bytes_per_connection")
row("connect-1gw", "connect rate, one gateway (conn/s)", m + "connect_rate")
row("connect-cluster", "connections held by the cluster (6 gateways)", m + "held")
row("connect-cluster", "gateway bytes per connection (6 gateways)", m + "bytes_per_connection")
row("targeted-max", "targeted: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
row("targeted-max", "targeted: Sends per dispatcher CPU-second", m + "sends_per_dispatcher_cpu_second")
row("targeted-max", "targeted: deliveries per server CPU-second (gateways + dispatcher)", m + "deliveries_per_server_cpu_second")
row("targeted-max", "targeted max: achieved sends/s (whole box)", m + "send_rate")
row("targeted-max", "targeted max: lost", m + "lost")
row("targeted-max", "targeted max: duplicates", m + "duplicates")
row("targeted-10k", "at 10,000/s offered: achieved sends/s", m + "send_rate")
row("targeted-10k", "at 10,000/s: delay p50 (ms)", m + "delay/p50_us", 0.001, 3)
row("targeted-10k", "at 10,000/s: delay p99 (ms)", m + "delay/p99_us", 0.001, 3)
row("targeted-10k", "at 10,000/s: delay p99.9 (ms)", m + "delay/p999_us", 0.001, 3)
row("targeted-10k", "at 10,000/s: gRPC response p50 (ms)", m + "response_time/p50_us", 0.001, 3)
row("targeted-10k", "at 10,000/s: gRPC response p99 (ms)", m + "response_time/p99_us", 0.001, 3)
row("targeted-10k", "at 10,000/s: lost", m + "lost")
row("targeted-10k", "at 10,000/s: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
row("targeted-10k", "at 10,000/s: Sends per dispatcher CPU-second", m + "sends_per_dispatcher_cpu_second")
for name, what in (("targeted-max-mt", "max, default threads"), ("targeted-10k-mt", "10,000/s, default threads")):
    row(name, f"targeted {what}: achieved sends/s", m + "send_rate")
    row(name, f"targeted {what}: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
    row(name, f"targeted {what}: Sends per dispatcher CPU-second", m + "sends_per_dispatcher_cpu_second")
    row(name, f"targeted {what}: delay p50 (ms)", m + "delay/p50_us", 0.001, 3)
    row(name, f"targeted {what}: delay p99 (ms)", m + "delay/p99_us", 0.001, 3)
for name in ("targeted-5k", "targeted-2k"):
    row(name, f"{name}: delay p50 (ms)", m + "delay/p50_us", 0.001, 3)
    row(name, f"{name}: delay p99 (ms)", m + "delay/p99_us", 0.001, 3)
    row(name, f"{name}: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
    row(name, f"{name}: Sends per dispatcher CPU-second", m + "sends_per_dispatcher_cpu_second")
row("fanout-topic", "topic: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
row("fanout-topic", "topic: deliveries/s (first call → last receipt)", m + "deliveries_per_second")
row("fanout-topic", "topic: time to last receipt p50 (ms)", m + "time_to_last_receipt/p50_us", 0.001, 1)
row("fanout-topic", "topic: lost", m + "lost")
row("fanout-broadcast", "broadcast: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
row("fanout-broadcast", "broadcast: deliveries/s", m + "deliveries_per_second")
row("fanout-broadcast", "broadcast: time to last receipt p50 (ms)", m + "time_to_last_receipt/p50_us", 0.001, 1)
row("fanout-broadcast", "broadcast: lost", m + "lost")
for name in ("fanout-topic-max", "fanout-broadcast-max"):
    row(name, f"{name}: deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
    row(name, f"{name}: deliveries/s", m + "deliveries_per_second")
    row(name, f"{name}: lost", m + "lost")
for who in ("kurir", "socketio"):
    row("vs-sio-targeted", f"2,000 sends/s, {who}: deliveries per front-end CPU-second", f"{who}/metrics/deliveries_per_gateway_cpu_second")
    row("vs-sio-targeted", f"2,000 sends/s, {who}: deliveries per server CPU-second (all)", f"{who}/metrics/deliveries_per_server_cpu_second")
    row("vs-sio-targeted", f"2,000 sends/s, {who}: delay p50 (ms)", f"{who}/metrics/delay/p50_us", 0.001, 3)
    row("vs-sio-targeted", f"2,000 sends/s, {who}: delay p99 (ms)", f"{who}/metrics/delay/p99_us", 0.001, 3)
    row("vs-sio-targeted", f"2,000 sends/s, {who}: lost", f"{who}/metrics/lost")
    row("vs-sio-targeted-5k", f"5,000 sends/s to 10,000, {who}: deliveries per front-end CPU-second", f"{who}/metrics/deliveries_per_gateway_cpu_second")
    row("vs-sio-targeted-5k", f"5,000 sends/s to 10,000, {who}: deliveries per server CPU-second (all)", f"{who}/metrics/deliveries_per_server_cpu_second")
    row("vs-sio-targeted-5k", f"5,000 sends/s to 10,000, {who}: delay p50 (ms)", f"{who}/metrics/delay/p50_us", 0.001, 3)
    row("vs-sio-targeted-5k", f"5,000 sends/s to 10,000, {who}: delay p99 (ms)", f"{who}/metrics/delay/p99_us", 0.001, 3)
    row("vs-sio-connect", f"10,000 idle, {who}: bytes per connection", f"{who}/metrics/bytes_per_connection")
    row("vs-sio-connect", f"10,000 idle, {who}: connect rate", f"{who}/metrics/connect_rate")
row("vs-sio-targeted", "ratio: deliveries per front-end CPU-second (kurir/peer)", "ratios/deliveries_per_gateway_cpu_second", 1, 2)
row("vs-sio-targeted", "ratio: deliveries per server CPU-second, all (kurir/peer)", "ratios/deliveries_per_server_cpu_second", 1, 2)
row("vs-sio-targeted-5k", "ratio at 5,000/s: deliveries per front-end CPU-second (kurir/peer)", "ratios/deliveries_per_gateway_cpu_second", 1, 2)
row("vs-sio-targeted-5k", "ratio at 5,000/s: deliveries per server CPU-second, all (kurir/peer)", "ratios/deliveries_per_server_cpu_second", 1, 2)
row("vs-sio-connect", "ratio: memory per connection (peer/kurir)", "ratios/bytes_per_connection", 1, 2)
row("churn", "churn: connects/s under 1,000 sends/s", m + "churn_connects_per_second")
row("churn", "churn: connect errors", m + "churn_errors")
row("churn", "churn: background lost", m + "lost")
row("batch", "batch (1,000 ids/Send): deliveries per gateway CPU-second", m + "deliveries_per_gateway_cpu_second")
row("batch", "batch: deliveries/s", m + "deliveries_per_second")
row("batch", "batch: lost", m + "lost")
