// SDK tests: pure units (backoff, dedupe LRU) and the client against the in-process fake
// gateway from fake-server.mjs, which speaks protocol v1 over a real socket.
//
// Node 20 needs `--experimental-websocket` for the global WebSocket the client uses:
//   node --experimental-websocket --test clients/js/test/
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { KurirClient, IdLru, backoffCap, backoffDelay, compareCursors, DEFAULT_BACKOFF, CloseCode } from '../kurir.js';
import { startFakeServer, fakeToken } from './fake-server.mjs';

const HAVE_WS = typeof globalThis.WebSocket === 'function';
const NO_WS = 'no global WebSocket: on Node 20 run `node --experimental-websocket --test clients/js/test/`';

// ----- units ----------------------------------------------------------------------------

describe('backoff', () => {
  test('cap doubles from initialMs and saturates at maxMs', () => {
    const o = { initialMs: 500, maxMs: 30_000 };
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffCap(a, o)),
      [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.equal(backoffCap(1e6, o), 30_000, 'huge attempt must not overflow past maxMs');
    assert.equal(backoffCap(-3, o), 500, 'negative attempt counts as 0');
    assert.equal(backoffCap(NaN, o), 500);
  });

  test('defaults are 500 ms .. 30 s', () => {
    assert.equal(DEFAULT_BACKOFF.initialMs, 500);
    assert.equal(DEFAULT_BACKOFF.maxMs, 30_000);
    assert.equal(backoffCap(0), 500);
    assert.equal(backoffCap(20), 30_000);
  });

  test('full jitter: delay spans [0, cap] at the extremes of random()', () => {
    for (const attempt of [0, 1, 3, 6, 10, 50]) {
      const cap = backoffCap(attempt);
      assert.equal(backoffDelay(attempt, DEFAULT_BACKOFF, () => 0), 0);
      const hi = backoffDelay(attempt, DEFAULT_BACKOFF, () => 0.999999999);
      assert.ok(hi <= cap && hi >= cap - 1, `attempt ${attempt}: ${hi} vs cap ${cap}`);
    }
  });

  test('full jitter: Math.random samples stay in bounds and use the whole range', () => {
    const o = { initialMs: 100, maxMs: 1000 };
    for (let attempt = 0; attempt < 12; attempt++) {
      const cap = backoffCap(attempt, o);
      let min = Infinity, max = -Infinity;
      for (let i = 0; i < 2000; i++) {
        const d = backoffDelay(attempt, o);
        assert.ok(Number.isInteger(d) && d >= 0 && d <= cap, `attempt ${attempt}: ${d} not in [0, ${cap}]`);
        min = Math.min(min, d); max = Math.max(max, d);
      }
      // Full jitter, not "cap ± 10 %": both ends of the interval get used.
      assert.ok(min < cap * 0.05, `attempt ${attempt}: min ${min} too high`);
      assert.ok(max > cap * 0.95, `attempt ${attempt}: max ${max} too low`);
    }
  });
});

describe('IdLru', () => {
  test('seen() reports duplicates', () => {
    const l = new IdLru(3);
    assert.equal(l.seen('a'), false);
    assert.equal(l.seen('a'), true);
    assert.equal(l.size, 1);
  });

  test('evicts the least recently used past capacity', () => {
    const l = new IdLru(3);
    for (const id of ['a', 'b', 'c']) l.seen(id);
    l.seen('a'); // touch: now b is the oldest
    l.seen('d');
    assert.equal(l.size, 3);
    assert.deepEqual([...l.keys()], ['c', 'a', 'd']);
    assert.equal(l.has('b'), false);
  });

  test('stays bounded under many ids', () => {
    const l = new IdLru(1000);
    for (let i = 0; i < 10_000; i++) l.seen(`id-${i}`);
    assert.equal(l.size, 1000);
    assert.ok(l.has('id-9999'));
    assert.ok(!l.has('id-8999'));
    assert.ok(l.has('id-9000'));
  });

  test('rejects a zero capacity', () => {
    assert.throws(() => new IdLru(0), RangeError);
  });
});

describe('compareCursors', () => {
  const sign = (a, b) => Math.sign(compareCursors(a, b));
  test('orders <ms>-<seq> numerically, not as strings', () => {
    assert.equal(sign('999-0', '1000-0'), -1, 'more digits is larger');
    assert.equal(sign('1000-10', '1000-9'), 1, 'seq compared as a number');
    assert.equal(sign('1000-9', '999-12'), 1, 'ms decides before seq');
    assert.equal(sign('1700000000000-3', '1700000000000-3'), 0);
    assert.equal(sign('0001-0', '1-0'), 0, 'leading zeros do not count');
  });

  test('is exact at u64 size (no float rounding)', () => {
    assert.equal(sign('18446744073709551615-0', '18446744073709551614-0'), 1);
    assert.equal(sign('9007199254740993-0', '9007199254740992-0'), 1, 'beyond 2^53');
    assert.equal(sign('5-18446744073709551615', '5-18446744073709551614'), 1);
  });

  test('sorts an array and totally orders odd strings', () => {
    const sorted = ['10-1', '9-100', '10-0', '2-5', '10-10'].sort(compareCursors);
    assert.deepEqual(sorted, ['2-5', '9-100', '10-0', '10-1', '10-10']);
    assert.equal(sign('5', '5-0'), -1, 'a missing part sorts first');
    assert.equal(sign('c1', 'c2'), -1, 'non-numeric parts fall back to string order');
  });
});

describe('KurirClient options', () => {
  test('requires url and a token source', () => {
    const WebSocket = function () {};
    assert.throws(() => new KurirClient({ token: 't', WebSocket }), /url/);
    assert.throws(() => new KurirClient({ url: 'ws://x/ws', WebSocket }), /token/);
  });

  test('rejects a non-ws url and has no state before connect', () => {
    const WebSocket = function () {};
    assert.throws(() => new KurirClient({ url: 'ftp://x/ws', token: 't', WebSocket }), /ws/);
    const c = new KurirClient({ url: 'http://x/ws', token: 't', WebSocket });
    assert.equal(c.state, 'idle');
    c.close(); // no-op before connect
    assert.equal(c.state, 'idle');
  });

  test('on() rejects unknown events and returns an unsubscriber', () => {
    const c = new KurirClient({ url: 'ws://x/ws', token: 't', WebSocket: function () {} });
    assert.throws(() => c.on('nope', () => {}), /unknown event/);
    let n = 0;
    const off = c.on('state', () => n++);
    off();
    c._setState('connecting');
    assert.equal(n, 0);
  });
});

// ----- against the fake gateway --------------------------------------------------------

/** Resolves with the first `event` payload for which `pred` holds. */
function next(client, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for "${event}"`)); }, ms);
    const off = client.on(event, (p) => {
      if (!pred(p)) return;
      clearTimeout(timer); off(); resolve(p);
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let userSeq = 0;
const newUser = () => `u${process.pid}-${++userSeq}`;

describe('KurirClient against a fake gateway', { skip: HAVE_WS ? false : NO_WS }, () => {
  let srv;
  const clients = [];
  before(async () => { srv = await startFakeServer(); });
  after(async () => {
    for (const c of clients) c.close();
    await srv.close();
  });

  /** A client with fast backoff; `user` defaults to a fresh one. */
  function client(opts = {}) {
    const user = opts.user ?? newUser();
    const c = new KurirClient({
      url: srv.wsUrl,
      getToken: async () => fakeToken(user, ['demo', 'news.*']),
      backoff: { initialMs: 20, maxMs: 200, resetAfterMs: 60_000 },
      ...opts,
    });
    c.user = user;
    clients.push(c);
    return c;
  }
  const framesOf = (user, type) => srv.events.filter((e) => e.user === user && e.frame.type === type);

  test('connects, reports states and the welcome frame', async () => {
    const c = client();
    const states = [];
    c.on('state', ({ state }) => states.push(state));
    const welcome = await c.connect();
    assert.equal(welcome.type, 'welcome');
    assert.equal(welcome.user, c.user);
    assert.equal(c.state, 'open');
    assert.deepEqual(states, ['connecting', 'open']);
    assert.equal(await c.connect(), welcome, 'connect() while open returns the welcome');
    c.close();
    assert.equal(c.state, 'closed');
    assert.deepEqual(states, ['connecting', 'open', 'closed']);
  });

  test('token and cursor go in the query string, URL-encoded', async () => {
    const cursor = '1700000000000-0 a&b=c/d+e';
    const c = client({ cursor });
    await c.connect();
    const conn = srv.connects.at(-1);
    assert.equal(conn.user, c.user);
    assert.equal(conn.cursor, cursor, 'server decodes the exact cursor');
    assert.ok(!conn.url.includes('&b=c'), `cursor not encoded: ${conn.url}`);
    assert.match(conn.url, /[?&]token=[^&]+/);
  });

  test('reconnects by itself after 1012 and asks for a fresh token', async () => {
    let tokenCalls = 0;
    const user = newUser();
    const c = client({ user, getToken: async () => { tokenCalls++; return fakeToken(user, ['demo']); } });
    await c.connect();
    const closed = next(c, 'close');
    const reopened = next(c, 'open');
    srv.disconnect(user, CloseCode.SERVICE_RESTART);
    const ev = await closed;
    assert.deepEqual({ code: ev.code, willReconnect: ev.willReconnect }, { code: 1012, willReconnect: true });
    assert.equal(c.state, 'reconnecting');
    await reopened;
    assert.equal(c.state, 'open');
    assert.equal(tokenCalls, 2, 'token provider is called on every connection attempt');
    assert.equal(srv.connects.filter((x) => x.user === user).length, 2);
  });

  test('1012 on an established connection reconnects soon (delay within initialMs)', async () => {
    const c = client({ backoff: { initialMs: 300, maxMs: 30_000, resetAfterMs: 60_000 } });
    await c.connect();
    // Pretend earlier failures pushed the ladder up: a drain close still restarts it.
    c._attempt = 8;
    const reopened = next(c, 'open');
    srv.disconnect(c.user, CloseCode.SERVICE_RESTART);
    await next(c, 'close');
    assert.ok(c.nextRetryMs >= 0 && c.nextRetryMs <= 300, `delay ${c.nextRetryMs} ms`);
    await reopened;
  });

  test('the reconnect delay is known when the state event fires', async () => {
    const c = client({ random: () => 0.5, backoff: { initialMs: 40, maxMs: 1000, resetAfterMs: 60_000 } });
    await c.connect();
    const seen = next(c, 'state', (e) => e.state === 'reconnecting');
    for (const s of srv.sessions) if (s.user === c.user) s.conn.kill();
    await seen;
    assert.equal(c.nextRetryMs, 20, 'half of the 40 ms cap with random() = 0.5');
    await next(c, 'open');
  });

  test('1013 (slow consumer) reconnects too', async () => {
    const c = client();
    await c.connect();
    const reopened = next(c, 'open');
    srv.disconnect(c.user, CloseCode.TRY_AGAIN_LATER);
    assert.equal((await next(c, 'close')).willReconnect, true);
    await reopened;
  });

  test('an abnormal drop (1006) reconnects with backoff', async () => {
    const c = client();
    await c.connect();
    const reopened = next(c, 'open');
    for (const s of srv.sessions) if (s.user === c.user) s.conn.kill();
    const ev = await next(c, 'close');
    assert.equal(ev.code, 1006);
    assert.equal(ev.willReconnect, true);
    await reopened;
  });

  for (const code of [CloseCode.DISCONNECTED, CloseCode.POLICY]) {
    test(`stops for good on ${code}`, async () => {
      const c = client();
      await c.connect();
      const closed = next(c, 'close');
      srv.disconnect(c.user, code);
      const ev = await closed;
      assert.equal(ev.code, code);
      assert.equal(ev.willReconnect, false);
      assert.equal(c.state, 'closed');
      await sleep(300); // 15x the initial backoff: nothing may come back
      assert.equal(srv.connects.filter((x) => x.user === c.user).length, 1);
      assert.equal(c.state, 'closed');
    });
  }

  test('1008 "token expired" with a token provider reconnects at once with a fresh token', async () => {
    let tokenCalls = 0;
    const user = newUser();
    const c = client({ user, getToken: async () => { tokenCalls++; return fakeToken(user, ['demo']); } });
    await c.connect();
    c._attempt = 8; // a high ladder must not delay this reconnect
    const closed = next(c, 'close');
    const reopened = next(c, 'open');
    srv.disconnect(user, CloseCode.POLICY, 'token expired');
    const ev = await closed;
    assert.deepEqual({ code: ev.code, willReconnect: ev.willReconnect }, { code: 1008, willReconnect: true });
    assert.ok(c.nextRetryMs <= 20, `delay ${c.nextRetryMs} ms is within initialMs`);
    await reopened;
    assert.equal(tokenCalls, 2, 'a fresh token for the new session');
  });

  test('1008 "token expired" with a fixed token stops', async () => {
    const user = newUser();
    const c = client({ user, getToken: undefined, token: fakeToken(user, ['demo']) });
    await c.connect();
    const closed = next(c, 'close');
    srv.disconnect(user, CloseCode.POLICY, 'token expired');
    assert.equal((await closed).willReconnect, false);
    assert.equal(c.state, 'closed');
  });

  test('close() stops with 1000 and no reconnect; connect() again works', async () => {
    const c = client();
    await c.connect();
    const closed = next(c, 'close');
    c.close();
    assert.deepEqual(await closed, { code: 1000, reason: '', willReconnect: false });
    await sleep(200);
    assert.equal(srv.connects.filter((x) => x.user === c.user).length, 1);
    await c.connect();
    assert.equal(c.state, 'open');
  });

  test('connect() rejects if closed before it opened', async () => {
    const c = client({ getToken: () => new Promise(() => {}) }); // never answers
    const p = c.connect();
    c.close();
    await assert.rejects(p, /closed/);
    assert.equal(c.state, 'closed');
    assert.equal(c._tokenTimer, null, 'close() clears the token timeout');
  });

  test('a token provider that rejects or never answers is a failed attempt: error, backoff, retry', async () => {
    let calls = 0;
    const user = newUser();
    const c = client({
      user,
      tokenTimeoutMs: 100,
      random: () => 0.999999, // delays at the top of each cap: 39 ms, then 79 ms
      backoff: { initialMs: 40, maxMs: 1000, resetAfterMs: 60_000 },
      getToken: () => {
        calls++;
        if (calls === 1) return Promise.reject(new Error('auth service down'));
        if (calls === 2) return new Promise(() => {}); // hangs
        return fakeToken(user, []);
      },
    });
    const errors = [];
    const retries = []; // nextRetryMs right after each failed attempt
    c.on('error', (e) => { errors.push(e); queueMicrotask(() => retries.push(c.nextRetryMs)); });
    const started = Date.now();
    const welcome = await c.connect();
    const took = Date.now() - started;
    assert.equal(welcome.user, user);
    assert.equal(calls, 3);
    assert.deepEqual(errors.map((e) => e.code), ['token', 'token']);
    assert.match(errors[0].message, /auth service down/);
    assert.match(errors[1].message, /did not answer within 100 ms/);
    assert.deepEqual(retries, [39, 79], 'the second failure backs off further than the first');
    assert.ok(took >= 39 + 100 + 79 - 5, `connected after ${took} ms: the hung provider was waited out`);
    assert.equal(c._tokenTimer, null);
    assert.equal(srv.connects.filter((x) => x.user === user).length, 1, 'no socket for the failed attempts');
  });

  test('a token that arrives after its timeout is not used', async () => {
    let calls = 0;
    const user = newUser();
    const c = client({
      user,
      tokenTimeoutMs: 50,
      getToken: async () => { if (++calls === 1) { await sleep(150); return fakeToken('too-late', []); } return fakeToken(user, []); },
    });
    assert.equal((await c.connect()).user, user);
    await sleep(200);
    assert.equal(srv.connects.filter((x) => x.user === 'too-late').length, 0);
    assert.equal(c.state, 'open');
  });

  test('close() while the token is being fetched opens no socket', async () => {
    const user = newUser();
    const c = client({ user, getToken: async () => { await sleep(50); return fakeToken(user, []); } });
    c.connect();
    c.close();
    await sleep(150);
    assert.equal(srv.connects.filter((x) => x.user === user).length, 0);
    assert.equal(c.state, 'closed');
  });

  test('HTTP 401 before the upgrade: error event, retries with a new token', async () => {
    let calls = 0;
    const c = client({ getToken: async () => (++calls < 3 ? 'not-a-token' : fakeToken('late', [])) });
    const errors = [];
    c.on('error', (e) => errors.push(e));
    const welcome = await c.connect();
    assert.equal(welcome.user, 'late');
    assert.equal(calls, 3);
    assert.ok(errors.length >= 2 && errors.every((e) => e.code === 'connect'), JSON.stringify(errors));
  });

  test('a throwing token provider is retried', async () => {
    let calls = 0;
    const c = client({ getToken: async () => { if (++calls === 1) throw new Error('auth service down'); return fakeToken('tp', []); } });
    const err = next(c, 'error');
    await c.connect();
    assert.equal((await err).code, 'token');
    assert.match((await err).message, /auth service down/);
  });

  test('a static token works and is reused', async () => {
    const c = new KurirClient({ url: srv.wsUrl, token: fakeToken('static', []), backoff: { initialMs: 10 } });
    clients.push(c);
    await c.connect();
    srv.disconnect('static', 1012);
    await next(c, 'open');
    assert.equal(srv.connects.filter((x) => x.user === 'static').length, 2);
  });

  test('notification frames are emitted as-is and acked after the handler returns', async () => {
    const c = client();
    let release;
    const gate = new Promise((r) => { release = r; });
    const got = [];
    c.on('notification', async (n) => { got.push(n); await gate; });
    await c.connect();
    const { id } = srv.send({ user: c.user, title: 'Hi', body: 'there', data: { k: 'v' }, ttl: 60 });
    await srv.until(() => got.length === 1, 2000, 'notification');
    const n = got[0];
    assert.deepEqual(
      { id: n.id, title: n.title, body: n.body, data: n.data, topic: n.topic, replayed: n.replayed, cursor: n.cursor },
      { id, title: 'Hi', body: 'there', data: { k: 'v' }, topic: null, replayed: false, cursor: n.cursor },
    );
    assert.match(n.cursor, /^\d+-\d+$/);
    assert.equal(typeof n.created_at, 'number');
    await sleep(100);
    assert.equal(framesOf(c.user, 'ack').length, 0, 'no ack while the async handler runs');
    release();
    await srv.until(() => framesOf(c.user, 'ack').length === 1, 2000, 'ack');
    assert.equal(framesOf(c.user, 'ack')[0].frame.id, id);
    assert.equal(srv.inboxes.get(c.user).length, 0, 'acked notification left the inbox');
  });

  test('live-only notifications (no cursor) are not acked', async () => {
    const c = client();
    const got = next(c, 'notification');
    await c.connect();
    srv.send({ user: c.user, title: 'live', ttl: 0 });
    assert.equal((await got).cursor, null);
    await sleep(100);
    assert.equal(framesOf(c.user, 'ack').length, 0);
  });

  test('a failing handler means no ack, and an error event', async () => {
    const c = client();
    c.on('notification', () => { throw new Error('boom'); });
    const err = next(c, 'error');
    await c.connect();
    const { id } = srv.send({ user: c.user, title: 'x' });
    const e = await err;
    assert.equal(e.code, 'handler');
    assert.equal(e.notification.id, id);
    await sleep(100);
    assert.equal(framesOf(c.user, 'ack').length, 0);
  });

  test('autoAck: false leaves acking to the app', async () => {
    const c = client({ autoAck: false });
    const got = next(c, 'notification');
    await c.connect();
    srv.send({ user: c.user, title: 'manual' });
    const n = await got;
    await sleep(100);
    assert.equal(framesOf(c.user, 'ack').length, 0);
    c.ack(n.id);
    await srv.until(() => framesOf(c.user, 'ack').length === 1, 2000, 'manual ack');
  });

  test('an ack made while disconnected is sent after the next welcome', async () => {
    const c = client({ autoAck: false });
    const got = next(c, 'notification');
    await c.connect();
    srv.send({ user: c.user, title: 'later' });
    const n = await got;
    srv.restart({ downMs: 150 });
    await next(c, 'close');
    c.ack(n.id);
    await next(c, 'open');
    await srv.until(() => framesOf(c.user, 'ack').length === 1, 2000, 'queued ack');
    const ack = framesOf(c.user, 'ack')[0];
    assert.equal(ack.frame.id, n.id);
    assert.equal(ack.conn, [...srv.sessions].find((s) => s.user === c.user).id, 'sent on the new connection');
  });

  test('resume cursor: the highest handled one, compared as numbers, not the last seen', async () => {
    const c = client({ autoAck: false });
    const got = [];
    c.on('notification', (n) => got.push(n.cursor));
    await c.connect();
    assert.equal(c.cursor, null);
    // Published out of order: the last one seen is the lowest, and the highest is the
    // lowest as a string.
    const frame = (cursor) => ({ type: 'notification', id: `oo-${c.user}-${cursor}`, title: 't', body: '', data: {}, topic: null, created_at: Date.now(), replayed: false, cursor });
    for (const cur of ['1000-10', '1000-9', '999-12']) srv.deliver(c.user, frame(cur));
    await srv.until(() => got.length === 3, 2000, 'three notifications');
    assert.deepEqual(got, ['1000-10', '1000-9', '999-12']);
    assert.equal(c.cursor, '1000-10');
    const opened = next(c, 'open');
    srv.disconnect(c.user, 1012);
    await opened;
    assert.equal(srv.connects.filter((x) => x.user === c.user).at(-1).cursor, '1000-10');
  });

  test('resume cursor: an out-of-order send handled before an earlier one', async () => {
    const c = client({ autoAck: false });
    const got = [];
    c.on('notification', (n) => got.push(n.title));
    await c.connect();
    const a = srv.send({ user: c.user, title: 'a', live: false });
    const b = srv.send({ user: c.user, title: 'b', live: false });
    assert.ok(compareCursors(a.cursor, b.cursor) < 0, 'a was appended first');
    srv.deliver(c.user, b.frame);
    srv.deliver(c.user, a.frame);
    await srv.until(() => got.length === 2, 2000, 'both');
    assert.deepEqual(got, ['b', 'a']);
    assert.equal(c.cursor, b.cursor, 'not a, the one seen last');
  });

  test('resume cursor: a failed handler holds it back, and that notification comes back on reconnect', async () => {
    const c = client();
    let fail = true;
    const got = [];
    c.on('notification', (n) => {
      got.push(n.title);
      if (n.title === 'two' && fail) throw new Error('not now');
    });
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    await c.connect();
    const one = srv.send({ user: c.user, title: 'one' });
    const two = srv.send({ user: c.user, title: 'two' });
    const three = srv.send({ user: c.user, title: 'three' });
    await srv.until(() => framesOf(c.user, 'ack').length === 2, 2000, 'acks of one and three');
    assert.deepEqual(got, ['one', 'two', 'three']);
    assert.deepEqual(errors, ['handler']);
    assert.equal(c.cursor, one.cursor, 'never past the failed one, though three was handled');

    fail = false;
    const opened = next(c, 'open');
    srv.disconnect(c.user, 1012);
    await opened;
    assert.equal(srv.connects.filter((x) => x.user === c.user).at(-1).cursor, one.cursor);
    await srv.until(() => framesOf(c.user, 'ack').some((e) => e.frame.id === two.id), 2000, 'ack of two');
    assert.deepEqual(got, ['one', 'two', 'three', 'two'], 'only the failed one is emitted again');
    assert.equal(c.cursor, three.cursor);
    assert.equal(srv.inboxes.get(c.user).length, 0);
  });

  test('resume cursor: a late, lower notification holds it back while running, and after failing', async () => {
    const c = client({ autoAck: false });
    let release;
    const gate = new Promise((r) => { release = r; });
    let lateRuns = 0;
    const got = [];
    c.on('notification', async (n) => {
      got.push(n.title);
      if (n.title === 'late' && ++lateRuns === 1) { await gate; throw new Error('failed late'); }
    });
    await c.connect();
    const zero = srv.send({ user: c.user, title: 'zero' });
    await srv.until(() => c.cursor === zero.cursor, 2000, 'zero handled');
    const late = srv.send({ user: c.user, title: 'late', live: false });
    const after = srv.send({ user: c.user, title: 'after', live: false });
    srv.deliver(c.user, after.frame);
    await srv.until(() => c.cursor === after.cursor, 2000, 'after handled');
    srv.deliver(c.user, late.frame); // below the cursor, and its handler is still running
    await srv.until(() => got.length === 3, 2000, 'late emitted');
    assert.equal(c.cursor, zero.cursor, 'back below the running one');
    release();
    await sleep(50);
    assert.equal(c.cursor, zero.cursor, 'and it stays there when it failed');

    const opened = next(c, 'open');
    srv.disconnect(c.user, 1012);
    await opened;
    assert.equal(srv.connects.filter((x) => x.user === c.user).at(-1).cursor, zero.cursor);
    // The gateway replays late and after (both unacked); after was handled: not again.
    await srv.until(() => c.cursor === after.cursor, 2000, 'late handled on the new connection');
    assert.deepEqual(got, ['zero', 'after', 'late', 'late']);
  });

  test('resumes from the last cursor on reconnect', async () => {
    const c = client({ autoAck: false });
    const got = [];
    c.on('notification', (n) => got.push(n));
    await c.connect();
    srv.send({ user: c.user, title: 'one' });
    srv.send({ user: c.user, title: 'two' });
    await srv.until(() => got.length === 2, 2000, 'two notifications');
    const last = got[1].cursor;
    assert.equal(c.cursor, last);
    srv.disconnect(c.user, 1012);
    await next(c, 'open');
    const conns = srv.connects.filter((x) => x.user === c.user);
    assert.equal(conns[0].cursor, null, 'first connect has no cursor');
    assert.equal(conns[1].cursor, last, 'reconnect resumes after the last seen cursor');
    // Nothing after the cursor, so nothing was replayed even though nothing was acked.
    await sleep(100);
    assert.equal(got.length, 2);
    srv.send({ user: c.user, title: 'three' });
    await srv.until(() => got.length === 3, 2000, 'third');
  });

  test('a replayed duplicate is emitted once, and re-acked (the first ack was lost)', async () => {
    const c = client();
    const got = [];
    c.on('notification', (n) => got.push(n));
    await c.connect();
    const { id } = srv.send({ user: c.user, title: 'once' });
    await srv.until(() => framesOf(c.user, 'ack').length === 1, 2000, 'first ack');
    // The server replays the same id on the next connection, as it does when an ack
    // never reached it (socket died first).
    const opened = next(c, 'open');
    srv.disconnect(c.user, 1012);
    await opened;
    for (const s of srv.sessions) if (s.user === c.user) s.conn.sendJson({ ...got[0], replayed: true });
    await srv.until(() => framesOf(c.user, 'ack').length === 2, 2000, 're-ack of the duplicate');
    assert.equal(got.length, 1, 'a duplicate id must not be emitted twice');
    const acks = framesOf(c.user, 'ack');
    assert.equal(acks[1].frame.id, id);
    assert.notEqual(acks[1].conn, acks[0].conn, 're-ack goes out on the new connection');
  });

  test('dedupe holds for duplicates within one connection too', async () => {
    const c = client();
    const got = [];
    c.on('notification', (n) => got.push(n));
    await c.connect();
    const frame = { type: 'notification', id: 'dup-1', title: 't', body: '', data: {}, topic: null, created_at: Date.now(), replayed: false, cursor: null };
    for (const s of srv.sessions) if (s.user === c.user) { s.conn.sendJson(frame); s.conn.sendJson(frame); s.conn.sendJson({ ...frame, id: 'dup-2' }); }
    await srv.until(() => got.length === 2, 2000, 'two distinct');
    await sleep(50);
    assert.deepEqual(got.map((n) => n.id), ['dup-1', 'dup-2']);
  });

  test('re-subscribes every topic after a reconnect', async () => {
    const c = client();
    await c.connect();
    const sub = next(c, 'subscribed');
    c.subscribe('demo');
    assert.equal((await sub).topic, 'demo');
    c.subscribe('news.eu');
    await next(c, 'subscribed', (f) => f.topic === 'news.eu');
    c.unsubscribe('news.eu');
    await next(c, 'unsubscribed');
    assert.deepEqual(c.topics, ['demo']);

    const resub = next(c, 'subscribed', (f) => f.topic === 'demo');
    srv.disconnect(c.user, 1012);
    await resub;
    const conns = [...new Set(framesOf(c.user, 'subscribe').map((e) => e.conn))];
    assert.equal(conns.length, 2, 'subscribe frames on both connections');
    const second = framesOf(c.user, 'subscribe').filter((e) => e.conn === conns[1]).map((e) => e.frame.topic);
    assert.deepEqual(second, ['demo'], 'only current topics are re-sent');

    const got = next(c, 'notification');
    srv.publish({ topic: 'demo', title: 'topic msg' });
    const n = await got;
    assert.equal(n.topic, 'demo');
    await sleep(50);
    assert.equal(framesOf(c.user, 'ack').length, 0, 'topic fan-out is not acked');
  });

  test('topics given up front are subscribed on connect', async () => {
    const c = client({ topics: ['demo'] });
    const sub = next(c, 'subscribed');
    await c.connect();
    assert.equal((await sub).topic, 'demo');
  });

  test('server error frames surface as error events', async () => {
    const c = client();
    await c.connect();
    const err = next(c, 'error');
    c.subscribe('secret');
    const e = await err;
    assert.equal(e.code, 'forbidden');
    assert.match(e.message, /secret/);
  });

  test('ping() resolves on pong; rejects when not connected', async () => {
    const c = client();
    await assert.rejects(c.ping(), /not connected/);
    await c.connect();
    const rtt = await c.ping();
    assert.ok(typeof rtt === 'number' && rtt >= 0);
    assert.equal(framesOf(c.user, 'ping').length, 1);
  });

  test('dead connection: a server silent after welcome gets a ping, then close 4000 and a reconnect', async () => {
    const mute = await startFakeServer({ onFrame: () => true }); // swallows every frame
    try {
      const c = new KurirClient({
        url: mute.wsUrl, token: fakeToken('mute', []), staleAfterMs: 150, pongTimeoutMs: 150,
        backoff: { initialMs: 10, maxMs: 50 },
      });
      clients.push(c);
      const errors = [];
      c.on('error', (e) => errors.push(e));
      const started = Date.now();
      const closed = next(c, 'close', () => true, 3000);
      await c.connect();
      const reopened = next(c, 'open', () => true, 3000);
      const ev = await closed;
      const took = Date.now() - started;
      assert.deepEqual(ev, { code: 4000, reason: 'no traffic', willReconnect: true });
      assert.ok(took >= 290, `closed after ${took} ms, before 150 ms of silence + 150 ms without pong`);
      assert.equal(mute.events.filter((e) => e.frame.type === 'ping').length, 1, 'one probe, then the close');
      assert.equal(errors.at(-1)?.code, 'stale');
      await mute.until(() => mute.closes.some((x) => x.code === 4000 && x.reason === 'no traffic'), 2000, 'server sees 4000');
      await reopened;
      assert.equal(mute.connects.length, 2);
      assert.notEqual(c._liveTimer, null, 'armed again on the new connection');
      c.close();
      assert.equal(c._liveTimer, null, 'close() clears it');
    } finally {
      await mute.close();
    }
  });

  test('dead connection: a quiet but healthy connection is probed and kept', async () => {
    const c = client({ staleAfterMs: 100, pongTimeoutMs: 50 }); // a probe every ~100 ms
    const closes = [];
    c.on('close', (e) => closes.push(e));
    await c.connect();
    assert.ok((await c.ping()) >= 0, 'probes do not confuse ping()');
    await sleep(550);
    assert.ok(framesOf(c.user, 'ping').length >= 3, `${framesOf(c.user, 'ping').length} pings`);
    assert.ok((await c.ping()) >= 0);
    assert.deepEqual(closes, []);
    assert.equal(c.state, 'open');
    assert.equal(srv.connects.filter((x) => x.user === c.user).length, 1);
  });

  test('dead connection: any incoming frame counts as traffic, so a busy connection is never probed', async () => {
    const c = client({ staleAfterMs: 200 });
    await c.connect();
    for (let i = 0; i < 10; i++) {
      srv.send({ user: c.user, title: `tick-${i}`, ttl: 0 });
      await sleep(50);
    }
    assert.equal(framesOf(c.user, 'ping').length, 0);
  });

  test('dead connection: the silence allowed is 2 × heartbeat_ms + 5000 ms by default', async () => {
    // The fake also pings at the WebSocket level every 100 ms, which the client's runtime
    // answers without telling it: exactly what a browser does.
    const mute = await startFakeServer({ heartbeatMs: 100, onFrame: () => true });
    try {
      const c = new KurirClient({ url: mute.wsUrl, token: fakeToken('hb', []), pongTimeoutMs: 100, backoff: { initialMs: 10 } });
      clients.push(c);
      const closed = next(c, 'close', () => true, 8000);
      const welcome = await c.connect();
      const opened = Date.now();
      assert.equal(welcome.heartbeat_ms, 100);
      await sleep(5200 - 300);
      assert.equal(mute.events.filter((e) => e.frame.type === 'ping').length, 0, 'no probe before 5200 ms');
      assert.equal((await closed).code, 4000);
      const took = Date.now() - opened;
      assert.equal(mute.events.filter((e) => e.frame.type === 'ping').length, 1);
      assert.ok(took >= 5200 + 100 - 20 && took < 5200 + 100 + 700, `closed ${took} ms after welcome`);
      c.close();
    } finally {
      await mute.close();
    }
  });

  test('a pending ping rejects when the connection drops', async () => {
    const srv2 = await startFakeServer({ onFrame: (_s, f) => f.type === 'ping' });
    try {
      const c = new KurirClient({ url: srv2.wsUrl, token: fakeToken('p', []), backoff: { initialMs: 10 } });
      clients.push(c);
      await c.connect();
      const p = c.ping(5000);
      srv2.disconnect('p', 1012);
      await assert.rejects(p, /closed/);
      await assert.rejects(c.ping(20).catch(async (e) => { await next(c, 'open'); throw e; }));
      await assert.rejects(c.ping(50), /no pong within 50 ms/);
    } finally {
      await srv2.close();
    }
  });
});
