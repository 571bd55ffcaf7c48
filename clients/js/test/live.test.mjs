// Live tests: the SDK against a real standalone Kurir server.
//
//   KURIR_TEST_URL=http://127.0.0.1:8080 \
//   KURIR_SEND_CMD='kurir-dispatcher send --user {user} --title {title} --ttl 60' \
//   node --experimental-websocket --test clients/js/test/live.test.mjs
//
// KURIR_TEST_URL   base URL of a gateway in standalone mode (serves /dev/token).
// KURIR_SEND_CMD   shell command sending a *stored* notification (ttl > 0) to one user;
//                  {user}, {title}, {body} are replaced by values made of [A-Za-z0-9._-]
//                  (no quoting needed) and also exported as KURIR_USER/KURIR_TITLE/KURIR_BODY.
//                  Without it only the connection-level tests run.
// KURIR_REQUIRE_LIVE=1  makes missing settings a failure instead of a skip (CI sets it).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KurirClient } from '../kurir.js';

const BASE = process.env.KURIR_TEST_URL;
const SEND_CMD = process.env.KURIR_SEND_CMD;
const REQUIRE = process.env.KURIR_REQUIRE_LIVE === '1';

function reason() {
  if (!BASE) return 'KURIR_TEST_URL is not set (base URL of a standalone Kurir server, e.g. http://127.0.0.1:8080)';
  if (typeof globalThis.WebSocket !== 'function') return 'no global WebSocket: on Node 20 run with --experimental-websocket';
  return null;
}
const missing = reason();
const sendMissing = 'KURIR_SEND_CMD is not set (e.g. "kurir-dispatcher send --user {user} --title {title} --ttl 60")';

if (missing && REQUIRE) {
  test('live server settings', () => assert.fail(`KURIR_REQUIRE_LIVE=1 but ${missing}`));
}
if (!missing && !SEND_CMD && REQUIRE) {
  test('live send command', () => assert.fail(`KURIR_REQUIRE_LIVE=1 but ${sendMissing}`));
}

const rand = () => randomBytes(5).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const wsUrl = () => new URL('/ws', BASE).href;

async function devToken(user, topics = 'demo') {
  const res = await fetch(new URL(`/dev/token?user=${encodeURIComponent(user)}&topics=${encodeURIComponent(topics)}`, BASE));
  assert.equal(res.status, 200, `/dev/token answered ${res.status}: is the server in standalone mode?`);
  const body = await res.json();
  assert.equal(typeof body.token, 'string');
  return body.token;
}

function runSend(vars) {
  const cmd = SEND_CMD.replace(/\{(user|title|body)\}/g, (_, k) => vars[k] ?? '');
  const env = { ...process.env, KURIR_USER: vars.user, KURIR_TITLE: vars.title, KURIR_BODY: vars.body ?? '' };
  delete env.NODE_TEST_CONTEXT; // a node-based command must not think it runs under the test runner
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', cmd], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out); else reject(new Error(`send command failed (exit ${code}): ${cmd}\n${out}`));
    });
  });
}

function next(client, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out after ${ms} ms waiting for "${event}"`)); }, ms);
    const off = client.on(event, (p) => {
      if (!pred(p)) return;
      clearTimeout(timer); off(); resolve(p);
    });
  });
}

describe('live: standalone server', { skip: missing ?? false }, () => {
  const clients = [];
  after(() => { for (const c of clients) c.close(); });
  function client(user, opts = {}) {
    const c = new KurirClient({ url: wsUrl(), getToken: () => devToken(user), ...opts });
    clients.push(c);
    return c;
  }

  test('serves the demo page and the SDK', async () => {
    const page = await fetch(new URL('/', BASE));
    assert.equal(page.status, 200);
    assert.match(await page.text(), /id="toasts"/);
    const js = await fetch(new URL('/kurir.js', BASE));
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /javascript/);
    const ours = await readFile(new URL('../kurir.js', import.meta.url), 'utf8');
    assert.equal(await js.text(), ours, 'gateway serves this repository\'s kurir.js');
    const health = await fetch(new URL('/healthz', BASE));
    assert.equal(health.status, 200);
  });

  test('a bad token gets HTTP 401 with a JSON body before the upgrade', async () => {
    const url = new URL('/ws?token=not.a.jwt', BASE);
    const { status, type, body } = await new Promise((resolve, reject) => {
      const req = request(url, {
        headers: {
          Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        },
      });
      req.on('response', (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body: b }));
      });
      req.on('upgrade', (_res, socket) => { socket.destroy(); reject(new Error('upgraded with a bad token')); });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 401);
    assert.match(type ?? '', /json/);
    assert.doesNotThrow(() => JSON.parse(body), `body is not JSON: ${body}`);
  });

  test('connect: welcome names the user, node and connection', async () => {
    const user = `live-${rand()}`;
    const c = client(user);
    const w = await c.connect();
    assert.equal(w.type, 'welcome');
    assert.equal(w.user, user);
    assert.equal(typeof w.connection_id, 'string');
    assert.equal(typeof w.node, 'string');
    assert.equal(typeof w.heartbeat_ms, 'number');
    assert.equal(c.state, 'open');
  });

  test('subscribe to an allowed topic, refuse a forbidden one, ping', async () => {
    const c = client(`live-${rand()}`);
    await c.connect();
    const sub = next(c, 'subscribed');
    c.subscribe('demo');
    assert.equal((await sub).topic, 'demo');
    const err = next(c, 'error');
    c.subscribe(`secret-${rand()}`);
    assert.equal((await err).code, 'forbidden');
    const unsub = next(c, 'unsubscribed');
    c.unsubscribe('demo');
    assert.equal((await unsub).topic, 'demo');
    const rtt = await c.ping();
    assert.ok(rtt >= 0 && rtt < 5000);
    assert.equal(c.state, 'open', 'a forbidden subscribe does not cost the connection');
  });

  test('a malformed frame gets an error frame and the connection stays up', async () => {
    const ws = new WebSocket(`${wsUrl()}?token=${encodeURIComponent(await devToken(`live-${rand()}`))}`);
    const frames = [];
    await new Promise((resolve, reject) => {
      ws.onmessage = (e) => { frames.push(JSON.parse(e.data)); if (frames.some((f) => f.type === 'welcome')) resolve(); };
      ws.onerror = () => reject(new Error('connect failed'));
    });
    ws.send('{"type":"no_such_frame"}');
    ws.send('not json');
    ws.send('{"type":"ping"}');
    const end = Date.now() + 5000;
    while (!frames.some((f) => f.type === 'pong') && Date.now() < end) await sleep(20);
    ws.close();
    const errors = frames.filter((f) => f.type === 'error');
    assert.ok(errors.length >= 1, `no error frame: ${JSON.stringify(frames)}`);
    assert.ok(errors.every((f) => typeof f.code === 'string' && typeof f.message === 'string'));
    assert.ok(frames.some((f) => f.type === 'pong'), 'still answering after bad frames');
  });

  describe('delivery', { skip: SEND_CMD ? false : sendMissing }, () => {
    test('a stored notification arrives live, is acked, and is not replayed after', async () => {
      const user = `live-${rand()}`;
      const c = client(user);
      await c.connect();
      const title = `live-${rand()}`;
      const got = next(c, 'notification', (n) => n.title === title, 10_000);
      await runSend({ user, title, body: 'live-body' });
      const n = await got;
      assert.equal(typeof n.id, 'string');
      assert.equal(n.replayed, false);
      assert.equal(n.topic ?? null, null);
      assert.equal(typeof n.created_at, 'number');
      assert.ok(n.cursor != null, 'a stored notification carries a cursor (does KURIR_SEND_CMD set a ttl?)');
      await sleep(300); // the ack is written after the handler; let it land
      c.close();

      const fresh = client(user);
      const seen = [];
      fresh.on('notification', (x) => seen.push(x));
      await fresh.connect();
      await sleep(500);
      assert.deepEqual(seen.map((x) => x.id).filter((id) => id === n.id), [], 'acked notification was replayed');
    });

    test('an unacked notification is replayed on the next connection, and the cursor skips it', async () => {
      const user = `live-${rand()}`;
      const first = client(user, { autoAck: false });
      await first.connect();
      const title = `replay-${rand()}`;
      const got = next(first, 'notification', (n) => n.title === title, 10_000);
      await runSend({ user, title });
      const n = await got;
      first.close();

      const second = client(user, { autoAck: false });
      const replay = next(second, 'notification', (x) => x.id === n.id, 10_000);
      await second.connect();
      const r = await replay;
      assert.equal(r.replayed, true);
      assert.equal(r.title, title);
      second.close();

      const resumed = client(user, { cursor: n.cursor });
      const seen = [];
      resumed.on('notification', (x) => seen.push(x));
      await resumed.connect();
      await sleep(500);
      assert.ok(!seen.some((x) => x.id === n.id), 'resuming from its cursor must not replay it');
    });

    test('a notification sent while offline is replayed on connect', async () => {
      const user = `live-${rand()}`;
      const title = `offline-${rand()}`;
      await runSend({ user, title });
      const c = client(user);
      const got = next(c, 'notification', (n) => n.title === title, 10_000);
      await c.connect();
      const n = await got;
      assert.equal(n.replayed, true);
    });
  });
});
