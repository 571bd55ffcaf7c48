// kurir-sw.js — the service worker behind KurirClient.enablePush(): shows the
// notifications Kurir pushes (Web Push) while no page of the app is open, and opens or
// focuses the app when one is clicked. The click is handed to the page as
// `{type: 'kurir-ack', id}`, so the page's client acks the notification (which cancels
// whatever the server still had pending for it); open pages also hear
// `{type: 'kurir-pushed', id, shown}` when a push was shown.
//
// Serve it from your app's origin (the gateway serves a copy at /kurir-sw.js) and pass
// its URL to enablePush({ serviceWorker }). To combine it with your own service worker,
// importScripts() it there.

/** Where a click goes when the notification names no `url` in its data. */
const DEFAULT_URL = '/';

self.addEventListener('push', (event) => {
  let n = {};
  try {
    n = event.data ? event.data.json() : {};
  } catch {
    n = { title: event.data ? event.data.text() : '' };
  }
  const data = n.data && typeof n.data === 'object' ? n.data : {};
  const options = {
    body: typeof n.body === 'string' ? n.body : '',
    data: { id: n.id ?? null, url: data.url ?? DEFAULT_URL },
    // Same collapse key: the newer notification replaces the one shown.
    tag: n.collapse_key || n.id || undefined,
    renotify: Boolean(n.collapse_key),
  };
  const title = n.title || 'Notification';
  event.waitUntil((async () => {
    await self.registration.showNotification(title, options);
    // Open pages of the app hear of it (to refresh what they list, say): the
    // notification as the notifications API holds it right after showing it.
    const shown = await self.registration.getNotifications({ tag: options.tag });
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const message = {
      type: 'kurir-pushed',
      id: n.id ?? null,
      shown: shown.map((x) => ({ title: x.title, body: x.body, tag: x.tag, id: x.data?.id ?? null })),
    };
    for (const c of windows) c.postMessage(message);
  })());
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const { id, url } = event.notification.data ?? {};
  event.waitUntil((async () => {
    const target = new URL(url || DEFAULT_URL, self.registration.scope).href;
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    let client = windows.find((c) => c.url === target) ?? windows[0] ?? null;
    if (client) {
      client = await client.focus().catch(() => client);
    } else {
      client = await self.clients.openWindow(target);
    }
    if (client && id) client.postMessage({ type: 'kurir-ack', id });
  })());
});
