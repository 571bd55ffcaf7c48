// fake-server.mjs — a tiny in-process stand-in for a standalone Kurir gateway, so the SDK
// tests and the browser test run before (and without) the Rust server.
//
// It speaks WebSocket protocol v1 from DESIGN.md over a hand-written RFC 6455 server (no
// dependencies) and serves what a standalone gateway serves: `/` (demo.html),
// `/kurir.js`, `/kurir.d.ts`, `/dev/token`, `/ws`, `/healthz`. On top, test hooks:
//   POST /send        {"user","title","body","data","ttl","topic"} → {"id","cursor"}
//   POST /restart     closes every socket with 1012 and refuses upgrades for ?down_ms (default 1500)
//   POST /disconnect  ?user=… closes that user's sockets with 4001
//
// As a program:
//   node fake-server.mjs [--port 8090] [--no-dev-token]       serve until killed
//   node fake-server.mjs send <base-url> <user> <title> [body]  trigger a stored notification
//   node fake-server.mjs restart <base-url>                     simulate a gateway restart
//
// Under `node --test` this file runs a smoke test of itself instead.

import { createServer } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENT_DIR = join(HERE, '..');
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// ----- RFC 6455, server side, text frames only -----------------------------------------

/** One accepted WebSocket: `send(text)`, `close(code, reason)`, `onmessage`, `onclose`. */
export class WsConn {
  constructor(socket) {
    this.socket = socket;
    this.closed = false;
    this.closeSent = false;
    this.onmessage = () => {};
    this.onclose = () => {};
    this._buf = Buffer.alloc(0);
    this._fragments = null;
    socket.setNoDelay(true);
    socket.on('data', (chunk) => this._onData(chunk));
    socket.on('close', () => this._finish(1006, ''));
    socket.on('error', () => this._finish(1006, ''));
  }

  send(text) {
    if (this.closeSent || this.closed) return false;
    this._write(0x1, Buffer.from(text, 'utf8'));
    return true;
  }

  sendJson(obj) { return this.send(JSON.stringify(obj)); }

  ping() { if (!this.closeSent && !this.closed) this._write(0x9, Buffer.alloc(0)); }

  close(code = 1000, reason = '') {
    if (this.closeSent || this.closed) return;
    this.closeSent = true;
    const r = Buffer.from(reason, 'utf8');
    const payload = Buffer.alloc(2 + r.length);
    payload.writeUInt16BE(code, 0);
    r.copy(payload, 2);
    this._write(0x8, payload);
    this._closeCode = code;
    // Give the peer a moment to answer the close, then drop TCP either way.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Drops TCP without a close frame (what a SIGKILLed server looks like). */
  kill() { this.socket.destroy(); }

  _write(opcode, payload) {
    const len = payload.length;
    let header;
    if (len < 126) {
      header = Buffer.from([0x80 | opcode, len]);
    } else if (len < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(len, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(len), 2);
    }
    try { this.socket.write(Buffer.concat([header, payload])); } catch { /* socket gone */ }
  }

  _onData(chunk) {
    this._buf = Buffer.concat([this._buf, chunk]);
    for (;;) {
      if (this._buf.length < 2) return;
      const b0 = this._buf[0], b1 = this._buf[1];
      const fin = (b0 & 0x80) !== 0, opcode = b0 & 0x0f, masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f, off = 2;
      if (len === 126) { if (this._buf.length < 4) return; len = this._buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this._buf.length < 10) return; len = Number(this._buf.readBigUInt64BE(2)); off = 10; }
      const need = off + (masked ? 4 : 0) + len;
      if (this._buf.length < need) return;
      let payload = this._buf.subarray(off + (masked ? 4 : 0), need);
      if (masked) {
        const mask = this._buf.subarray(off, off + 4);
        payload = Buffer.from(payload);
        for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      }
      this._buf = this._buf.subarray(need);
      this._onFrame(fin, opcode, payload);
    }
  }

  _onFrame(fin, opcode, payload) {
    if (opcode === 0x8) { // close: echo it (if we did not start it) and finish
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.subarray(2).toString('utf8');
      if (!this.closeSent) { this.closeSent = true; this._write(0x8, payload.subarray(0, 2)); }
      this._finish(code, reason);
      this.socket.end();
      return;
    }
    if (opcode === 0x9) { this._write(0xa, payload); return; } // ping → pong
    if (opcode === 0xa) return; // pong
    if (opcode === 0x1 || opcode === 0x2) this._fragments = [payload];
    else if (opcode === 0x0 && this._fragments) this._fragments.push(payload);
    if (fin && this._fragments) {
      const data = Buffer.concat(this._fragments).toString('utf8');
      this._fragments = null;
      if (!this.closeSent) this.onmessage(data);
    }
  }

  _finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.onclose(this._closeCode ?? code, reason);
  }
}

/** Completes the opening handshake of an HTTP upgrade request; returns a WsConn. */
export function acceptUpgrade(req, socket) {
  const key = req.headers['sec-websocket-key'];
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\n' +
    'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  return new WsConn(socket);
}

function refuseUpgrade(socket, status, text, body) {
  const b = Buffer.from(JSON.stringify(body));
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${b.length}\r\nConnection: close\r\n\r\n${b}`,
  );
}

// ----- tokens ----------------------------------------------------------------------------

const b64url = (s) => Buffer.from(s).toString('base64url');

/** A JWT-shaped but unsigned token; good enough for a fake that trusts itself. */
export function fakeToken(user, topics = [], ttlSeconds = 3600) {
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  return `${b64url('{"alg":"none","typ":"fake"}')}.${b64url(JSON.stringify({ sub: user, topics, exp }))}.fake`;
}

function parseToken(token) {
  try {
    const [, payload, sig] = String(token).split('.');
    if (sig !== 'fake') return null;
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    if (!claims.sub || !(claims.exp > Date.now() / 1000)) return null;
    return claims;
  } catch {
    return null;
  }
}

function topicAllowed(claims, topic) {
  return (claims.topics ?? []).some((p) => p === topic || (p.endsWith('.*') && topic.startsWith(p.slice(0, -1))));
}

// ----- the Kurir-ish gateway --------------------------------------------------------------

/**
 * Starts a fake gateway on 127.0.0.1.
 * @param {object} [opts]
 * @param {number} [opts.port] 0 = any free port
 * @param {boolean} [opts.devToken] serve /dev/token (standalone mode); default true
 * @param {(conn: FakeSession) => void} [opts.onSession] called after welcome + replay
 * @param {(session: FakeSession, frame: object) => boolean|void} [opts.onFrame]
 *        sees every client frame first; return true to swallow it
 * @param {number} [opts.heartbeatMs] WebSocket-level ping interval
 */
export async function startFakeServer(opts = {}) {
  const { port = 0, devToken = true, heartbeatMs = 25_000 } = opts;
  const sessions = new Set();
  const inboxes = new Map(); // user → [{ seq, frame, expiresAt }]
  const events = []; // everything clients sent, for assertions: { user, conn, frame }
  const connects = []; // { user, cursor, url }
  const closes = []; // { user, conn, code, reason } as the server saw each socket end
  // Cursors look like the real ones (Redis stream ids): `<ms>-<seq>`, increasing in
  // append order, seq counting up within one millisecond.
  let lastMs = 0;
  let msSeq = 0;
  const nextCursor = () => {
    const ms = Math.max(Date.now(), lastMs);
    msSeq = ms === lastMs ? msSeq + 1 : 0;
    lastMs = ms;
    return `${ms}-${msSeq}`;
  };
  let downUntil = 0;
  let connSeq = 0;

  const inbox = (user) => {
    if (!inboxes.has(user)) inboxes.set(user, []);
    const list = inboxes.get(user);
    const now = Date.now();
    const live = list.filter((e) => e.expiresAt > now);
    inboxes.set(user, live);
    return live;
  };

  /** Sends `frame` unless this session already got that id (DESIGN: never twice per connection). */
  const deliver = (s, frame) => {
    if (s.sentIds.has(frame.id)) return;
    s.sentIds.add(frame.id);
    s.conn.sendJson(frame);
  };

  const api = {
    sessions, events, connects, closes, inboxes,
    get url() { return `http://127.0.0.1:${server.address().port}`; },
    get wsUrl() { return `ws://127.0.0.1:${server.address().port}/ws`; },
    /**
     * Targeted send; `ttl > 0` stores it (with a cursor) until acked. `live: false` only
     * stores it, so a test can hand it to the user later and in any order (`deliver`),
     * as when concurrent sends are published out of append order.
     */
    send({ user, title = 'Hello', body = '', data = {}, ttl = 60, id, live = true } = {}) {
      const nid = id ?? newId();
      const frame = { type: 'notification', id: nid, title, body, data, topic: null, created_at: Date.now(), replayed: false };
      if (ttl > 0) {
        frame.cursor = nextCursor();
        inbox(user).push({ cursor: frame.cursor, frame, expiresAt: Date.now() + ttl * 1000 });
      } else {
        frame.cursor = null;
      }
      const online = live ? api.deliver(user, frame) : 0;
      return { id: nid, cursor: frame.cursor, online, frame };
    },
    /** Routes `frame` live to every connection of `user`; returns how many got it. */
    deliver(user, frame) {
      let online = 0;
      for (const s of sessions) if (s.user === user) { deliver(s, frame); online++; }
      return online;
    },
    publish({ topic, title = 'Hello', body = '', data = {} }) {
      const frame = { type: 'notification', id: newId(), title, body, data, topic, created_at: Date.now(), replayed: false, cursor: null };
      for (const s of sessions) if (s.topics.has(topic)) deliver(s, frame);
      return { id: frame.id };
    },
    /** Closes every socket with `code` and refuses upgrades (HTTP 503) for `downMs`. */
    restart({ code = 1012, downMs = 1500 } = {}) {
      downUntil = Date.now() + downMs;
      for (const s of [...sessions]) s.conn.close(code, 'server restart');
    },
    disconnect(user, code = 4001, reason = 'disconnected by backend') {
      let n = 0;
      for (const s of [...sessions]) if (s.user === user) { s.conn.close(code, reason); n++; }
      return n;
    },
    /** Resolves once `pred()` is truthy (polls every 10 ms) or rejects after `ms`. */
    async until(pred, ms = 5000, what = 'condition') {
      const end = Date.now() + ms;
      for (;;) {
        const v = pred();
        if (v) return v;
        if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    close() {
      for (const s of sessions) s.conn.kill();
      clearInterval(pinger);
      return new Promise((r) => { server.close(() => r()); server.closeAllConnections?.(); });
    },
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const json = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    try {
      if (req.method === 'GET' && url.pathname === '/') return await serveFile(res, 'demo.html', 'text/html; charset=utf-8');
      if (req.method === 'GET' && url.pathname === '/kurir.js') return await serveFile(res, 'kurir.js', 'text/javascript; charset=utf-8');
      if (req.method === 'GET' && url.pathname === '/kurir.d.ts') return await serveFile(res, 'kurir.d.ts', 'application/typescript; charset=utf-8');
      if (req.method === 'GET' && url.pathname === '/healthz') return json(200, { ok: true });
      if (req.method === 'GET' && url.pathname === '/dev/token') {
        if (!devToken) return json(404, { error: 'not_found' });
        const user = url.searchParams.get('user');
        if (!user) return json(400, { error: 'bad_request', message: 'user is required' });
        const topics = (url.searchParams.get('topics') ?? '').split(',').filter(Boolean);
        const token = fakeToken(user, topics);
        return json(200, { token, user, expires_at: Math.floor(Date.now() / 1000) + 3600 });
      }
      if (req.method === 'POST' && url.pathname === '/send') {
        const body = JSON.parse((await readBody(req)) || '{}');
        if (body.topic) return json(200, api.publish(body));
        if (!body.user) return json(400, { error: 'user is required' });
        return json(200, api.send(body));
      }
      if (req.method === 'POST' && url.pathname === '/restart') {
        api.restart({ downMs: Number(url.searchParams.get('down_ms') ?? 1500) });
        return json(200, { ok: true });
      }
      if (req.method === 'POST' && url.pathname === '/disconnect') {
        return json(200, { connections_closed: api.disconnect(url.searchParams.get('user')) });
      }
      json(404, { error: 'not_found' });
    } catch (e) {
      json(500, { error: 'internal', message: String(e?.message ?? e) });
    }
  });

  server.on('upgrade', (req, socket) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname !== '/ws') return refuseUpgrade(socket, 404, 'Not Found', { error: 'not_found' });
    if (Date.now() < downUntil) return refuseUpgrade(socket, 503, 'Service Unavailable', { error: 'draining' });
    const claims = parseToken(url.searchParams.get('token'));
    if (!claims) return refuseUpgrade(socket, 401, 'Unauthorized', { error: 'unauthorized', reason: 'invalid' });
    const cursor = url.searchParams.get('cursor');
    connects.push({ user: claims.sub, cursor, url: req.url });

    const conn = acceptUpgrade(req, socket);
    const s = { id: `conn-${++connSeq}`, user: claims.sub, claims, conn, topics: new Set(), sentIds: new Set() };
    sessions.add(s);
    conn.onclose = (code, reason) => {
      sessions.delete(s);
      closes.push({ user: s.user, conn: s.id, code, reason });
    };
    conn.onmessage = (text) => {
      let frame;
      try { frame = JSON.parse(text); } catch { return conn.sendJson({ type: 'error', code: 'bad_frame', message: 'not JSON' }); }
      events.push({ user: s.user, conn: s.id, frame });
      if (opts.onFrame?.(s, frame)) return;
      switch (frame.type) {
        case 'ping': return conn.sendJson({ type: 'pong' });
        case 'ack': {
          const list = inbox(s.user);
          const i = list.findIndex((e) => e.frame.id === frame.id);
          if (i >= 0) list.splice(i, 1);
          return;
        }
        case 'subscribe':
          if (!topicAllowed(s.claims, frame.topic)) {
            return conn.sendJson({ type: 'error', code: 'forbidden', message: `topic ${frame.topic} not allowed` });
          }
          s.topics.add(frame.topic);
          return conn.sendJson({ type: 'subscribed', topic: frame.topic });
        case 'unsubscribe':
          s.topics.delete(frame.topic);
          return conn.sendJson({ type: 'unsubscribed', topic: frame.topic });
        default:
          return conn.sendJson({ type: 'error', code: 'bad_frame', message: `unknown frame type ${frame.type}` });
      }
    };
    conn.sendJson({ type: 'welcome', connection_id: s.id, node: 'fake-1', user: s.user, heartbeat_ms: heartbeatMs });
    // Replay what came after the cursor (everything without one, or for a malformed one:
    // the real gateway refuses those with HTTP 400, the fake is lenient).
    const after = cursorKey(cursor);
    for (const e of inbox(s.user)) {
      if (!after || cursorAfter(cursorKey(e.cursor), after)) deliver(s, { ...e.frame, replayed: true });
    }
    opts.onSession?.(s);
  });

  const pinger = setInterval(() => { for (const s of sessions) s.conn.ping(); }, heartbeatMs);
  pinger.unref();

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return api;
}

/** `<ms>-<seq>` → [BigInt, BigInt], or null for anything else. */
function cursorKey(c) {
  const m = /^(\d+)-(\d+)$/.exec(c ?? '');
  return m ? [BigInt(m[1]), BigInt(m[2])] : null;
}
const cursorAfter = (a, b) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

async function serveFile(res, name, type) {
  const body = await readFile(join(CLIENT_DIR, name));
  res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Time-ordered id shaped like a UUIDv7 (48-bit ms timestamp, then random bits). */
function newId() {
  const b = randomBytes(16);
  b.writeUIntBE(Date.now(), 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ----- entry points ---------------------------------------------------------------------

async function post(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${text}`);
  return text;
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (cmd === 'send') {
    const [base, user, title, body = `sent at ${new Date().toLocaleTimeString()}`] = rest;
    if (!base || !user || !title) throw new Error('usage: fake-server.mjs send <base-url> <user> <title> [body]');
    process.stdout.write(`${await post(`${base}/send`, { user, title, body, ttl: 60 })}\n`);
    return;
  }
  if (cmd === 'restart') {
    if (!rest[0]) throw new Error('usage: fake-server.mjs restart <base-url> [down_ms]');
    await post(`${rest[0]}/restart?down_ms=${rest[1] ?? 1500}`);
    return;
  }
  let port = 8090;
  const i = argv.indexOf('--port');
  if (i >= 0) port = Number(argv[i + 1]);
  const srv = await startFakeServer({ port, devToken: !argv.includes('--no-dev-token') });
  process.stdout.write(`fake kurir listening on ${srv.url}\n`);
  const stop = () => srv.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const isMain = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
// Only a bare run counts: `fake-server.mjs send …` from a test's child process is the CLI.
if (isMain && process.env.NODE_TEST_CONTEXT && process.argv.length <= 2) {
  // `node --test clients/js/test/` runs every file in this folder: make that a smoke test.
  const { test } = await import('node:test');
  const assert = await import('node:assert/strict');
  test('fake server serves the demo page, the SDK and dev tokens', async () => {
    const srv = await startFakeServer();
    try {
      const page = await fetch(`${srv.url}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<html/i);
      const js = await fetch(`${srv.url}/kurir.js`);
      assert.match(js.headers.get('content-type'), /javascript/);
      const tok = await (await fetch(`${srv.url}/dev/token?user=alice&topics=demo`)).json();
      assert.equal(tok.user, 'alice');
      assert.ok(parseToken(tok.token));
    } finally {
      await srv.close();
    }
  });
} else if (isMain) {
  main(process.argv.slice(2)).catch((e) => { process.stderr.write(`${e.message}\n`); process.exit(1); });
}
