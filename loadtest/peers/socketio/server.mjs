// One Socket.IO 4 server of the peer stack (the SITUK paper's Socket.IO server, scaled
// out the standard way): @socket.io/redis-adapter on the local Redis, WebSocket transport
// only, every connection joins the room of its user (`u:<user>`, from the handshake
// query) and may join topic rooms (`t:<topic>`) with a `subscribe` event.
//
// Env: PORT (required), REDIS_URL (default redis://127.0.0.1:6379), KEY (Redis channel
// prefix: unique per run, so runs never hear each other).
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.env.PORT);
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const key = process.env.KEY ?? "socket.io";
if (!port) {
  console.error("server.mjs: set PORT");
  process.exit(64);
}

const pub = createClient({ url });
const sub = pub.duplicate();
pub.on("error", (e) => console.error("redis pub:", e.message));
sub.on("error", (e) => console.error("redis sub:", e.message));
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.end("ok");
  } else {
    res.writeHead(404).end();
  }
});
const io = new Server(http, {
  adapter: createAdapter(pub, sub, { key }),
  transports: ["websocket"],
  serveClient: false,
});

io.on("connection", (socket) => {
  const user = socket.handshake.query.user;
  if (typeof user !== "string" || user === "") {
    socket.disconnect(true);
    return;
  }
  socket.join(`u:${user}`);
  socket.on("subscribe", (topic) => {
    if (typeof topic !== "string") return;
    socket.join(`t:${topic}`);
    socket.emit("subscribed", topic);
  });
  socket.on("ack", () => {});
});

http.listen(port, "127.0.0.1", () => console.error(`socket.io server on 127.0.0.1:${port}`));

const stop = () => {
  io.close();
  Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
