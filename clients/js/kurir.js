// kurir.js — browser (and Node >= 20) client for the Kurir protocol v1, over WebSocket or,
// where a WebSocket cannot open, Server-Sent Events.
//
// One ES module, no dependencies, no build step. A `KurirClient` owns one logical
// session that survives many sockets: it reconnects with full-jitter backoff, asks for a
// fresh token on every attempt (bounded in time), notices a dead connection the browser
// cannot see (silence → ping → close), resumes from the highest handled stored
// notification's `cursor`, re-subscribes its topics, acks stored notifications after the
// application handled them, and emits each notification id at most once (bounded LRU)
// even across reconnects, unless its handler failed. With `transport: 'auto'` (the
// default) it switches to SSE after WebSocket attempts keep failing before the server's
// welcome (a proxy that blocks WebSocket), with the same API and guarantees.
//
// Protocol and close codes: docs/protocol.md in the Kurir repository. API: README.md
// and kurir.d.ts beside this file.

/** Protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** Close codes of the Kurir protocol (RFC 6455 registry plus 4001). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_LARGE: 1009,
  INTERNAL: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  DISCONNECTED: 4001,
  /** Sent by this client when the server went silent (dead-connection check). */
  NO_TRAFFIC: 4000,
});

/** The reason of a 1008 close when the session's token expired. */
const TOKEN_EXPIRED = 'token expired';

/** Codes after which the client stops for good: the server does not want us back
 * (except 1008 "token expired" with a token provider: it reconnects with a fresh token). */
const STOP_CODES = new Set([CloseCode.POLICY, CloseCode.DISCONNECTED]);
/** Codes that mean "come back now, elsewhere": draining gateway, slow consumer. */
const SOON_CODES = new Set([CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER]);

export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30_000, resetAfterMs: 5_000 });
export const DEFAULT_DEDUPE_SIZE = 1000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_PING_TIMEOUT_MS = 10_000;
export const DEFAULT_TOKEN_TIMEOUT_MS = 10_000;
export const DEFAULT_PONG_TIMEOUT_MS = 10_000;
/** Silence allowed beyond two server heartbeats before the client probes with a ping. */
export const STALE_GRACE_MS = 5_000;

const WS_OPEN = 1; // WebSocket.OPEN, spelled out so a minimal constructor without statics works

/**
 * Upper bound of the delay before reconnect attempt `attempt` (0-based):
 * `min(maxMs, initialMs * 2^attempt)`.
 */
export function backoffCap(attempt, { initialMs = DEFAULT_BACKOFF.initialMs, maxMs = DEFAULT_BACKOFF.maxMs } = {}) {
  const n = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  // 2 ** n overflows to Infinity for large n, which Math.min turns back into maxMs.
  return Math.max(0, Math.min(maxMs, initialMs * 2 ** n));
}

/**
 * "Full jitter" backoff (AWS architecture blog, "Exponential Backoff and Jitter"):
 * a uniform random delay in `[0, backoffCap(attempt)]`. Spreading the whole interval,
 * not just a margin around it, is what keeps thousands of clients dropped by one gateway
 * from coming back in lockstep.
 * @param {number} attempt 0-based count of consecutive failed connections
 * @param {{initialMs?: number, maxMs?: number}} [opts]
 * @param {() => number} [random] source in [0, 1), injectable for tests
 */
export function backoffDelay(attempt, opts = DEFAULT_BACKOFF, random = Math.random) {
  return Math.floor(random() * backoffCap(attempt, opts));
}

/**
 * Orders two resume cursors: negative, 0 or positive like a sort comparator. Cursors are
 * `<ms>-<seq>` (two u64 decimals, Redis stream ids), so they are compared part by part as
 * numbers ("10-0" > "9-5", "5-10" > "5-9"), without BigInt or float precision loss. A
 * part that is not all digits falls back to plain string order, so any string sorts.
 */
export function compareCursors(a, b) {
  const x = String(a).split('-');
  const y = String(b).split('-');
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    let p = x[i] ?? '';
    let q = y[i] ?? ''; // a missing part sorts first
    if (DIGITS.test(p) && DIGITS.test(q)) {
      p = p.replace(LEADING_ZEROS, '');
      q = q.replace(LEADING_ZEROS, '');
      if (p.length !== q.length) return p.length < q.length ? -1 : 1;
    }
    if (p !== q) return p < q ? -1 : 1;
  }
  return 0;
}
const DIGITS = /^\d+$/;
const LEADING_ZEROS = /^0+(?=\d)/;

/**
 * Bounded set of recently seen ids with least-recently-used eviction, each with a small
 * value (the client stores its handler state, cursor and whether it was acked). Map keeps
 * insertion order, so the
 * first key is always the least recently touched one.
 */
export class IdLru {
  /** @param {number} capacity */
  constructor(capacity = DEFAULT_DEDUPE_SIZE) {
    if (!(capacity >= 1)) throw new RangeError('IdLru capacity must be >= 1');
    this.capacity = Math.floor(capacity);
    this._map = new Map();
  }
  get size() { return this._map.size; }
  /** True if `id` is present; touches it (moves it to most recent). */
  has(id) {
    if (!this._map.has(id)) return false;
    const v = this._map.get(id);
    this._map.delete(id);
    this._map.set(id, v);
    return true;
  }
  get(id) { return this._map.get(id); }
  /** Inserts or updates `id` as most recent, evicting the oldest entries past capacity. */
  set(id, value = true) {
    this._map.delete(id);
    this._map.set(id, value);
    while (this._map.size > this.capacity) this._map.delete(this._map.keys().next().value);
    return this;
  }
  /** Records `id`; returns true if it was already there (a duplicate). */
  seen(id) {
    if (this.has(id)) return true;
    this.set(id, true);
    return false;
  }
  delete(id) { return this._map.delete(id); }
  clear() { this._map.clear(); }
  keys() { return this._map.keys(); }
  values() { return this._map.values(); }
}

const EVENTS = ['notification', 'open', 'close', 'error', 'state', 'subscribed', 'unsubscribed'];

// Handler state per notification id, kept in the dedupe LRU as { state, cursor, acked }.
const PENDING = 1; // emitted, `notification` listeners still running
const HANDLED = 2; // every listener returned
const FAILED = 3; // a listener threw or rejected: emitted again when the server resends it

/**
 * The resume position: the highest cursor whose notification has been handled (every
 * listener returned), but never at or past the lowest cursor of a stored notification
 * whose listeners are still running or failed, so that one is replayed on the next
 * connection. Cursors can arrive out of order (concurrent sends are appended in one order
 * and published in another), so "highest" is by `compareCursors`, not "last seen".
 */
class ResumePoint {
  /**
   * @param {string|null} start cursor the app resumed from: everything up to it is done
   * @param {IdLru} seen the dedupe LRU, whose handled entries remember their cursor
   */
  constructor(start, seen) {
    this._start = start ?? null;
    this._high = this._start; // highest handled cursor (or start)
    this._open = new Map(); // id → cursor of stored notifications running or failed
    this._seen = seen;
  }

  /** A stored notification was emitted: it holds the position below it until handled. */
  begin(id, cursor) {
    this._open.set(id, cursor);
    if (this._open.size <= this._seen.capacity) return;
    // Bounded like the dedupe set (only a handler failing for 1000s of notifications gets
    // here): forget the highest, the lowest is what holds the position back.
    let top = null;
    for (const [k, c] of this._open) if (top === null || compareCursors(c, this._open.get(top)) > 0) top = k;
    this._open.delete(top);
  }

  /** Its listeners are done; a failed one stays open until handled on a later connection. */
  end(id, cursor, ok) {
    if (!ok) return;
    this._open.delete(id);
    if (this._high === null || compareCursors(cursor, this._high) > 0) this._high = cursor;
  }

  /** The cursor to reconnect with (null: replay the whole inbox). */
  get value() {
    let low = null;
    for (const c of this._open.values()) if (low === null || compareCursors(c, low) < 0) low = c;
    if (low === null || this._high === null || compareCursors(low, this._high) > 0) return this._high;
    // Something running or failed sits below the highest handled cursor (it arrived late,
    // or later ones succeeded after it failed): the highest handled cursor below it.
    // Handled cursors evicted from the LRU can only make this lower, i.e. replay more.
    let best = this._start !== null && compareCursors(this._start, low) < 0 ? this._start : null;
    for (const e of this._seen.values()) {
      if (e.state === HANDLED && e.cursor !== null && compareCursors(e.cursor, low) < 0
        && (best === null || compareCursors(e.cursor, best) > 0)) best = e.cursor;
    }
    return best;
  }
}

/** Turns http(s) into ws(s) and resolves a relative URL against the page. */
function toWsUrl(url) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`KurirClient: url must be ws(s):// or http(s)://, got ${u.protocol}`);
  }
  return u;
}

/** WebSocket attempts that must fail before their welcome before `auto` tries SSE. */
export const DEFAULT_FALLBACK_AFTER = 2;

const SSE_CLOSED = 3;

/**
 * The server-sent-events transport behind the WebSocket interface the client uses
 * (`readyState`, `send`, `close`, `onmessage`, `onerror`, `onclose`): `GET /sse` is the
 * stream (the same JSON frames, one per event), and what a WebSocket client would send
 * goes as `POST /v1/ack`, `/v1/subscribe`, `/v1/unsubscribe`, `/v1/ping` and
 * `/v1/push/subscribe` with the same token. Reconnects are the client's, not EventSource's own: a failed stream is
 * closed and reported like a socket that dropped, so the client comes back with its
 * resume cursor and backoff.
 */
export class SseSocket {
  /**
   * @param {string} wsUrl the WebSocket URL the client would open (`…/ws?token=…&cursor=…`)
   * @param {{EventSource?: any, fetch?: typeof fetch}} [deps]
   */
  constructor(wsUrl, { EventSource = globalThis.EventSource, fetch = globalThis.fetch } = {}) {
    const u = new URL(wsUrl);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    const prefix = u.pathname.replace(/\/ws\/?$/, '');
    u.pathname = `${prefix}/sse`;
    this._base = `${u.origin}${prefix}`;
    this._token = u.searchParams.get('token') ?? '';
    this._fetch = fetch;
    this._connectionId = null;
    this.readyState = 0;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this._es = new EventSource(u.toString());
    this._es.onmessage = (ev) => this._onData(ev.data);
    this._es.onerror = () => {
      if (this.readyState === SSE_CLOSED) return;
      this.onerror?.({});
      this._end(CloseCode.ABNORMAL, '');
    };
  }

  _onData(data) {
    let frame = null;
    try { frame = JSON.parse(data); } catch { /* handed on as is: the client reports it */ }
    if (frame?.type === 'welcome') {
      this._connectionId = frame.connection_id;
      this.readyState = WS_OPEN;
    } else if (frame?.type === 'close') {
      this._end(Number(frame.code) || CloseCode.ABNORMAL, String(frame.reason ?? ''));
      return;
    }
    this.onmessage?.({ data });
  }

  _end(code, reason) {
    if (this.readyState === SSE_CLOSED) return;
    this.readyState = SSE_CLOSED;
    try { this._es.close(); } catch { /* already closed */ }
    this.onclose?.({ code, reason });
  }

  /** A client frame, as the HTTP request that stands for it. */
  send(text) {
    if (this.readyState !== WS_OPEN) throw new Error('SseSocket: not open');
    const frame = JSON.parse(text);
    const conn = this._connectionId;
    switch (frame.type) {
      case 'ack': return void this._post('/v1/ack', { id: frame.id }, null);
      case 'subscribe':
      case 'unsubscribe':
        return void this._post(`/v1/${frame.type}`, { connection_id: conn, topic: frame.topic },
          { type: `${frame.type}d`, topic: frame.topic });
      // The pong comes back on the stream: proof that the stream itself is alive.
      case 'ping': return void this._post('/v1/ping', { connection_id: conn }, null);
      // The user's Web Push subscription: the user's, not the stream's.
      case 'push_subscribe':
        return void this._post('/v1/push/subscribe', { subscription: frame.subscription }, { type: 'push_subscribed' });
      case 'push_unsubscribe':
        return void this._post('/v1/push/unsubscribe', { endpoint: frame.endpoint }, null);
      default: return undefined;
    }
  }

  /** POSTs `body`; on success delivers `onOk` as a server frame, on failure an `error` frame. */
  async _post(path, body, onOk) {
    let answer;
    try {
      const res = await this._fetch(`${this._base}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this._token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (res.ok) {
        answer = onOk;
      } else {
        const err = await res.json().catch(() => ({}));
        answer = { type: 'error', code: err.error ?? `http_${res.status}`, message: err.message ?? `HTTP ${res.status}` };
      }
    } catch (e) {
      answer = { type: 'error', code: 'unavailable', message: `request failed: ${errorMessage(e)}` };
    }
    if (answer && this.readyState === WS_OPEN) this.onmessage?.({ data: JSON.stringify(answer) });
  }

  /** Closes the stream; like a WebSocket, `onclose` follows asynchronously. */
  close(code = CloseCode.NORMAL, reason = '') {
    if (this.readyState === SSE_CLOSED) return;
    setTimeout(() => this._end(code, reason), 0);
    this.readyState = 2;
    try { this._es.close(); } catch { /* already closed */ }
  }
}

/** base64url (no padding) → bytes, for `applicationServerKey`. */
export function base64UrlToBytes(s) {
  const b64 = String(s).replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(String(s).length / 4) * 4, '=');
  const bin = globalThis.atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function errorMessage(e) {
  return e && typeof e === 'object' && 'message' in e ? String(e.message) : String(e);
}

export class KurirClient {
  /** @param {import('./kurir').KurirOptions} options see kurir.d.ts and README.md */
  constructor(options = {}) {
    const { url, token, getToken, autoAck = true, backoff = {}, WebSocket, dedupeSize,
      connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS, tokenTimeoutMs = DEFAULT_TOKEN_TIMEOUT_MS,
      staleAfterMs = null, pongTimeoutMs = DEFAULT_PONG_TIMEOUT_MS, topics = [], cursor = null,
      transport = 'auto', fallbackAfter = DEFAULT_FALLBACK_AFTER, EventSource, fetch } = options;
    if (!url) throw new TypeError('KurirClient: `url` is required (e.g. "wss://push.example.com/ws")');
    if (token == null && typeof getToken !== 'function') {
      throw new TypeError('KurirClient: give `token` (string) or `getToken` (async () => string)');
    }
    this._url = toWsUrl(url);
    this._token = token;
    this._getToken = getToken;
    this.autoAck = autoAck;
    this._backoff = { ...DEFAULT_BACKOFF, ...backoff };
    if (!['auto', 'websocket', 'sse'].includes(transport)) {
      throw new TypeError(`KurirClient: transport must be 'auto', 'websocket' or 'sse', got ${transport}`);
    }
    this._WebSocket = WebSocket ?? globalThis.WebSocket;
    this._sseDeps = { EventSource: EventSource ?? globalThis.EventSource, fetch: fetch ?? globalThis.fetch?.bind(globalThis) };
    const canSse = typeof this._sseDeps.EventSource === 'function' && typeof this._sseDeps.fetch === 'function';
    const canWs = typeof this._WebSocket === 'function';
    if (transport === 'sse' && !canSse) {
      throw new TypeError('KurirClient: transport "sse" needs EventSource and fetch; pass them in the options');
    }
    if (transport !== 'sse' && !canWs && !(transport === 'auto' && canSse)) {
      throw new TypeError('KurirClient: no WebSocket constructor; pass `WebSocket` (Node 20: run with --experimental-websocket or pass the `ws` package)');
    }
    this._transportOption = transport;
    this._canSse = canSse;
    this._fallbackAfter = Math.max(1, Number(fallbackAfter) || DEFAULT_FALLBACK_AFTER);
    /** 'websocket' | 'sse': what the next connection uses. */
    this._transport = transport === 'sse' || !canWs ? 'sse' : 'websocket';
    this._wsFailures = 0; // WebSocket attempts in a row that ended before their welcome
    this._connectTimeoutMs = connectTimeoutMs;
    this._tokenTimeoutMs = tokenTimeoutMs;
    this._staleAfterMs = staleAfterMs;
    this._pongTimeoutMs = pongTimeoutMs;
    this._random = options.random ?? Math.random;

    this._handlers = new Map(EVENTS.map((e) => [e, new Set()]));
    this._seen = new IdLru(dedupeSize ?? DEFAULT_DEDUPE_SIZE);
    /** Acks asked for while no socket was open; written after the next welcome. */
    this._unsentAcks = new Set();
    this._topics = new Set(topics);
    this._resume = new ResumePoint(cursor, this._seen);
    this._pings = []; // FIFO of { resolve, reject, timer, sentAt }, or { probe: true }
    this._push = null; // the Web Push subscription registered after every welcome
    this._swListening = false;

    this._state = 'idle';
    this._ws = null;
    this._gen = 0; // bumps per socket; events from an older socket are ignored
    this._attempt = 0;
    this._openedAt = 0;
    this._retryTimer = null;
    this._connectTimer = null;
    this._tokenTimer = null;
    // Dead-connection check: one timer per client, re-armed from the last arrival time
    // rather than reset on every frame.
    this._liveTimer = null;
    this._lastRx = 0; // Date.now() of the last frame from the server
    this._staleMs = 0; // silence that triggers a probe on this connection (0 = off)
    this._probeSentAt = 0; // when the probe ping went out, 0 while none is pending
    this._welcome = null;
    this._waiters = []; // connect() promises waiting for the next welcome
    this._onOnline = () => this._retryNow();
    /** Delay chosen for the pending reconnect, in ms (diagnostics, e.g. "retrying in 2 s"). */
    this.nextRetryMs = null;
  }

  // ----- public surface -------------------------------------------------------------

  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() { return this._state; }
  /**
   * Resume position, sent as `?cursor=` on reconnect: the highest cursor whose
   * notification has been handled, held below any stored notification whose listeners
   * are still running or failed. null: nothing handled yet (replay the whole inbox).
   */
  get cursor() { return this._resume.value; }
  /** Topics this client is (or will be, once open) subscribed to. */
  get topics() { return [...this._topics]; }
  /** The last `welcome` frame, or null before the first one. */
  get welcome() { return this._welcome; }
  /** 'websocket' | 'sse': the transport of the current (or next) connection. */
  get transport() { return this._transport; }

  /**
   * Starts (or restarts after `close()`) the session. Resolves with the welcome frame
   * once open; rejects if the client is closed (by `close()`, 4001 or 1008) first.
   * Calling it while already connecting/open just waits for (or returns) the welcome.
   */
  connect() {
    const p = this._state === 'open'
      ? Promise.resolve(this._welcome)
      : new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    p.catch(() => {}); // callers that don't await must not get an unhandled rejection
    if (this._state === 'idle' || this._state === 'closed') {
      this._attempt = 0;
      this._wsFailures = 0;
      if (this._transportOption === 'auto' && typeof this._WebSocket === 'function') this._transport = 'websocket';
      this._setState('connecting');
      globalThis.addEventListener?.('online', this._onOnline);
      this._open();
    }
    return p;
  }

  /** Closes the socket with 1000 and stops reconnecting. Idempotent. */
  close(code = CloseCode.NORMAL, reason = '') {
    if (this._state === 'closed' || this._state === 'idle') return;
    this._stop();
    const ws = this._ws;
    if (ws) {
      try { ws.close(code, reason); } catch { try { ws.close(); } catch { /* already gone */ } }
      // The socket's own close event may come later or (on a CONNECTING socket in some
      // runtimes) never; report this connection's end now. _stop() bumped the
      // generation, so whatever this socket still reports is ignored.
      this._ws = null;
      this._emit('close', { code, reason, willReconnect: false });
    }
  }

  /** Subscribes to `topic` now if open, and again after every reconnect. */
  subscribe(topic) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('subscribe: topic must be a non-empty string');
    this._topics.add(topic);
    this._send({ type: 'subscribe', topic });
  }

  /** Unsubscribes and forgets `topic` (it is not re-sent after reconnects). */
  unsubscribe(topic) {
    if (!this._topics.delete(topic)) return;
    this._send({ type: 'unsubscribe', topic });
  }

  /**
   * Background notifications (Web Push), for when no page of the app is open: asks the
   * user's permission, registers the service worker (`kurir-sw.js`), subscribes with
   * the gateway's VAPID public key and registers the subscription with the gateway over
   * this connection (again after every reconnect). Clicking a pushed notification opens
   * or focuses the app and acks it. Resolves with the subscription (`toJSON()` form).
   * @param {{serviceWorker?: string, scope?: string, vapidKey?: string}} [options]
   */
  async enablePush({ serviceWorker = '/kurir-sw.js', scope, vapidKey } = {}) {
    const nav = globalThis.navigator;
    if (!nav?.serviceWorker || typeof globalThis.PushManager !== 'function' || typeof globalThis.Notification !== 'function') {
      throw new Error('enablePush: this browser has no service workers, Push API or notifications');
    }
    const permission = await globalThis.Notification.requestPermission();
    if (permission !== 'granted') throw new Error(`enablePush: notification permission is "${permission}"`);
    await nav.serviceWorker.register(serviceWorker, scope ? { scope } : undefined);
    const registration = await nav.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    if (!subscription) {
      const key = vapidKey ?? (await this._vapidKey());
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: base64UrlToBytes(key),
      });
    }
    this._listenToServiceWorker(nav.serviceWorker);
    this._push = subscription.toJSON();
    this._send({ type: 'push_subscribe', subscription: this._push });
    return this._push;
  }

  /** Stops background notifications: unsubscribes and tells the gateway. */
  async disablePush() {
    const registration = await globalThis.navigator?.serviceWorker?.getRegistration?.();
    const subscription = await registration?.pushManager.getSubscription();
    const endpoint = subscription?.endpoint ?? this._push?.endpoint;
    this._push = null;
    if (subscription) await subscription.unsubscribe();
    if (endpoint) this._send({ type: 'push_unsubscribe', endpoint });
  }

  /** The gateway's VAPID public key (`GET /v1/push/key`). */
  async _vapidKey() {
    const u = new URL(this._url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = `${u.pathname.replace(/\/ws\/?$/, '')}/v1/push/key`;
    u.search = '';
    const res = await this._sseDeps.fetch(u.toString());
    if (!res.ok) throw new Error(`enablePush: the gateway has no push key (HTTP ${res.status})`);
    const { vapid_public_key: key } = await res.json();
    if (typeof key !== 'string' || key === '') throw new Error('enablePush: the gateway sent no VAPID key');
    return key;
  }

  /** A click on a pushed notification arrives here from the service worker: ack it. */
  _listenToServiceWorker(container) {
    if (this._swListening) return;
    this._swListening = true;
    container.addEventListener('message', (ev) => {
      const m = ev.data;
      if (m?.type === 'kurir-ack' && typeof m.id === 'string' && m.id !== '') this.ack(m.id);
    });
  }

  /**
   * Acks a notification id: the gateway removes it from the user's inbox. With
   * `autoAck` (default) you never need this. Without an open socket the ack is queued
   * and written after the next welcome.
   */
  ack(id) {
    if (typeof id !== 'string' || id === '') throw new TypeError('ack: id must be a non-empty string');
    const entry = this._seen.get(id);
    if (entry) entry.acked = true;
    if (!this._send({ type: 'ack', id })) {
      this._unsentAcks.add(id);
      // Bounded like the dedupe set: a replay re-acks anything dropped here.
      if (this._unsentAcks.size > this._seen.capacity) {
        this._unsentAcks.delete(this._unsentAcks.values().next().value);
      }
    }
  }

  /**
   * Application-level round trip; resolves with the round-trip time in ms when the
   * server's `pong` arrives. Not needed for liveness: the client probes a silent
   * connection by itself. Rejects if not open, on timeout, or if the socket closes first.
   */
  ping(timeoutMs = DEFAULT_PING_TIMEOUT_MS) {
    if (this._state !== 'open' || !this._send({ type: 'ping' })) {
      return Promise.reject(new Error('ping: not connected'));
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, sentAt: Date.now(), timer: null };
      entry.timer = setTimeout(() => {
        const i = this._pings.indexOf(entry);
        if (i >= 0) this._pings.splice(i, 1);
        reject(new Error(`ping: no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pings.push(entry);
    });
  }

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    const set = this._handlers.get(event);
    if (!set) throw new TypeError(`on: unknown event "${event}" (known: ${EVENTS.join(', ')})`);
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._handlers.get(event)?.delete(fn);
  }

  // ----- connection lifecycle -------------------------------------------------------

  async _open() {
    const gen = ++this._gen;
    let token;
    try {
      token = this._getToken ? await this._fetchToken() : this._token;
      if (typeof token !== 'string' || token === '') throw new Error('token provider returned no token');
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit('error', { code: 'token', message: `could not get a token: ${errorMessage(e)}`, error: e });
      this._scheduleReconnect();
      return;
    }
    if (gen !== this._gen) return; // close() or a newer attempt happened while we waited

    const url = new URL(this._url);
    url.searchParams.set('token', token);
    const cursor = this.cursor;
    if (cursor != null) url.searchParams.set('cursor', String(cursor));
    else url.searchParams.delete('cursor');
    // Over SSE the topics are part of the stream's URL: subscribed on whichever node the
    // stream lands, with no request that must find it.
    if (this._transport === 'sse' && this._topics.size) url.searchParams.set('topics', [...this._topics].join(','));
    else url.searchParams.delete('topics');

    let ws;
    try {
      ws = this._transport === 'sse'
        ? new SseSocket(url.toString(), this._sseDeps)
        : new this._WebSocket(url.toString());
    } catch (e) {
      this._emit('error', { code: 'connect', message: `could not open ${this._transport === 'sse' ? 'SSE stream' : 'WebSocket'}: ${errorMessage(e)}`, error: e });
      this._noteFailure();
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._openedAt = 0;
    // Welcome, not the socket's open, is the moment we are in: a hung upgrade or a server
    // that accepts but never greets is retried rather than waited on forever.
    this._connectTimer = setTimeout(() => {
      if (gen !== this._gen) return;
      this._emit('error', { code: 'timeout', message: `no welcome within ${this._connectTimeoutMs} ms` });
      this._dropSocket(gen, CloseCode.ABNORMAL, 'connect timeout');
    }, this._connectTimeoutMs);

    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._lastRx = Date.now(); // any frame proves the path works, even one we ignore
      this._onMessage(ev.data);
    };
    ws.onerror = () => {
      if (gen !== this._gen) return;
      // Browsers hide the cause (e.g. HTTP 401 before the upgrade); the close that
      // follows decides what happens next. Not every runtime sends that close (Node 20's
      // WebSocket does not after a refused handshake), so end the socket ourselves if it
      // has not come shortly after.
      if (!this._openedAt) this._emit('error', { code: 'connect', message: 'WebSocket connection failed' });
      setTimeout(() => {
        if (gen === this._gen) this._dropSocket(gen, CloseCode.ABNORMAL, '');
      }, this._openedAt ? 1000 : 100);
    };
    ws.onclose = (ev) => {
      if (gen !== this._gen) return;
      this._onSocketClosed(gen, ev.code ?? CloseCode.ABNORMAL, ev.reason ?? '');
    };
  }

  /**
   * `getToken()`, bounded by `tokenTimeoutMs`: a provider that never answers must not
   * stall the client. A late answer is dropped (the attempt has moved on by then).
   */
  _fetchToken() {
    const ms = this._tokenTimeoutMs;
    let timer = null;
    return new Promise((resolve, reject) => {
      // 0 or Infinity: unbounded. setTimeout cannot wait longer than 2^31-1 ms anyway.
      if (ms > 0 && ms < 2 ** 31) {
        timer = setTimeout(() => reject(new Error(`token provider did not answer within ${ms} ms`)), ms);
        this._tokenTimer = timer;
      }
      Promise.resolve().then(() => this._getToken()).then(resolve, reject);
    }).finally(() => {
      clearTimeout(timer);
      if (this._tokenTimer === timer) this._tokenTimer = null;
    });
  }

  /**
   * Closes the socket of generation `gen` ourselves and treats it like a server close
   * with `code`. Codes a client may send (1000, 3000-4999) also go on the wire.
   */
  _dropSocket(gen, code, reason) {
    const ws = this._ws;
    try {
      if (code === CloseCode.NORMAL || (code >= 3000 && code <= 4999)) ws?.close(code, reason);
      else ws?.close();
    } catch { /* ignore */ }
    this._onSocketClosed(gen, code, reason);
  }

  _onSocketClosed(gen, code, reason) {
    this._gen++; // ignore anything else this socket still reports
    this._ws = null;
    this._clearSocketTimers();
    this._rejectPings(new Error(`connection closed (${code})`));
    const wasOpen = this._openedAt > 0;
    const stable = wasOpen && Date.now() - this._openedAt >= this._backoff.resetAfterMs;
    this._openedAt = 0;
    if (wasOpen) this._wsFailures = 0;
    else this._noteFailure();

    if (this._state === 'closed') return;
    // 1008 "token expired": a session lives no longer than its token. With a token
    // provider, reconnect at once with a fresh one; a fixed token would only be refused.
    const expired = code === CloseCode.POLICY && reason === TOKEN_EXPIRED && !!this._getToken;
    const stop = STOP_CODES.has(code) && !expired;
    this._emit('close', { code, reason, willReconnect: !stop });
    if (stop) {
      this._stop(new Error(`closed by server: ${code}${reason ? ` ${reason}` : ''}`));
      return;
    }
    // A connection that lived long enough, or that the server explicitly asked us to
    // move away from (drain 1012, slow consumer 1013), restarts the ladder: the next
    // delay is in [0, initialMs]. The server spreads its drain closes; our jitter
    // spreads the reconnects.
    if (stable || expired || (wasOpen && SOON_CODES.has(code))) this._attempt = 0;
    this._scheduleReconnect();
  }

  /**
   * A connection ended before its welcome. With `transport: 'auto'`, enough WebSocket
   * failures in a row switch to SSE (a network that blocks WebSocket); the client stays
   * on SSE until `close()` and `connect()` start over.
   */
  _noteFailure() {
    if (this._transport !== 'websocket') return;
    this._wsFailures += 1;
    if (this._transportOption === 'auto' && this._canSse && this._wsFailures >= this._fallbackAfter) {
      this._transport = 'sse';
      this._attempt = 0;
      this._emit('error', { code: 'fallback', message: `WebSocket failed ${this._wsFailures} times before the server's welcome: using SSE` });
    }
  }

  _scheduleReconnect() {
    if (this._state === 'closed') return;
    clearTimeout(this._retryTimer);
    const delay = backoffDelay(this._attempt, this._backoff, this._random);
    this._attempt += 1;
    this.nextRetryMs = delay; // before the state event, so listeners can show it
    this._setState('reconnecting');
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state === 'reconnecting') this._open();
    }, delay);
  }

  /** The browser came back online while we wait: retry now instead of after the delay. */
  _retryNow() {
    if (this._state !== 'reconnecting' || !this._retryTimer) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state === 'reconnecting') this._open();
    }, backoffDelay(0, this._backoff, this._random));
  }

  _stop(err = new Error('client closed')) {
    this._gen++; // an attempt still waiting for its token must not open a socket
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._clearSocketTimers();
    clearTimeout(this._tokenTimer);
    this._tokenTimer = null;
    globalThis.removeEventListener?.('online', this._onOnline);
    this._rejectPings(err);
    const waiters = this._waiters.splice(0);
    for (const w of waiters) w.reject(err);
    this._setState('closed');
  }

  _clearSocketTimers() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._liveTimer);
    this._connectTimer = null;
    this._liveTimer = null;
    this._probeSentAt = 0;
  }

  _rejectPings(err) {
    for (const p of this._pings.splice(0)) {
      clearTimeout(p.timer);
      p.reject?.(err); // liveness probes have no caller to tell
    }
  }

  // ----- dead-connection check ------------------------------------------------------
  //
  // Browsers answer the server's WebSocket pings without telling us, so a half-open TCP
  // connection (phone switched networks) looks open forever. After `staleAfterMs` of
  // silence (default 2 heartbeats + 5 s), send an application ping; any frame within
  // `pongTimeoutMs` keeps the connection, otherwise close it (4000) and reconnect.

  /** Starts the check for the connection whose welcome just arrived. */
  _startLiveness(heartbeatMs) {
    const hb = Number(heartbeatMs);
    this._staleMs = this._staleAfterMs ?? (hb > 0 ? 2 * hb + STALE_GRACE_MS : 0);
    this._probeSentAt = 0;
    if (this._staleMs > 0) this._armLiveness(this._staleMs);
  }

  _armLiveness(ms) {
    clearTimeout(this._liveTimer);
    const gen = this._gen;
    this._liveTimer = setTimeout(() => {
      this._liveTimer = null;
      if (gen === this._gen) this._checkLiveness(gen);
    }, Math.max(1, Math.min(ms, 2 ** 31 - 1)));
  }

  _checkLiveness(gen) {
    const now = Date.now();
    if (this._probeSentAt) {
      if (this._lastRx < this._probeSentAt) {
        const silent = now - this._lastRx;
        this._emit('error', { code: 'stale', message: `no traffic from the server for ${silent} ms (no answer to a ping): reconnecting` });
        if (gen === this._gen) this._dropSocket(gen, CloseCode.NO_TRAFFIC, 'no traffic');
        return;
      }
      this._probeSentAt = 0; // answered
    }
    const quiet = now - this._lastRx;
    if (quiet < this._staleMs) {
      this._armLiveness(this._staleMs - quiet);
      return;
    }
    this._probeSentAt = now;
    if (this._send({ type: 'ping' })) this._pings.push({ probe: true });
    this._armLiveness(this._pongTimeoutMs);
  }

  _setState(state) {
    if (this._state === state) return;
    const previous = this._state;
    this._state = state;
    this._emit('state', { state, previous });
  }

  /** Writes a frame if a socket is open; returns false otherwise. */
  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN || !this._openedAt) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ----- frames ---------------------------------------------------------------------

  _onMessage(data) {
    if (typeof data !== 'string') return; // protocol v1 is JSON text frames only
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      this._emit('error', { code: 'bad_frame', message: `unparsable frame from server: ${errorMessage(e)}` });
      return;
    }
    switch (frame?.type) {
      case 'welcome': return this._onWelcome(frame);
      case 'notification': return void this._onNotification(frame);
      case 'subscribed': return this._emit('subscribed', frame);
      case 'unsubscribed': return this._emit('unsubscribed', frame);
      case 'pong': {
        const p = this._pings.shift();
        if (p?.resolve) { clearTimeout(p.timer); p.resolve(Date.now() - p.sentAt); }
        return;
      }
      case 'error': return this._emit('error', { code: frame.code, message: frame.message, frame });
      default: return; // unknown frame types are ignored so servers can add new ones
    }
  }

  _onWelcome(frame) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this._openedAt = Date.now();
    this._welcome = frame;
    this._startLiveness(frame.heartbeat_ms);
    // Order matters: pending acks first (so a replay racing them is short), then the
    // topics, so the server knows everything we want before anything else happens.
    for (const id of [...this._unsentAcks]) {
      if (this._send({ type: 'ack', id })) this._unsentAcks.delete(id);
    }
    if (this._transport !== 'sse') for (const topic of this._topics) this._send({ type: 'subscribe', topic });
    if (this._push) this._send({ type: 'push_subscribe', subscription: this._push });
    this._setState('open');
    this._emit('open', frame);
    const waiters = this._waiters.splice(0);
    for (const w of waiters) w.resolve(frame);
  }

  async _onNotification(n) {
    if (typeof n.id !== 'string') return;
    const stored = n.cursor != null;
    const known = this._seen.get(n.id);
    if (known !== undefined) {
      this._seen.set(n.id, known); // touch
      // A stored notification whose listener failed is emitted again: the server resends
      // it only on a later connection (never twice on one), and the resume cursor was
      // held below it for exactly that.
      if (!(known.state === FAILED && stored)) {
        // Already emitted. If we acked it and the server still sends it, our ack was lost
        // (socket died first): ack again. If listeners are still running, their ack follows.
        if (known.acked && this.autoAck) this.ack(n.id);
        return;
      }
    }
    const entry = { state: PENDING, cursor: stored ? String(n.cursor) : null, acked: false };
    this._seen.set(n.id, entry);
    if (stored) this._resume.begin(n.id, entry.cursor);
    const ok = await this._emitAndWait('notification', n);
    entry.state = ok ? HANDLED : FAILED;
    if (stored) this._resume.end(n.id, entry.cursor, ok);
    // Only stored notifications (those carrying a cursor) sit in an inbox, so only they
    // are acked automatically; acking topic/broadcast fan-out would cost the gateway an
    // inbox delete per user for nothing.
    if (ok && stored && this.autoAck) this.ack(n.id);
  }

  // ----- events ---------------------------------------------------------------------

  _emit(event, payload) {
    for (const fn of [...this._handlers.get(event)]) {
      try {
        const r = fn(payload);
        if (r && typeof r.then === 'function') r.then(undefined, (e) => this._handlerFailed(event, e));
      } catch (e) {
        this._handlerFailed(event, e);
      }
    }
  }

  /** Runs the handlers, awaiting async ones; false if any threw or rejected. */
  async _emitAndWait(event, payload) {
    const runs = [...this._handlers.get(event)].map(async (fn) => fn(payload));
    const results = await Promise.allSettled(runs);
    let ok = true;
    for (const r of results) {
      if (r.status === 'rejected') {
        ok = false;
        this._handlerFailed(event, r.reason, payload);
      }
    }
    return ok;
  }

  _handlerFailed(event, error, notification) {
    if (event === 'error') {
      // Nowhere left to report it without recursion.
      globalThis.console?.error?.('kurir: error handler threw', error);
      return;
    }
    this._emit('error', {
      code: 'handler',
      message: `"${event}" handler failed: ${errorMessage(error)}`,
      error,
      ...(notification ? { notification } : {}),
    });
  }
}

export default KurirClient;
