// Webhook triggers as a receiver built on the `standardwebhooks` npm package sees
// them (the worked example in examples/webhook-receiver, imported as is): every
// call verifies, each change arrives once with its body per API.md §9, and a
// forged call is refused by the same receiver (the check is not vacuous).
// Under LIVEGATE_TEST_BALANCED=1 the two instances behind HAProxy share the
// trigger: still each change once.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { startReceiver } from '../../../examples/webhook-receiver/receiver.mjs';
import { bearer, gql, signUp, startServer } from './helpers.js';

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

let receiver;
let server;
let dir;

before(async () => {
  receiver = await startReceiver({ secret: SECRET });
  dir = mkdtempSync(path.join(tmpdir(), 'livegate-hooks-'));
  const app = path.join(dir, 'app.toml');
  const example = readFileSync(path.join(REPO_DIR, 'schema/app.toml'), 'utf8');
  writeFileSync(
    app,
    `${example}
[triggers.post_changes]
collections = ["posts"]
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"
`,
  );
  server = await startServer({ app, env: { HOOK_URL: receiver.url, HOOK_SECRET: SECRET } });
});

after(async () => {
  await server?.stop();
  await receiver?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const until = async (what, done, ms = 15000) => {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

test('each change reaches a standardwebhooks receiver once, verified', async () => {
  const me = await signUp(server.url);
  const titles = Array.from({ length: 6 }, (_, i) => `hooked ${i}`);
  const ids = [];
  for (const title of titles) {
    const res = await gql(
      server.url,
      'mutation ($t: String!) { createPost(input: { title: $t }) { id } }',
      { t: title },
      bearer(me.accessToken),
    );
    assert.equal(res.status, 200, res.text);
    ids.push(res.body.data.createPost.id);
  }
  const res = await gql(
    server.url,
    'mutation ($id: ID!) { deletePost(id: $id) { id } }',
    { id: ids[0] },
    bearer(me.accessToken),
  );
  assert.equal(res.status, 200, res.text);

  // Only this user's changes: other suites may write to the same database
  // meanwhile (PostgreSQL runs), and the trigger posts theirs too.
  const mine = () => receiver.received.filter((r) => r.change.record.ownerId === me.user.id);
  await until('seven verified calls', () => mine().length >= 7);
  // A little longer: a duplicate or a late extra would show now.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(receiver.rejected(), 0, 'every call verified');
  assert.equal(mine().length, 7, 'each change once');
  const creates = mine().filter((r) => r.change.action === 'create');
  assert.deepEqual(
    creates.map((r) => r.change.record.title).sort(),
    [...titles].sort(),
  );
  const del = mine().find((r) => r.change.action === 'delete');
  assert.ok(del, 'the delete was posted');
  assert.equal(del.change.record.id, ids[0]);
  for (const { change } of mine()) {
    assert.equal(change.trigger, 'post_changes');
    assert.equal(change.collection, 'posts');
    assert.equal(change.account, me.user.accountId);
    assert.match(change.cursor, /^\d+$/);
  }
});

test('the receiver refuses a call not signed with the secret', async () => {
  const before = receiver.rejected();
  const body = JSON.stringify({ trigger: 'post_changes', action: 'create' });
  const res = await fetch(receiver.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'webhook-id': 'forged',
      'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
      'webhook-signature': `v1,${randomBytes(32).toString('base64')}`,
    },
    body,
  });
  assert.equal(res.status, 400);
  assert.equal(receiver.rejected(), before + 1);
});
