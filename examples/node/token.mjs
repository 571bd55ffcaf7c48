// Minting a client token in a Node.js backend: an HS256 JWT the gateways accept. `sub` is
// the user, `topics` what they may subscribe to, `exp` when it stops working. Mint it
// after the user logged in and hand it to the browser; never ship the secret itself.
import { createHmac } from 'node:crypto';

const b64url = (data) => Buffer.from(data).toString('base64url');

export function mintClientToken(secret, user, { topics = [], ttlSeconds = 3600 } = {}) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = { sub: user, exp: Math.floor(Date.now() / 1000) + ttlSeconds };
  if (topics.length) claims.topics = topics;
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

// KURIR_JWT_SECRET may list several secrets during a rotation: sign with the first.
export const currentSecret = () => (process.env.KURIR_JWT_SECRET ?? '').split(',')[0];
