// Type declarations for kurir.js, the Kurir WebSocket client (protocol v1).

/** Protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

/** Close codes of the Kurir protocol. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  ABNORMAL: 1006;
  /** Bad auth mid-session or forbidden: the client stops. */
  POLICY: 1008;
  TOO_LARGE: 1009;
  INTERNAL: 1011;
  /** Gateway draining: the client reconnects soon. */
  SERVICE_RESTART: 1012;
  /** Slow consumer: the client reconnects soon. */
  TRY_AGAIN_LATER: 1013;
  /** Disconnected by the backend (`Disconnect` RPC): the client stops. */
  DISCONNECTED: 4001;
  /** Sent by the client itself when the server went silent; it reconnects (like 1006). */
  NO_TRAFFIC: 4000;
}>;

export interface BackoffOptions {
  /** Cap of the first retry delay, doubled per failed attempt. Default 500. */
  initialMs?: number;
  /** Largest cap. Default 30000. */
  maxMs?: number;
  /** A connection open at least this long resets the ladder. Default 5000. */
  resetAfterMs?: number;
}

export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;
export declare const DEFAULT_DEDUPE_SIZE: 1000;
export declare const DEFAULT_CONNECT_TIMEOUT_MS: 10000;
export declare const DEFAULT_PING_TIMEOUT_MS: 10000;
export declare const DEFAULT_TOKEN_TIMEOUT_MS: 10000;
export declare const DEFAULT_PONG_TIMEOUT_MS: 10000;
/** Silence allowed beyond two heartbeats (`2 * heartbeat_ms + STALE_GRACE_MS`). */
export declare const STALE_GRACE_MS: 5000;

/** `min(maxMs, initialMs * 2^attempt)`; `attempt` is 0-based, negatives count as 0. */
export declare function backoffCap(attempt: number, opts?: Pick<BackoffOptions, 'initialMs' | 'maxMs'>): number;

/** Full jitter: an integer uniformly drawn from `[0, backoffCap(attempt)]`. */
export declare function backoffDelay(
  attempt: number,
  opts?: Pick<BackoffOptions, 'initialMs' | 'maxMs'>,
  random?: () => number,
): number;

/**
 * Sort comparator for cursors (`<ms>-<seq>`, two u64 decimals): compares part by part as
 * exact numbers; non-numeric parts fall back to string order.
 */
export declare function compareCursors(a: string, b: string): number;

/** Bounded id set with least-recently-used eviction (the client's dedupe memory). */
export declare class IdLru<V = unknown> {
  constructor(capacity?: number);
  readonly capacity: number;
  readonly size: number;
  /** True if present; touches the id. */
  has(id: string): boolean;
  get(id: string): V | undefined;
  set(id: string, value?: V): this;
  /** Records the id; true if it was already there. */
  seen(id: string): boolean;
  delete(id: string): boolean;
  clear(): void;
  keys(): IterableIterator<string>;
  values(): IterableIterator<V>;
}

/** A minimal WebSocket constructor: browsers', Node's global (>= 22, or 20 with --experimental-websocket), or the `ws` package. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface KurirOptions {
  /** `ws(s)://host/ws`, or `http(s)://…` (turned into ws(s)); relative URLs resolve against the page. */
  url: string;
  /** A fixed JWT. Give this or `getToken`. */
  token?: string;
  /**
   * Called before every connection attempt, including reconnects: return a fresh JWT.
   * Throwing, rejecting or not answering within `tokenTimeoutMs` is a failed attempt
   * (`error` with code `token`, then a backoff retry).
   */
  getToken?: () => string | Promise<string>;
  /** How long one `getToken()` call may take. Default 10000; 0 or Infinity: unbounded. */
  tokenTimeoutMs?: number;
  /** Ack stored notifications after the `notification` handlers returned. Default true. */
  autoAck?: boolean;
  backoff?: BackoffOptions;
  /** Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** How many notification ids to remember for dedupe. Default 1000. */
  dedupeSize?: number;
  /** Give up on an attempt without a welcome after this long. Default 10000. */
  connectTimeoutMs?: number;
  /**
   * Silence from the server (no frame at all) after which the client sends a `ping`.
   * Default `2 * welcome.heartbeat_ms + 5000`; 0, or no heartbeat in the welcome: off.
   */
  staleAfterMs?: number | null;
  /**
   * After that ping, how long to wait for any frame before closing the socket (4000,
   * "no traffic") and reconnecting. Default 10000.
   */
  pongTimeoutMs?: number;
  /** Topics to subscribe to on every connection. */
  topics?: string[];
  /** Resume position saved from an earlier session (`client.cursor`): replay only what came after it. */
  cursor?: string | null;
  /** Random source in [0, 1) for the jitter (tests). Default Math.random. */
  random?: () => number;
  /**
   * `auto` (default): WebSocket, switching to SSE (`GET /sse` + `POST /v1/…`) after
   * `fallbackAfter` WebSocket attempts in a row failed before the welcome (a network
   * that blocks WebSocket); the client stays on SSE until `close()` + `connect()`.
   * `websocket` or `sse`: that transport only.
   */
  transport?: 'auto' | 'websocket' | 'sse';
  /** WebSocket failures in a row before `auto` tries SSE. Default 2. */
  fallbackAfter?: number;
  /** Default `globalThis.EventSource` (the SSE transport). */
  EventSource?: EventSourceConstructor;
  /** Default `globalThis.fetch` (the SSE transport's requests). */
  fetch?: typeof fetch;
}

/** A minimal EventSource constructor: browsers', or a polyfill. */
export type EventSourceConstructor = new (url: string) => {
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  close(): void;
};

/** The SSE transport behind the WebSocket interface the client uses (exported for tests and custom setups). */
export declare class SseSocket implements WebSocketLike {
  constructor(wsUrl: string, deps?: { EventSource?: EventSourceConstructor; fetch?: typeof fetch });
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
}

/** WebSocket attempts that must fail before their welcome before `auto` tries SSE. */
export declare const DEFAULT_FALLBACK_AFTER: number;

/** base64url (unpadded) to bytes, as `applicationServerKey` wants a VAPID key. */
export declare function base64UrlToBytes(s: string): Uint8Array;

export type KurirState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface WelcomeFrame {
  type: 'welcome';
  connection_id: string;
  node: string;
  user: string;
  heartbeat_ms: number;
  [extra: string]: unknown;
}

export interface KurirNotification {
  type: 'notification';
  /** Time-ordered id (UUIDv7). */
  id: string;
  title: string;
  body: string;
  data: Record<string, string>;
  /** Topic for topic publishes; null for targeted sends (and broadcasts). */
  topic: string | null;
  /** What the sender asked for: `high` for alerts worth interrupting the user. */
  priority: 'normal' | 'high';
  /**
   * Notifications with the same key supersede each other: a stored one replaces the
   * user's unacked stored one with that key (a reconnect replays only the newest), and a
   * page may replace the one it shows. null when none was given.
   */
  collapse_key: string | null;
  /** Unix milliseconds. */
  created_at: number;
  /** True when replayed from the inbox on (re)connect rather than routed live. */
  replayed: boolean;
  /** Resume position; present on stored notifications only. */
  cursor?: string | null;
  [extra: string]: unknown;
}

export interface KurirCloseEvent {
  code: number;
  reason: string;
  /** False after close(), 1008 and 4001 (but 1008 "token expired" with a token provider reconnects). */
  willReconnect: boolean;
}

export interface KurirErrorEvent {
  /**
   * Server error frame codes (`bad_frame`, `forbidden`, …) as sent, or the client's own:
   * `connect` (socket failed, e.g. HTTP 401), `timeout` (no welcome), `token` (getToken
   * threw, rejected or timed out), `stale` (silent connection, no answer to a ping: it is
   * closed with 4000 and reopened), `handler` (a listener threw), `bad_frame`
   * (unparsable frame from the server), `fallback` (WebSocket kept failing: switched to
   * SSE), `unavailable` (an SSE request could not be sent).
   */
  code: string;
  message: string;
  /** The thrown value, for `token`, `connect` and `handler`. */
  error?: unknown;
  /** The server's error frame, for server errors. */
  frame?: { type: 'error'; code: string; message: string; [extra: string]: unknown };
  /** The notification whose handler failed, for `handler`. */
  notification?: KurirNotification;
}

export interface KurirEvents {
  notification: KurirNotification;
  open: WelcomeFrame;
  close: KurirCloseEvent;
  error: KurirErrorEvent;
  state: { state: KurirState; previous: KurirState };
  subscribed: { type: 'subscribed'; topic: string };
  unsubscribed: { type: 'unsubscribed'; topic: string };
}

export declare class KurirClient {
  constructor(options: KurirOptions);
  readonly state: KurirState;
  /**
   * Resume position, sent as `?cursor=` on reconnect: the highest cursor (numerically)
   * whose notification has been handled (every `notification` listener returned), kept
   * below the lowest cursor whose listeners are still running or failed. null: nothing
   * handled yet, the gateway replays the whole inbox.
   */
  readonly cursor: string | null;
  /** Topics subscribed now or on the next connection. */
  readonly topics: string[];
  /** The last welcome frame. */
  readonly welcome: WelcomeFrame | null;
  /** The transport of the current (or next) connection. */
  readonly transport: 'websocket' | 'sse';
  /** Delay chosen for the pending reconnect, in ms (null before the first). */
  readonly nextRetryMs: number | null;
  autoAck: boolean;

  /** Starts the session; resolves with the welcome, rejects if closed before it opened. */
  connect(): Promise<WelcomeFrame>;
  /** Closes with 1000 and stops reconnecting. */
  close(code?: number, reason?: string): void;
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
  /**
   * Background notifications (Web Push): asks permission, registers the service worker
   * (default `/kurir-sw.js`), subscribes with the gateway's VAPID key (`GET
   * /v1/push/key`, or `vapidKey`) and registers the subscription with the gateway, again
   * after every reconnect. Clicking a pushed notification opens or focuses the app and
   * acks it. Rejects when the browser lacks the APIs or permission is not granted.
   */
  enablePush(options?: { serviceWorker?: string; scope?: string; vapidKey?: string }): Promise<PushSubscriptionJSON>;
  /** Unsubscribes from Web Push and tells the gateway. */
  disablePush(): Promise<void>;
  /** Acks a notification id (queued until the next welcome when offline). */
  ack(id: string): void;
  /** Application-level ping; resolves with the round-trip time in ms. */
  ping(timeoutMs?: number): Promise<number>;
  /**
   * Adds a listener; returns a function that removes it. `notification` listeners may be
   * async: the auto-ack waits for them, and is skipped if one throws (the notification is
   * then emitted again when the gateway replays it on a later connection).
   */
  on<E extends keyof KurirEvents>(event: E, fn: (payload: KurirEvents[E]) => unknown): () => void;
  off<E extends keyof KurirEvents>(event: E, fn: (payload: KurirEvents[E]) => unknown): void;
}

export default KurirClient;
