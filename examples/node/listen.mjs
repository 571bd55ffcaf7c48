// A user's device: holds a WebSocket to a gateway, prints each notification and acks it
// (what the browser SDK does for a web page). With `--count N` it exits after N.
//
//   node --experimental-websocket listen.mjs --url ws://127.0.0.1:8080/ws --token <JWT>
//
// Without --token it mints one from KURIR_JWT_SECRET for --user (a backend's job; here
// for the demo).
import { parseArgs } from 'node:util';
import { currentSecret, mintClientToken } from './token.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.KURIR_WS_URL ?? 'ws://127.0.0.1:8080/ws' },
    token: { type: 'string' },
    user: { type: 'string', default: 'alice' },
    count: { type: 'string', default: '0' },
  },
});
const token = args.token ?? mintClientToken(currentSecret(), args.user);
const ws = new WebSocket(`${args.url}?token=${encodeURIComponent(token)}`);
let received = 0;
ws.addEventListener('open', () => console.log(JSON.stringify({ connected: args.url })));
ws.addEventListener('message', (event) => {
  const frame = JSON.parse(event.data);
  if (frame.type !== 'notification') return console.log(JSON.stringify(frame));
  console.log(JSON.stringify({ notification: frame.id, title: frame.title, body: frame.body }));
  // Stored notifications carry a resume cursor and wait in the inbox until acked.
  if (frame.cursor) ws.send(JSON.stringify({ type: 'ack', id: frame.id }));
  received += 1;
  if (Number(args.count) > 0 && received >= Number(args.count)) setTimeout(() => ws.close(1000), 100);
});
ws.addEventListener('close', (event) => {
  console.log(JSON.stringify({ closed: event.code, reason: event.reason }));
  process.exit(event.code === 1000 ? 0 : 1);
});
