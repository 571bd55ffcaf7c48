// A reference client driver with the official socket.io-client, for checking the peer
// by hand (kurir-loadtest speaks Engine.IO v4 / Socket.IO v5 itself, for load):
//   node client.mjs ws://127.0.0.1:PORT USERS SECONDS
// connects users lt-0 … lt-(USERS-1), prints each notification's delay (now − data.t
// µs, or − created_at) and a summary, then exits.
import { io } from "socket.io-client";

const [url = "http://127.0.0.1:3000", usersArg = "1", secondsArg = "10"] = process.argv.slice(2);
const users = Number(usersArg);
const seconds = Number(secondsArg);
let received = 0;
const sockets = [];
for (let i = 0; i < users; i++) {
  const s = io(url.replace(/^ws/, "http"), {
    transports: ["websocket"],
    query: { user: `lt-${i}` },
    reconnection: false,
  });
  s.on("notification", (n) => {
    received++;
    const sent = n.data?.t ? Number(n.data.t) / 1000 : n.created_at;
    console.log(JSON.stringify({ user: `lt-${i}`, seq: n.data?.s, delay_ms: Date.now() - sent }));
  });
  s.on("connect_error", (e) => console.error(`lt-${i}: ${e.message}`));
  sockets.push(s);
}
setTimeout(() => {
  console.log(JSON.stringify({ connected: sockets.filter((s) => s.connected).length, received }));
  sockets.forEach((s) => s.close());
  process.exit(0);
}, seconds * 1000);
