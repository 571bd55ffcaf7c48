// The SSE transport of the SDK against fakes of EventSource and fetch: how client frames
// become HTTP requests, how the stream's frames and its `close` event reach the client,
// and the `auto` fallback from a WebSocket that keeps failing. (The real thing, in
// Chromium with WebSocket blocked, is in browser.mjs.)
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { KurirClient, SseSocket, CloseCode } from '../kurir.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A fake EventSource: records instances; the test pushes data and errors. */
function fakeEventSource() {
  const opened = [];
  class FakeES {
    constructor(url) { this.url = url; this.closed = false; this.onmessage = null; this.onerror = null; opened.push(this); }
    close() { this.closed = true; }
    emit(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    fail() { this.onerror?.({}); }
  }
  return { FakeES, opened };
}

/** A fake fetch: records requests, answers with `reply(path, body)` → [status, json]. */
function fakeFetch(reply = () => [200, {}]) {
  const calls = [];
  const fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const body = JSON.parse(init.body);
    calls.push({ url, path, body, auth: init.headers.authorization });
    const [status, json] = reply(path, body);
    return { ok: status >= 200 && status < 300, status, json: async () => json };
  };
  return { fetch, calls };
}

const WELCOME = { type: 'welcome', connection_id: '00000000000000ab', node: 'n1', user: 'alice', heartbeat_ms: 25000 };

describe('SseSocket', () => {
  test('opens /sse beside /ws with the same query, and posts frames with the token', async () => {
    const { FakeES, opened } = fakeEventSource();
    const { fetch, calls } = fakeFetch();
    const s = new SseSocket('wss://push.example/kurir/ws?token=T&cursor=5-0', { EventSource: FakeES, fetch });
    const es = opened[0];
    const u = new URL(es.url);
    assert.equal(`${u.protocol}//${u.host}${u.pathname}`, 'https://push.example/kurir/sse');
    assert.equal(u.searchParams.get('token'), 'T');
    assert.equal(u.searchParams.get('cursor'), '5-0');
    const got = [];
    s.onmessage = (ev) => got.push(JSON.parse(ev.data));
    assert.throws(() => s.send('{"type":"ack","id":"x"}'), /not open/);
    es.emit(WELCOME);
    assert.equal(s.readyState, 1);
    s.send(JSON.stringify({ type: 'ack', id: 'n1' }));
    s.send(JSON.stringify({ type: 'subscribe', topic: 'news' }));
    s.send(JSON.stringify({ type: 'ping' }));
    await tick(5);
    assert.deepEqual(calls.map((c) => [c.url, c.body, c.auth]), [
      ['https://push.example/kurir/v1/ack', { id: 'n1' }, 'Bearer T'],
      ['https://push.example/kurir/v1/subscribe', { connection_id: '00000000000000ab', topic: 'news' }, 'Bearer T'],
      ['https://push.example/kurir/v1/ping', { connection_id: '00000000000000ab' }, 'Bearer T'],
    ]);
    // The subscribe's answer arrives as the frame a WebSocket would have carried.
    assert.deepEqual(got, [WELCOME, { type: 'subscribed', topic: 'news' }]);
  });

  test('refused requests become error frames; the close event becomes onclose', async () => {
    const { FakeES, opened } = fakeEventSource();
    const { fetch } = fakeFetch((path) => (path.endsWith('/subscribe')
      ? [403, { error: 'forbidden', message: 'token does not allow topic secret' }] : [200, {}]));
    const s = new SseSocket('ws://h/ws?token=T', { EventSource: FakeES, fetch });
    const got = [];
    const closes = [];
    s.onmessage = (ev) => got.push(JSON.parse(ev.data));
    s.onclose = (ev) => closes.push(ev);
    opened[0].emit(WELCOME);
    s.send(JSON.stringify({ type: 'subscribe', topic: 'secret' }));
    await tick(5);
    assert.deepEqual(got.at(-1), { type: 'error', code: 'forbidden', message: 'token does not allow topic secret' });
    opened[0].emit({ type: 'close', code: 4001, reason: 'account suspended', reconnect: false });
    assert.deepEqual(closes, [{ code: 4001, reason: 'account suspended' }]);
    assert.ok(opened[0].closed, 'EventSource closed: it must not reconnect by itself');
    assert.equal(got.filter((f) => f.type === 'close').length, 0, 'close is not a frame for the client');
  });

  test('a broken stream is closed and reported as 1006 (the client reconnects with its cursor)', () => {
    const { FakeES, opened } = fakeEventSource();
    const s = new SseSocket('ws://h/ws?token=T', { EventSource: FakeES, fetch: fakeFetch().fetch });
    const closes = [];
    s.onclose = (ev) => closes.push(ev.code);
    opened[0].emit(WELCOME);
    opened[0].fail();
    opened[0].fail();
    assert.deepEqual(closes, [CloseCode.ABNORMAL]);
    assert.ok(opened[0].closed);
  });
});

describe('transport: auto', () => {
  test('falls back to SSE after WebSocket fails twice before the welcome, with the same API', async () => {
    let wsAttempts = 0;
    class BlockedWS {
      constructor() {
        wsAttempts += 1;
        this.readyState = 0;
        setTimeout(() => { this.onerror?.({}); this.onclose?.({ code: 1006, reason: '' }); }, 1);
      }
      send() { throw new Error('closed'); }
      close() {}
    }
    const { FakeES, opened } = fakeEventSource();
    const { fetch, calls } = fakeFetch();
    const c = new KurirClient({
      url: 'ws://h/ws', token: 'T', WebSocket: BlockedWS, EventSource: FakeES, fetch,
      backoff: { initialMs: 1, maxMs: 2 }, topics: ['news'],
    });
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    const notes = [];
    c.on('notification', (n) => { notes.push(n.id); });
    const welcome = c.connect();
    for (let i = 0; i < 100 && opened.length === 0; i++) await tick(5);
    assert.equal(wsAttempts, 2, 'two WebSocket attempts, then SSE');
    assert.equal(c.transport, 'sse');
    assert.ok(errors.includes('fallback'));
    const es = opened[0];
    es.emit(WELCOME);
    assert.deepEqual(await welcome, WELCOME);
    es.emit({ type: 'notification', id: 'n1', title: 't', body: 'b', data: {}, topic: null, priority: 'normal',
      collapse_key: null, created_at: 1, replayed: false, cursor: '7-0' });
    await tick(5);
    assert.deepEqual(notes, ['n1']);
    assert.equal(new URL(es.url).searchParams.get('topics'), 'news', 'topics in the stream URL');
    assert.deepEqual(calls.map((x) => x.path), ['/v1/ack'], 'no subscribe request: just the auto-ack');
    // The stream breaks: the client reconnects over SSE, resuming after what it handled.
    es.fail();
    for (let i = 0; i < 100 && opened.length < 2; i++) await tick(5);
    assert.equal(new URL(opened[1].url).searchParams.get('cursor'), '7-0');
    assert.equal(wsAttempts, 2, 'stays on SSE');
    c.close();
  });

  test('a WebSocket that opens keeps the client on WebSocket', async () => {
    const { FakeES, opened } = fakeEventSource();
    class GoodWS {
      constructor() {
        this.readyState = 0;
        setTimeout(() => { this.readyState = 1; this.onopen?.({}); this.onmessage?.({ data: JSON.stringify(WELCOME) }); }, 1);
      }
      send() {}
      close() {}
    }
    const c = new KurirClient({ url: 'ws://h/ws', token: 'T', WebSocket: GoodWS, EventSource: FakeES, fetch: fakeFetch().fetch });
    await c.connect();
    assert.equal(c.transport, 'websocket');
    assert.equal(opened.length, 0);
    c.close();
  });

  test('transport option is checked', () => {
    assert.throws(() => new KurirClient({ url: 'ws://h/ws', token: 'T', transport: 'pigeon' }), /transport/);
    assert.throws(() => new KurirClient({ url: 'ws://h/ws', token: 'T', transport: 'sse', EventSource: null, fetch: null }), /EventSource/);
  });
});
