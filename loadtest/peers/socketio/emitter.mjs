// The peer's sender: @socket.io/redis-emitter publishing to the servers' Redis channels,
// as a backend service would. Reads one JSON command per stdin line:
//   {"rooms": ["u:lt-1", …] | [] (broadcast), "n": {"title", "body", "data"}}
// and emits a `notification` event whose object has the shape of a Kurir notification
// frame (id, created_at in unix ms set here, like Kurir's dispatcher), so that the same
// load client reads both. Exits on stdin EOF.
//
// Env: REDIS_URL, KEY (must match the servers').
import { createInterface } from "node:readline";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const key = process.env.KEY ?? "socket.io";

const client = createClient({ url });
client.on("error", (e) => console.error("redis:", e.message));
await client.connect();
const emitter = new Emitter(client, { key });

let seq = 0;
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    console.error("emitter.mjs: bad line");
    return;
  }
  const n = {
    type: "notification",
    id: `${process.pid}-${++seq}`,
    title: cmd.n.title,
    body: cmd.n.body,
    data: cmd.n.data,
    topic: null,
    created_at: Date.now(),
    replayed: false,
  };
  const target = cmd.rooms.length ? emitter.to(cmd.rooms) : emitter;
  target.emit("notification", n);
});
lines.on("close", () => {
  client.quit().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
console.error("emitter ready");
