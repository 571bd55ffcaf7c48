// Live tests: the SDK against a real Kurir development node (`kurir`).
//
//   KURIR_TEST_URL=http://127.0.0.1:8080 \
//   KURIR_SEND_CMD='kurir send --user {user} --title {title} --ttl 60' \
//   node --experimental-websocket --test clients/js/test/live.test.mjs
//
// KURIR_TEST_URL   base URL of a gateway in standalone mode (serves /dev/token).
// KURIR_SEND_CMD   shell command sending a *stored* notification (ttl > 0) to one user;
//                  {user}, {title}, {body} are replaced by values made of [A-Za-z0-9._-]
//                  (no quoting needed) and also exported as KURIR_USER/KURIR_TITLE/KURIR_BODY.
//                  Without it only the connection-level tests run.
// KURIR_PUBLISH_CMD  optional: publishes to a topic ({topic}, {title}, {body}). Without it,
//                  derived from a `kurir send` KURIR_SEND_CMD (`--user {user}`
//                  → `--topic {topic}`, `--ttl` dropped); if neither works, the re-subscribe
//                  test checks the subscribe frame and its `subscribed` answer only.
// KURIR_RESTART_CMD  optional: restarts the server. Run once, by the last test (it drops
//                  every connection of the shared server), which then waits until the
//                  server answers again.
// KURIR_REQUIRE_LIVE=1  makes missing settings a failure instead of a skip (CI sets it).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KurirClient, backoffCap } from '../kurir.js';

const BASE = process.env.KURIR_TEST_URL;
const SEND_CMD = process.env.KURIR_SEND_CMD;
const RESTART_CMD = process.env.KURIR_RESTART_CMD;
const REQUIRE = process.env.KURIR_REQUIRE_LIVE === '1';

/** A topic publish command from the built-in client's send command, or null. */
function derivePublish(cmd) {
  if (!cmd || !/\bkurir\S*\s+send\s/.test(cmd)) return null;
  const user = /--user[= ](?:'\{user\}'|"\{user\}"|\{user\})/;
  if (!user.test(cmd)) return null;
  return cmd.replace(user, '--topic {topic}').replace(/\s--(?:ttl|idempotency-key)[= ]\S+/g, '');
}
const PUBLISH_CMD = process.env.KURIR_PUBLISH_CMD || derivePublish(SEND_CMD);

function reason() {
  if (!BASE) return 'KURIR_TEST_URL is not set (base URL of a `kurir` development node, e.g. http://127.0.0.1:8080)';
  if (typeof globalThis.WebSocket !== 'function') return 'no global WebSocket: on Node 20 run with --experimental-websocket';
  return null;
}
const missing = reason();
const sendMissing = 'KURIR_SEND_CMD is not set (e.g. "kurir send --user {user} --title {title} --ttl 60")';

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
  assert.equal(res.status, 200, `/dev/token answered ${res.status}: is the server a kurir development node?`);
  const body = await res.json();
  assert.equal(typeof body.token, 'string');
  return body.token;
}

const runSend = (vars) => runCmd(SEND_CMD, vars);

/** Runs a command template ({user}, {title}, {body}, {topic}) through the shell. */
function runCmd(template, vars = {}, timeoutMs = 30_000) {
  const cmd = template.replace(/\{(user|title|body|topic)\}/g, (_, k) => vars[k] ?? '');
  const env = {
    ...process.env, KURIR_USER: vars.user ?? '', KURIR_TITLE: vars.title ?? '',
    KURIR_BODY: vars.body ?? '', KURIR_TOPIC: vars.topic ?? '',
  };
  delete env.NODE_TEST_CONTEXT; // a node-based command must not think it runs under the test runner
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', cmd], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out); else reject(new Error(`command failed (exit ${code}): ${cmd}\n${out}`));
    });
  });
}

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A WebSocket constructor that records every frame each socket sent and received,
 * `{ socket: n, frame }` with n counting sockets from 0, to see the wire under the client.
 */
function recorder() {
  const log = { sockets: 0, sent: [], received: [] };
  class RecordingWebSocket extends WebSocket {
    constructor(url) {
      super(url);
      const socket = log.sockets++;
      this._n = socket;
      this.addEventListener('message', (e) => {
        try { log.received.push({ socket, frame: JSON.parse(e.data) }); } catch { /* not JSON */ }
      });
    }
    send(data) {
      log.sent.push({ socket: this._n, frame: JSON.parse(data) });
      super.send(data);
    }
  }
  return { log, WebSocket: RecordingWebSocket };
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
  function client(user, { tokenTopics = 'demo', ...opts } = {}) {
    const c = new KurirClient({ url: wsUrl(), getToken: () => devToken(user, tokenTopics), ...opts });
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

  test('after the socket is forced closed, the client reconnects and re-subscribes its topics', async (t) => {
    const user = `live-${rand()}`;
    const topic = `livetest.t${rand()}`;
    const rec = recorder();
    const c = client(user, { tokenTopics: 'demo,livetest.*', topics: [topic], WebSocket: rec.WebSocket, backoff: { initialMs: 100 } });
    const sub1 = next(c, 'subscribed', (f) => f.topic === topic);
    const w1 = await c.connect();
    await sub1;
    const closed = next(c, 'close');
    const reopened = next(c, 'open', () => true, 10_000);
    const sub2 = next(c, 'subscribed', (f) => f.topic === topic, 10_000);
    c._ws.close(); // the underlying socket, behind the client's back
    const ev = await closed;
    assert.equal(ev.willReconnect, true, `close ${ev.code} must reconnect`);
    const w2 = await reopened;
    await sub2;
    assert.notEqual(w2.connection_id, w1.connection_id, 'a new connection');
    const subs = (n) => rec.log.sent.filter((x) => x.socket === n && x.frame.type === 'subscribe').map((x) => x.frame.topic);
    assert.deepEqual(subs(0), [topic]);
    assert.deepEqual(subs(1), [topic], 'subscribe re-sent on the new socket');
    assert.ok(rec.log.received.some((x) => x.socket === 1 && x.frame.type === 'subscribed' && x.frame.topic === topic));

    if (!PUBLISH_CMD) {
      t.diagnostic('no topic publish command (KURIR_PUBLISH_CMD): publish after reconnect not checked');
      return;
    }
    const title = `topic-${rand()}`;
    const got = next(c, 'notification', (n) => n.title === title, 10_000);
    await runCmd(PUBLISH_CMD, { topic, title, body: 'after-reconnect' });
    const n = await got;
    assert.equal(n.topic, topic);
    assert.equal(n.cursor ?? null, null, 'topic publishes are live only');
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

    test('replayed on reconnect while its handler still runs: reaches the handler once, acked after', async () => {
      const user = `live-${rand()}`;
      const title = `dedupe-${rand()}`;
      const rec = recorder();
      const c = client(user, { WebSocket: rec.WebSocket, backoff: { initialMs: 100 } });
      let release;
      const gate = new Promise((r) => { release = r; });
      let calls = 0;
      c.on('notification', async (n) => { if (n.title === title) { calls++; await gate; } });
      await c.connect();
      const got = next(c, 'notification', (n) => n.title === title, 10_000);
      await runSend({ user, title });
      const n = await got;
      assert.equal(c.cursor, null, 'the resume cursor stays below a notification still being handled');

      const reopened = next(c, 'open', () => true, 10_000);
      c._ws.close();
      await reopened;
      // Not acked and behind the cursor: the gateway replays it on the new connection.
      await until(() => rec.log.received.some((x) => x.socket === 1 && x.frame.id === n.id && x.frame.replayed), 10_000, 'the replay');
      await sleep(100);
      assert.equal(calls, 1, 'the replayed copy is not emitted while the first is being handled');
      assert.equal(rec.log.sent.filter((x) => x.frame.type === 'ack').length, 0, 'no ack before the handler returned');

      release();
      await until(() => rec.log.sent.some((x) => x.socket === 1 && x.frame.type === 'ack' && x.frame.id === n.id), 5000, 'the ack');
      assert.equal(calls, 1);
      assert.equal(c.cursor, n.cursor);
      await sleep(300); // let the ack land
      c.close();

      const fresh = client(user);
      const seen = [];
      fresh.on('notification', (x) => seen.push(x.id));
      await fresh.connect();
      await sleep(500);
      assert.ok(!seen.includes(n.id), 'acked after the handler returned: not replayed again');
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

  // Last: it restarts the server every test shares (node runs these in order).
  describe('server restart', { skip: RESTART_CMD ? false : 'KURIR_RESTART_CMD is not set' }, () => {
    test('after the 1012 drain close: first retry within initialMs, the rest within the ladder, open again', async () => {
      const backoff = { initialMs: 400, maxMs: 2000, resetAfterMs: 60_000 };
      const user = `live-${rand()}`;
      const c = client(user, { backoff });
      await c.connect();
      c._attempt = 6; // as after earlier failures: a drain close still restarts the ladder
      const delays = []; // { attempt, ms } per scheduled retry
      const schedule = c._scheduleReconnect.bind(c);
      c._scheduleReconnect = () => {
        const attempt = c._attempt;
        schedule();
        delays.push({ attempt, ms: c.nextRetryMs });
      };
      const closed = next(c, 'close', () => true, 30_000);
      const restarting = runCmd(RESTART_CMD, { user }, 60_000);
      const ev = await closed;
      assert.deepEqual({ code: ev.code, willReconnect: ev.willReconnect }, { code: 1012, willReconnect: true });
      assert.equal(delays[0].attempt, 0, 'the ladder restarted');
      assert.ok(delays[0].ms >= 0 && delays[0].ms <= backoff.initialMs, `first retry after ${delays[0].ms} ms`);
      const reopened = next(c, 'open', () => true, 60_000);
      await restarting;
      const back = Date.now();
      await reopened;
      const waited = Date.now() - back;
      for (const d of delays) {
        assert.ok(d.ms >= 0 && d.ms <= backoffCap(d.attempt, backoff), `retry ${d.attempt}: ${d.ms} ms > cap ${backoffCap(d.attempt, backoff)}`);
      }
      assert.ok(waited <= backoff.maxMs + 3000, `open ${waited} ms after the server was back (cap ${backoff.maxMs} ms)`);
      assert.equal(c.state, 'open');
      c.close();
      // Leave the server as found for whatever runs next (the browser test).
      await until(async () => (await fetch(new URL('/healthz', BASE)).catch(() => null))?.ok, 15_000, 'healthz after the restart');
    });
  });
});
