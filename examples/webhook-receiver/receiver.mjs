// A receiver for livegate's webhook triggers: it checks each call's Standard
// Webhooks signature with the `standardwebhooks` package, drops a call it has
// already handled (by `webhook-id`: livegate delivers at least once), and logs
// the change. Run it with the trigger's secret:
//
//   HOOK_SECRET=whsec_... PORT=9000 node receiver.mjs
//
// and point a trigger at http://127.0.0.1:9000/hooks (see the README, "Webhook
// triggers"). The interop suite (tests/interop/test/webhooks.test.js) starts it
// the same way and asserts on what it saw.

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { Webhook } from 'standardwebhooks';

/**
 * Starts a receiver on 127.0.0.1:`port` (0: any free port). Resolves to
 * `{ url, received, rejected, stop }`: `received` holds each verified change
 * once, `rejected` counts calls whose signature did not verify.
 */
export async function startReceiver({ secret, port = 0, onChange = () => {} }) {
  const webhook = new Webhook(secret);
  const seen = new Set();
  const received = [];
  let rejected = 0;
  const server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/hooks') {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let change;
      try {
        // Throws unless the signature matches this exact body, id and a
        // timestamp within five minutes.
        change = webhook.verify(body, req.headers);
      } catch {
        rejected += 1;
        res.writeHead(400).end('bad signature');
        return;
      }
      const id = req.headers['webhook-id'];
      if (!seen.has(id)) {
        seen.add(id);
        received.push({ id, change });
        onChange(change);
      }
      // 2xx ends the delivery; anything else makes livegate retry.
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: bound } = server.address();
  return {
    url: `http://127.0.0.1:${bound}/hooks`,
    received,
    rejected: () => rejected,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const secret = process.env.HOOK_SECRET;
  if (!secret) {
    console.error('set HOOK_SECRET to the trigger secret (whsec_...)');
    process.exit(2);
  }
  const r = await startReceiver({
    secret,
    port: Number(process.env.PORT ?? 9000),
    onChange: (c) => console.log(`${c.action} ${c.collection} ${c.record.id} (cursor ${c.cursor})`),
  });
  console.log(`receiving on ${r.url}`);
}
