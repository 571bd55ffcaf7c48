// browser.mjs — end-to-end check of the demo page in headless Chromium (playwright-core).
//
//   KURIR_TEST_URL=http://127.0.0.1:8080 \
//   KURIR_SEND_CMD='kurir send --user {user} --title {title} --ttl 60' \
//   [KURIR_RESTART_CMD='…'] [KURIR_SCREENSHOT=/tmp/demo.png] node clients/js/test/browser.mjs
//
// Env:
//   KURIR_TEST_URL     base URL of a gateway that serves the demo page at / (required)
//   KURIR_SEND_CMD     shell command that sends a stored notification (required). {user},
//                      {title} and {body} are replaced by values made only of [A-Za-z0-9._-],
//                      so they need no quoting; they are also in the command's environment
//                      as KURIR_USER, KURIR_TITLE, KURIR_BODY.
//   KURIR_RESTART_CMD  optional shell command that restarts the server (or drains the node
//                      the page is on); enables the reconnect check
//   KURIR_SCREENSHOT   optional path: a PNG of the page with a toast showing
//   KURIR_CHROMIUM     browser binary (default /usr/bin/chromium)
//   KURIR_COLOR_SCHEME light | dark (default light)
//
// Prints one line per check and closes with `N passed, N failed`; exit code 0 iff all passed.
// Needs `npm install` in clients/js (playwright-core) and Debian's chromium.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TOAST_APPEAR_MS = 1000; // toast visible this soon after the send command returned
const TOAST_GONE_MIN_MS = 7500; // …and removed between these two after it appeared
const TOAST_GONE_MAX_MS = 10_000;
const RECONNECT_MS = 15_000; // badge back to `open` this soon after it left it
const OVERALL_MS = 150_000; // the whole script, so a wedged browser cannot hang CI

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync',
];

const results = [];
function check(name, ok, detail = '') {
  results.push({ name, ok });
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${detail ? ` (${detail})` : ''}`);
  return ok;
}

function finish() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

const rand = () => Math.random().toString(36).slice(2, 10);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs a command template through the shell; resolves with { code, out, ms }. */
function runTemplate(template, vars, timeoutMs = 30_000) {
  const cmd = template.replace(/\{(user|title|body)\}/g, (_, k) => vars[k] ?? '');
  const env = { ...process.env, KURIR_USER: vars.user ?? '', KURIR_TITLE: vars.title ?? '', KURIR_BODY: vars.body ?? '' };
  delete env.NODE_TEST_CONTEXT;
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', cmd], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), out: out.trim(), ms: Date.now() - started, cmd });
    });
    child.on('error', (e) => { clearTimeout(timer); resolve({ code: 127, out: String(e), ms: 0, cmd }); });
  });
}

/** Records toast and badge changes in the page, with Date.now() stamps comparable to ours. */
function installRecorders() {
  const log = (window.__kurirTest = { toasts: new Map(), states: [] });
  const state = document.getElementById('state');
  log.states.push({ state: state.textContent, at: Date.now() });
  new MutationObserver(() => {
    const s = state.textContent;
    if (log.states.at(-1).state !== s) log.states.push({ state: s, at: Date.now() });
  }).observe(state, { childList: true, characterData: true, subtree: true });
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (n.classList?.contains('toast')) {
          log.toasts.set(n.dataset.id, { title: n.querySelector('.toast-title')?.textContent, added: Date.now(), removed: 0 });
        }
      }
      for (const n of r.removedNodes) {
        const t = n.classList?.contains('toast') && log.toasts.get(n.dataset.id);
        if (t) t.removed = Date.now();
      }
    }
  }).observe(document.getElementById('toasts'), { childList: true });
}

const toastByTitle = (page, title) => page.evaluate((title) => {
  for (const [id, t] of window.__kurirTest.toasts) if (t.title === title) return { id, ...t };
  return null;
}, title);

async function waitFor(fn, ms, every = 25) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= end) return null;
    await sleep(every);
  }
}

/** Sends a notification with a fresh title and checks its toast shows up in time. */
async function sendAndSeeToast(page, sendCmd, user, label) {
  const title = `${label}-${rand()}`;
  const body = `sent-by-browser-test-${rand()}`;
  const sent = await runTemplate(sendCmd, { user, title, body });
  if (!check(`${label}: send command succeeds`, sent.code === 0, sent.code === 0 ? `${sent.ms} ms` : `exit ${sent.code}: ${sent.out.slice(0, 400)}`)) return null;
  const doneAt = Date.now();
  const toast = await waitFor(() => toastByTitle(page, title), TOAST_APPEAR_MS + 4000);
  const visible = toast && (await page.locator(`#toasts .toast[data-id="${toast.id}"]`).isVisible());
  const lag = toast ? Math.max(0, toast.added - doneAt) : null;
  check(`${label}: toast "${title}" visible within ${TOAST_APPEAR_MS} ms of the send`,
    Boolean(toast && visible && lag <= TOAST_APPEAR_MS), toast ? `after ${lag} ms` : 'no toast');
  return toast ? { ...toast, title, body } : null;
}

/** Opens the demo in a new page whose every WebSocket is refused, connects as `user`. */
async function openBlocked(page, base, user) {
  await page.goto(new URL('/', base).href, { waitUntil: 'load', timeout: 15_000 });
  await waitFor(async () => (await page.locator('body').getAttribute('data-ready')) === '1', 5000);
  await page.evaluate(installRecorders);
  await page.fill('#user', user);
  await page.click('#connect');
  return waitFor(async () => (await page.locator('#state').textContent()) === 'open', 15_000);
}

/**
 * WebSocket blocked (every upgrade refused, as by a proxy): the page opens over SSE,
 * shows a notification, acks it (a fresh page is not replayed it), and is replayed what
 * was sent while it was away.
 */
async function sseFallback(context, base, sendCmd) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.routeWebSocket(/.*/, (ws) => ws.close({ code: 1011, reason: 'blocked by proxy' }));
  const user = `sse-${rand()}`;
  try {
    const opened = await openBlocked(page, base, user);
    if (!check('WebSocket blocked: the page opens anyway', Boolean(opened), `badge: ${await page.locator('#state').textContent()}`)) return;
    const transport = await page.evaluate(() => window.kurirDemo.client.transport);
    check('…over SSE', transport === 'sse', transport);
    await page.mouse.move(5, 795);
    const first = await sendAndSeeToast(page, sendCmd, user, 'over-sse');
    if (!first) return;
    await page.click('#disconnect');
    const title = `while-away-${rand()}`;
    const sent = await runTemplate(sendCmd, { user, title, body: `sent-while-away-${rand()}` });
    check('send while the page is away succeeds', sent.code === 0, sent.out.slice(0, 200));
    // A fresh page remembers nothing: what it is replayed is what the server still holds.
    await page.reload({ waitUntil: 'load' });
    if (!check('WebSocket blocked: a fresh page opens over SSE again', Boolean(await openBlocked(page, base, user)))) return;
    const replayed = await waitFor(() => page.evaluate((t) => {
      const li = [...document.querySelectorAll('#log li')].find((x) => x.textContent.includes(t));
      return li ? { replayed: Boolean(li.querySelector('.tag.replayed')) } : null;
    }, title), 5000);
    check('over SSE: what was sent while away is replayed', replayed?.replayed === true, JSON.stringify(replayed));
    await sleep(500);
    const again = await page.evaluate((t) => document.querySelector('#log').textContent.includes(t), first.title);
    check('over SSE: the acked notification is not replayed', !again);
    check('no page errors with WebSocket blocked', errors.length === 0, errors.slice(0, 3).join(' | '));
  } finally {
    await page.close().catch(() => {});
  }
}

/**
 * The service worker (kurir-sw.js) receives a push message, delivered through the
 * DevTools protocol as a push service would, and shows it as a system notification.
 */
async function pushedNotification(context, base) {
  const origin = new URL(base).origin;
  await context.grantPermissions(['notifications'], { origin });
  const page = await context.newPage();
  try {
    await page.goto(new URL('/', base).href, { waitUntil: 'load', timeout: 15_000 });
    const cdp = await context.newCDPSession(page);
    const registrations = [];
    const versions = [];
    cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => registrations.push(...e.registrations));
    cdp.on('ServiceWorker.workerVersionUpdated', (e) => versions.push(...e.versions));
    await cdp.send('ServiceWorker.enable');
    const scope = await page.evaluate(async () => {
      const r = await navigator.serviceWorker.register('/kurir-sw.js');
      await navigator.serviceWorker.ready;
      return r.scope;
    });
    const reg = await waitFor(() => registrations.find((r) => r.scopeURL === scope && !r.isDeleted), 5000);
    if (!check('service worker /kurir-sw.js registers', Boolean(reg), scope)) return;
    // Delivered to an activated worker: the registration is reported before that.
    const activated = await waitFor(() => versions.find((v) => v.registrationId === reg.registrationId && v.status === 'activated'), 5000);
    check('…and activates', Boolean(activated));
    const title = `pushed-${rand()}`;
    const message = { id: `0190-${rand()}`, title, body: 'while the page was closed', collapse_key: 'inbox' };
    // What the worker reports once the notification is shown (headless Chromium may
    // close a shown notification again at once, so a later look could miss it).
    await page.evaluate(() => {
      window.__kurirPushed = new Promise((resolve) => {
        navigator.serviceWorker.addEventListener('message', (e) => {
          if (e.data?.type === 'kurir-pushed') resolve(e.data);
        });
      });
    });
    await cdp.send('ServiceWorker.deliverPushMessage', {
      origin, registrationId: reg.registrationId, data: JSON.stringify(message),
    });
    const pushed = await page.evaluate(() => Promise.race([
      window.__kurirPushed,
      new Promise((resolve) => setTimeout(() => resolve(null), 10_000)),
    ]));
    const shown = pushed?.shown?.find((n) => n.title === title) ?? null;
    check('a pushed message is shown as a system notification', Boolean(shown), JSON.stringify(pushed));
    check('…with its body, collapse key as tag, and id for the ack',
      shown?.body === message.body && shown?.tag === 'inbox' && shown?.id === message.id, JSON.stringify(shown));
  } catch (e) {
    check('service worker push check ran', false, e.message.split('\n')[0]);
  } finally {
    await page.close().catch(() => {});
  }
}

async function main() {
  const base = process.env.KURIR_TEST_URL;
  const sendCmd = process.env.KURIR_SEND_CMD;
  const restartCmd = process.env.KURIR_RESTART_CMD;
  const shot = process.env.KURIR_SCREENSHOT;
  if (!base || !sendCmd) {
    check('KURIR_TEST_URL and KURIR_SEND_CMD are set', false,
      'e.g. KURIR_TEST_URL=http://127.0.0.1:8080 KURIR_SEND_CMD=\'kurir send --user {user} --title {title} --ttl 60\'');
    return;
  }

  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    check('playwright-core is installed', false, `run \`npm ci\` in clients/js (${e.message})`);
    return;
  }
  const profile = await mkdtemp(join(tmpdir(), 'kurir-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.KURIR_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      colorScheme: process.env.KURIR_COLOR_SCHEME === 'dark' ? 'dark' : 'light',
      reducedMotion: 'no-preference',
    });
  } catch (e) {
    check('chromium starts', false, e.message.split('\n')[0]);
    await rm(profile, { recursive: true, force: true });
    return;
  }

  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      // The browser logs refused handshakes and fetches itself while the server is away:
      // expected during the restart check, and not the page's fault.
      if (m.type() === 'error' && !/WebSocket connection to|net::ERR_/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
    });

    // 0. the service worker shows what Web Push delivers while the page is closed
    await pushedNotification(context, base);

    // 1. the page
    const res = await page.goto(new URL('/', base).href, { waitUntil: 'load', timeout: 15_000 }).catch((e) => e);
    if (!check('demo page loads', res && !(res instanceof Error) && res.ok(), res instanceof Error ? res.message.split('\n')[0] : `HTTP ${res?.status()}`)) return;
    const badge = page.locator('#state');
    // The HTML itself says "idle": only the marker the module script sets as its last
    // step (after importing /kurir.js) shows that the script actually ran.
    const ready = await waitFor(async () => (await page.locator('body').getAttribute('data-ready')) === '1', 5000);
    check('page script ran and imported /kurir.js (body[data-ready="1"])', Boolean(ready),
      ready ? '' : `data-ready=${await page.locator('body').getAttribute('data-ready')}`);
    check('state badge starts as "idle"', (await badge.textContent()) === 'idle' && (await badge.getAttribute('data-state')) === 'idle',
      `badge: ${await badge.textContent()}`);
    const help = (await page.locator('#send-cli').textContent()) ?? '';
    check('send help shows the built-in client first', help.startsWith('kurir send') && help.includes('--ttl 3600')
      && (await page.locator('#send-cli ~ #send-grpcurl').count()) === 1, help.split('\n')[0]);
    const live = await page.locator('#toasts').evaluate((t) => `${t.getAttribute('role')}/${t.getAttribute('aria-live')}`);
    check('toast container is role=status aria-live=polite', live === 'status/polite', live);
    await page.evaluate(installRecorders);

    // 2. connect as a fresh user
    const user = `web-${rand()}`;
    const tokenField = page.locator('#token-field');
    if (await tokenField.isVisible()) {
      check('gateway offers /dev/token (standalone mode)', false, 'the page asks for a pasted token');
      return;
    }
    await page.fill('#user', user);
    await page.click('#connect');
    const opened = await waitFor(async () => (await badge.textContent()) === 'open', 10_000);
    if (!check(`connects as ${user}: badge becomes "open"`, Boolean(opened), `badge: ${await badge.textContent()}`)) return;
    await page.mouse.move(5, 795); // away from the toasts, which pause while hovered

    // 3. a notification → toast → gone after ~8 s, and in the list
    const first = await sendAndSeeToast(page, sendCmd, user, 'first');
    if (first) {
      const sel = `#toasts .toast[data-id="${first.id}"]`;
      const text = await page.locator(`${sel} .toast-title`).textContent().catch(() => '');
      check('toast shows the title in .toast-title', text === first.title, text);
      if (shot) {
        await page.screenshot({ path: shot });
        console.log(`# screenshot: ${shot}`);
      }
      const item = page.locator(`#log li[data-id="${first.id}"]`);
      const itemText = (await item.count()) ? await item.textContent() : '';
      check('received list has the item', itemText.includes(first.title) && itemText.includes(first.body), itemText.slice(0, 120));
      const gone = await waitFor(() => page.evaluate((id) => window.__kurirTest.toasts.get(id)?.removed, first.id), TOAST_GONE_MAX_MS + 2000, 50);
      const life = gone ? gone - first.added : null;
      check(`toast removed between ${TOAST_GONE_MIN_MS} and ${TOAST_GONE_MAX_MS} ms after it appeared`,
        life !== null && life >= TOAST_GONE_MIN_MS && life <= TOAST_GONE_MAX_MS, life === null ? 'still there' : `${life} ms`);
      check('toast is gone from the DOM', (await page.locator(sel).count()) === 0);
      check('list item stays after the toast left', (await item.count()) === 1);
    }

    // 4. the server goes away and comes back: the page reconnects by itself
    if (restartCmd) {
      const before = Date.now();
      const r = await runTemplate(restartCmd, { user }, 60_000);
      check('restart command succeeds', r.code === 0, r.code === 0 ? `${r.ms} ms` : `exit ${r.code}: ${r.out.slice(0, 400)}`);
      const states = () => page.evaluate(() => window.__kurirTest.states);
      const left = await waitFor(async () => (await states()).find((s) => s.at >= before && s.state !== 'open'), RECONNECT_MS);
      check('badge leaves "open" when the server goes away', Boolean(left), left ? `→ ${left.state}` : 'stayed open');
      if (left) {
        const back = await waitFor(async () => (await states()).find((s) => s.at > left.at && s.state === 'open'), RECONNECT_MS - (Date.now() - left.at));
        const seq = (await states()).filter((s) => s.at >= before).map((s) => s.state).join(' → ');
        check(`badge returns to "open" by itself within ${RECONNECT_MS / 1000} s`, Boolean(back),
          back ? `${back.at - left.at} ms: ${seq}` : seq);
        if (back) {
          await page.mouse.move(5, 795);
          await sendAndSeeToast(page, sendCmd, user, 'after-restart');
        }
      }
    } else {
      console.log('# KURIR_RESTART_CMD not set: reconnect check skipped');
    }

    // 5. phone width: nothing overflows sideways
    await page.setViewportSize({ width: 375, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check('no horizontal overflow at phone width (375 px)', overflow <= 0, `${overflow} px`);
    await page.click('details.help summary'); // its long command lines must scroll in place
    const helpOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check('no horizontal overflow at phone width with "How to send one" open', helpOverflow <= 0, `${helpOverflow} px`);

    check('no page errors', pageErrors.length === 0, pageErrors.slice(0, 3).join(' | '));

    // 6. a network that blocks WebSocket: the same page falls back to SSE by itself
    await sseFallback(context, base, sendCmd);

  } finally {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain && process.env.NODE_TEST_CONTEXT && process.argv.length <= 2) {
  // `node --test clients/js/test/` runs every file in this folder; this one is a program.
  const { test } = await import('node:test');
  test('browser end-to-end check', { skip: 'standalone script: run `node clients/js/test/browser.mjs` with KURIR_TEST_URL and KURIR_SEND_CMD' }, () => {});
} else if (isMain) {
  const watchdog = setTimeout(() => {
    check(`finishes within ${OVERALL_MS / 1000} s`, false);
    process.exit(finish());
  }, OVERALL_MS);
  main()
    .catch((e) => check('browser test ran without crashing', false, e.stack ?? String(e)))
    .finally(() => {
      clearTimeout(watchdog);
      process.exitCode = finish();
    });
}
