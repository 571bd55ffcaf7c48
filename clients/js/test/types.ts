// Compile-time checks of the package's types (`npm run test:types`): how an application
// uses the client, written against the published declarations. Nothing here runs.
import KurirClient, {
  CloseCode,
  type KurirNotification,
  type KurirOptions,
  type WelcomeFrame,
} from '@kurir/client';

const options: KurirOptions = {
  url: 'wss://push.example.com/ws',
  getToken: async () => (await fetch('/api/kurir-token')).text(),
  topics: ['news.eu'],
  backoff: { initialMs: 250, maxMs: 10_000 },
};
const client = new KurirClient(options);

const welcome: Promise<WelcomeFrame> = client.connect();
void welcome.then((w) => w.heartbeat_ms.toFixed());

const off = client.on('notification', async (n: KurirNotification) => {
  const urgent: boolean = n.priority === 'high';
  const replaces: string | null = n.collapse_key;
  const stored: boolean = typeof n.cursor === 'string';
  if (urgent && replaces !== null && stored) await Promise.resolve(n.data['k']);
});
client.on('close', (e) => {
  if (e.code === CloseCode.DISCONNECTED && !e.willReconnect) off();
});
client.on('error', (e) => e.code.toUpperCase());
client.subscribe('orders');
client.ack('0190f3a0-0000-7000-8000-000000000000');
const saved: string | null = client.cursor;
new KurirClient({ url: '/ws', token: 'jwt', cursor: saved, autoAck: false }).close();

// @ts-expect-error: a priority the protocol does not have
const wrong: KurirNotification['priority'] = 'urgent';
void wrong;
// @ts-expect-error: events are typed by name
client.on('notifications', () => {});
