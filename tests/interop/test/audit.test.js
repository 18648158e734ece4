// The graphql-over-http conformance audit (graphql-http's auditServer) against a
// real server: every MUST and every SHOULD has to pass.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { auditServer } from 'graphql-http';

import { TEST_JWT_SECRET, startServer } from './helpers.js';

/** Fewer results than this means the audit did not really run. */
const MIN_AUDITS = 20;

let server;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
});

after(async () => {
  await server?.stop();
});

test('graphql-over-http audit: no MUST or SHOULD failures', async (t) => {
  const results = await auditServer({ url: server.url });

  const passed = results.filter((r) => r.status === 'ok');
  const notices = results.filter((r) => r.status === 'notice');
  const failures = results.filter((r) => r.status === 'error' || r.status === 'warn');
  t.diagnostic(`${passed.length}/${results.length} audits passed (${notices.length} MAY notices)`);
  console.log(`graphql-http audit: ${passed.length} of ${results.length} passed`);
  for (const r of notices) t.diagnostic(`MAY notice: ${r.name}: ${r.reason}`);

  assert.ok(results.length >= MIN_AUDITS, `only ${results.length} audits ran; expected at least ${MIN_AUDITS}`);

  const describe = (r) => `[${r.status === 'error' ? 'MUST' : 'SHOULD'}] ${r.id} ${r.name}\n    reason: ${r.reason}`;
  assert.equal(
    failures.length,
    0,
    `${failures.length} audit(s) failed:\n${failures.map(describe).join('\n')}`,
  );
});
