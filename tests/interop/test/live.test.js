// Live queries (`query @live`, API.md §8) as real npm clients see them:
// graphql-ws's client with @n1ru4l/graphql-live-query-patch-json-patch's
// applyLiveQueryJSONPatch over it, subscriptions-transport-ws (the legacy
// protocol) and graphql-sse (distinct connections and single connection modes). The patch test is a randomized oracle: rounds of
// random creates, updates and deletes, after each of which the result the
// patches rebuilt must equal the query's answer over HTTP, exactly (as JSON
// values: the executor may order an object's keys differently run to run).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import { applyLiveQueryJSONPatch } from '@n1ru4l/graphql-live-query-patch-json-patch';
import { createClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import { SubscriptionClient } from 'subscriptions-transport-ws';

import { TEST_JWT_SECRET, bearer, gql, signUp, startServer, uniqueSuffix } from './helpers.js';
import { createPost, recordingWebSocket, wsUrl } from './realtime-helpers.js';
import { originOf } from './sse-helpers.js';

let server;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
});

after(async () => {
  await server?.stop();
});

const POSTS = `query ($p: String!) @live(patch: true, throttle: 0) {
  posts(where: { title: { startsWith: $p } }, orderBy: [{ field: TITLE }], limit: 100) { id title views published }
  postsCount(where: { title: { startsWith: $p } })
}`;

/** The same query, once, over HTTP. */
const ONCE = POSTS.replace('@live(patch: true, throttle: 0)', '');

/** Waits until `check()` holds, or fails naming `what` and the last state. */
async function until(what, check, describe, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${describe()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A source async iterable that records each raw payload it yields. */
function recording(source, raw) {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      return {
        next: async () => {
          const n = await it.next();
          if (!n.done) raw.push(n.value);
          return n;
        },
        return: () => it.return?.() ?? Promise.resolve({ done: true }),
      };
    },
  };
}

test('patches applied by applyLiveQueryJSONPatch rebuild every result exactly (random writes)', { timeout: 120_000 }, async () => {
  const me = await signUp(server.url);
  const p = `live-${uniqueSuffix()}-`;
  const rec = recordingWebSocket();
  const client = createClient({
    url: wsUrl(server.url),
    webSocketImpl: rec.WebSocket,
    connectionParams: { token: me.accessToken },
    retryAttempts: 0,
  });
  const raw = [];
  let latest;
  let failure;
  const results = applyLiveQueryJSONPatch(recording(client.iterate({ query: POSTS, variables: { p } }), raw));
  const reading = (async () => {
    try {
      for await (const r of results) latest = r;
    } catch (e) {
      failure = e;
    }
  })();
  await until('the first result', () => latest || failure, () => rec.describe());
  assert.equal(failure, undefined);
  assert.deepEqual(latest.data, { posts: [], postsCount: 0 });
  assert.equal(raw[0].revision, 1);

  // A seeded generator, so a failure can be replayed from its seed.
  let seed = Number.parseInt(uniqueSuffix(), 16) || 1;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const ids = [];
  const run = async (query, variables) => {
    const res = await gql(server.url, query, variables, bearer(me.accessToken));
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.errors, undefined, res.text);
    return res.body.data;
  };
  for (let round = 0; round < 6; round += 1) {
    const writes = 1 + Math.floor(random() * 8);
    for (let i = 0; i < writes; i += 1) {
      const pick = random();
      if (ids.length === 0 || pick < 0.4) {
        const title = `${p}${Math.floor(random() * 1000)}`;
        const data = await run('mutation ($t: String!) { createPost(input: { title: $t }) { id } }', { t: title });
        ids.push(data.createPost.id);
      } else if (pick < 0.8) {
        const id = ids[Math.floor(random() * ids.length)];
        await run('mutation ($id: ID!, $v: Int, $pub: Boolean) { updatePost(id: $id, input: { views: $v, published: $pub }) { id } }', {
          id,
          v: Math.floor(random() * 50),
          pub: random() < 0.5,
        });
      } else {
        const at = Math.floor(random() * ids.length);
        const [id] = ids.splice(at, 1);
        await run('mutation ($id: ID!) { deletePost(id: $id) { id } }', { id });
      }
      if (random() < 0.3) await new Promise((r) => setTimeout(r, Math.floor(random() * 30)));
    }
    const expected = await run(ONCE, { p });
    await until(
      `round ${round} to converge`,
      () => failure || isDeepStrictEqual(latest.data, expected),
      () => `seed ${seed}: got ${JSON.stringify(latest?.data)}, expected ${JSON.stringify(expected)}, ${failure}`,
    );
    assert.equal(failure, undefined, String(failure));
    assert.deepEqual(latest.data, expected);
  }
  assert.ok(raw.length > 2, 'several results');
  assert.ok(raw.slice(1).every((r) => Array.isArray(r.patch) && r.data === undefined), JSON.stringify(raw.slice(0, 3)));
  raw.forEach((r, i) => assert.equal(r.revision, i + 1, 'revisions count from 1 without a gap'));
  await client.dispose();
  await reading;
});

test('a live query over subscriptions-transport-ws and over graphql-sse, both modes', { timeout: 60_000 }, async (t) => {
  const me = await signUp(server.url);
  const p = `live-legacy-${uniqueSuffix()}-`;
  const query = `query ($p: String!) @live { postsCount(where: { title: { startsWith: $p } }) }`;

  const rec = recordingWebSocket();
  const legacy = new SubscriptionClient(wsUrl(server.url), { connectionParams: { token: me.accessToken }, reconnect: false }, rec.WebSocket);
  t.after(() => legacy.close());
  const overLegacy = [];
  const sub = legacy.request({ query, variables: { p } }).subscribe({ next: (v) => overLegacy.push(v), error: (e) => overLegacy.push({ error: String(e) }) });
  t.after(() => sub.unsubscribe());

  const origin = originOf(server.url);
  const sse = createSseClient({ url: `${origin}/graphql/stream`, headers: bearer(me.accessToken), retryAttempts: 0 });
  t.after(() => sse.dispose());
  const overSse = [];
  const stop = sse.subscribe({ query, variables: { p } }, { next: (v) => overSse.push(v), error: (e) => overSse.push({ error: String(e) }), complete: () => {} });
  t.after(() => stop());

  // graphql-sse's single connection mode (one reserved stream, operations POSTed).
  const single = createSseClient({ url: `${origin}/graphql/stream`, headers: bearer(me.accessToken), retryAttempts: 0, singleConnection: true });
  t.after(() => single.dispose());
  const overSingle = [];
  const stopSingle = single.subscribe({ query, variables: { p } }, { next: (v) => overSingle.push(v), error: (e) => overSingle.push({ error: String(e) }), complete: () => {} });
  t.after(() => stopSingle());

  const all = [overLegacy, overSse, overSingle];
  const describe = () => `legacy ${JSON.stringify(overLegacy)}, sse ${JSON.stringify(overSse)}, single ${JSON.stringify(overSingle)}`;
  await until('every first result', () => all.every((r) => r.length > 0), describe);
  for (const results of all) assert.deepEqual(results[0], { data: { postsCount: 0 }, revision: 1 }, describe());
  await createPost(server.url, me.accessToken, `${p}one`);
  await until('every second result', () => all.every((r) => r.length > 1), describe);
  for (const results of all) assert.deepEqual(results[1], { data: { postsCount: 1 }, revision: 2 }, describe());
});
