// A backend service notifying a user through Kurir, in Node.js (@grpc/grpc-js).
//
// It mints a client token for the user, asks whether the user is online, follows the
// receipts of what it sends, sends one stored notification and waits until a device
// received (DELIVERED) and acknowledged (ACKED) it.
//
//   npm install
//   KURIR_API_KEY=… KURIR_JWT_SECRET=… node notify.mjs --user alice
//
// Settings: KURIR_ENDPOINT (host:port, default 127.0.0.1:50051), KURIR_API_KEY,
// KURIR_JWT_SECRET (only to mint the client token), KURIR_TLS_CA (PEM CA file: use TLS).
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { currentSecret, mintClientToken } from './token.mjs';

const { values: args } = parseArgs({
  options: { user: { type: 'string', default: 'alice' }, wait: { type: 'string', default: '10' } },
});
const protoRoot = fileURLToPath(new URL('../../proto', import.meta.url));
const definition = protoLoader.loadSync('kurir/v1/dispatcher.proto', {
  includeDirs: [protoRoot], keepCase: true, enums: String, longs: Number, defaults: true,
});
const { kurir } = grpc.loadPackageDefinition(definition);

const endpoint = (process.env.KURIR_ENDPOINT ?? '127.0.0.1:50051').replace(/^http:\/\//, '');
const credentials = process.env.KURIR_TLS_CA
  ? grpc.credentials.createSsl(readFileSync(process.env.KURIR_TLS_CA))
  : grpc.credentials.createInsecure();
const client = new kurir.v1.Dispatcher(endpoint, credentials);
const metadata = new grpc.Metadata();
metadata.set('authorization', `Bearer ${process.env.KURIR_API_KEY}`);
const call = (method, request) => new Promise((resolve, reject) =>
  client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, reply) => (err ? reject(err) : resolve(reply))));
const print = (obj) => console.log(JSON.stringify(obj));

if (currentSecret()) print({ client_token: mintClientToken(currentSecret(), args.user, { topics: ['news'] }) });

const presence = await call('GetPresence', { user_ids: [args.user] });
for (const p of presence.users) print({ presence: p.user_id, online: p.online, connections: p.connections });

// Follow receipts before sending, so none is missed; match them once the id is known.
const receipts = client.WatchReceipts({ user_ids: [args.user] }, metadata);
const early = [];
let sentId;
let onAcked;
const acked = new Promise((resolve) => { onAcked = resolve; });
const check = (r) => {
  if (r.id !== sentId) return;
  print({ receipt: r.status, user: r.user_id, node: r.node });
  if (r.status === 'ACKED') onAcked(true);
};
receipts.on('data', (r) => (sentId ? check(r) : early.push(r)));
receipts.on('error', (e) => { if (e.code !== grpc.status.CANCELLED) console.error(`receipts ended: ${e.message}`); });
await new Promise((r) => setTimeout(r, 200)); // the watch is registered once its headers are back

const reply = await call('Send', {
  user_ids: [args.user],
  notification: {
    title: 'Registration approved',
    body: 'Your competency registration was approved.',
    data: { kind: 'registration', status: 'approved' },
    priority: 'PRIORITY_HIGH',
  },
  ttl_seconds: 3600, // stored: replayed on reconnect until acked or an hour passed
  idempotency_key: randomUUID(), // reuse it when you retry the same send
});
print({ sent: reply.id, online_users: reply.online_users, stored_users: reply.stored_users });
sentId = reply.id;
early.splice(0).forEach(check);

const waitMs = Number(args.wait) * 1000;
const ok = waitMs === 0 || await Promise.race([acked, new Promise((r) => setTimeout(() => r(false), waitMs))]);
receipts.cancel();
client.close();
if (!ok) {
  console.error(`no ACKED receipt within ${args.wait}s (is ${args.user} connected?)`);
  process.exit(1);
}
