// GraphQL over SSE and the plain EventSource feed as real npm clients see them
// (/work/shared/API.md §2 endpoints and credentials, §4 realtime semantics):
// graphql-sse's createClient in both of its modes, the npm `eventsource`
// EventSource on /realtime, and a raw fetch reader where a test must send
// `Last-Event-ID` itself (graphql-sse's client never does). Writes go over HTTP
// with fetch unless a test says otherwise. Every test signs up its own users
// and titles its rows with a unique prefix, which subscriptions filter on.
//
// Streams that must be live before a write are proven live with canary rows
// (waitLive), as in realtime.test.js. Timing matters only in three places: the
// "nothing more arrives" windows (they make a failure visible sooner, never a
// pass), the npm eventsource's 3 s reconnect delay (it only costs time), and
// the token-expiry test, whose streams must go live within 4 s.
//
// Helpers (raw stream reader, recording fetch, cuttable TCP proxy, /metrics
// gauges) are in sse-helpers.js.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createClient } from 'graphql-sse';

import { TEST_JWT_SECRET, bearer, gql, signUp, startServer, uniqueSuffix } from './helpers.js';
import {
  Feed,
  WAIT_MS,
  assertIncreasing,
  compareCursors,
  createPost,
  deletePost,
  describeError,
  seenPostTitled,
  sleep,
  updatePost,
  waitLive,
} from './realtime-helpers.js';
import {
  cuttableProxy,
  eventSourceFeed,
  failFast,
  openStream,
  originOf,
  realtimeGauges,
  recordingFetch,
  waitForGauges,
  withExpiry,
} from './sse-helpers.js';

/** postChanged for posts whose title starts with $prefix, optionally only some actions. */
const POST_CHANGED = `subscription ($prefix: String!, $actions: [ChangeAction!]) {
  postChanged(actions: $actions, where: { title: { startsWith: $prefix } }) {
    action id cursor at record { id title ownerId }
  }
}`;

const NOTE_CHANGED = `subscription ($prefix: String!) {
  noteChanged(where: { title: { startsWith: $prefix } }) { action id cursor record { id title ownerId } }
}`;

const CHANGES_POSTS = 'subscription { changes(collections: ["posts"]) { collection action cursor at } }';

const CREATE_POST = 'mutation ($title: String!) { createPost(input: { title: $title }) { id title ownerId } }';

/** Per-test timeout: generous, since every wait inside has its own deadline. */
const TEST_TIMEOUT_MS = 60_000;

/** How long a stopped or out-of-scope stream is watched for an event that must not come. */
const QUIET_MS = 500;

let server;
let origin;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
  origin = originOf(server.url);
});

after(async () => {
  await server?.stop();
});

/** A unique title prefix for one test's rows. */
const newPrefix = (what) => `sse-${what}-${uniqueSuffix()}-`;

/**
 * A graphql-sse client on `${origin}/graphql/stream` with `token` as a bearer
 * header, recording its HTTP requests and every stream message. No retries, so
 * a failure shows at once. Returns `{ client, http, messages, describe }`.
 */
function sseClient(token, options = {}) {
  const http = recordingFetch();
  const messages = [];
  const client = createClient({
    url: `${origin}/graphql/stream`,
    headers: token ? bearer(token) : {},
    fetchFn: http.fetchFn,
    retryAttempts: 0,
    on: { message: (m) => messages.push(m) },
    ...options,
  });
  const describe = () =>
    `requests:\n${http.describe()}\nstream messages:\n${messages.map((m) => `  ${JSON.stringify(m)}`).join('\n') || '  (none)'}`;
  return { client, http, messages, describe };
}

/** Runs one operation through a graphql-sse client; returns its results once it completes. */
async function runOnce(client, describe, name, payload) {
  const feed = new Feed(name, describe);
  client.subscribe(payload, feed.sink);
  await feed.waitFor(() => feed.done, `${name} to complete`);
  return feed.items;
}

/**
 * The `field` payloads of a feed of GraphQL results, failing if one carries
 * errors or lacks data.field. Like realtime-helpers' `payloads`, but builds the
 * failure message only on failure: the waits below call it on every event.
 */
function payloads(feed, field) {
  return feed.items.map((item, i) => {
    if (item.errors !== undefined || !item.data?.[field]) {
      assert.fail(`expected result ${i} of ${feed.name} to carry data.${field} and no errors: ${feed.describe()}`);
    }
    return item.data[field];
  });
}

/** The postChanged events of a feed, without the canary posts waitLive made. */
function eventsOf(feed, canaries = []) {
  return payloads(feed, 'postChanged').filter((e) => !canaries.includes(e.record?.title));
}

/** Creates a note titled `title` over HTTP as the holder of `token`; returns it. */
async function createNote(token, title) {
  const res = await gql(server.url, 'mutation ($title: String!) { createNote(input: { title: $title }) { id title ownerId } }', { title }, bearer(token));
  assert.equal(res.body?.errors, undefined, `expected createNote ${JSON.stringify(title)} over HTTP to succeed: ${res.text}`);
  return res.body.data.createNote;
}

/**
 * Like waitLive, with canary notes of the holder of `token`: creates notes
 * titled `${prefix}canary-N` until `seen(items, title)`. Returns the titles.
 */
async function waitLiveNotes(feed, { token, prefix, seen, attempts = 40, every = 250 }) {
  const canaries = [];
  for (let n = 0; n < attempts; n += 1) {
    const title = `${prefix}canary-${n}`;
    canaries.push(title);
    await createNote(token, title);
    try {
      await feed.waitFor((items) => canaries.some((t) => seen(items, t)), `a canary note (${title})`, every);
      return canaries;
    } catch (err) {
      if (feed.error !== undefined || feed.done) throw err;
    }
  }
  throw new Error(`expected ${feed.name} to go live (deliver one of ${attempts} canary notes): ${feed.describe()}`);
}

/** Resolves `promise`'s value, or rejects at once if `background` rejects first. */
function unlessFailed(promise, background) {
  promise.catch(() => {}); // if the background wins, this wait's own timeout is moot
  return Promise.race([promise, failFast(background)]);
}

/** Waits until `list()` is non-empty and resolves to its first element. */
async function firstOf(feed, list, what) {
  const found = await feed.waitFor(() => {
    const l = list();
    return l.length ? l : undefined;
  }, what);
  return found[0];
}

/** A promise with its resolve function, for gating a background writer. */
function gate() {
  let open;
  const opened = new Promise((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

describe('graphql-sse client, distinct connections mode', () => {
  test('a query, a mutation and a postChanged subscription each run on a stream of their own; disposing the subscription ends its stream on the server', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('distinct');
    const start = await realtimeGauges(server.url);
    const { client, http, describe: wire } = sseClient(token, { singleConnection: false });
    t.after(() => client.dispose());

    const query = await runOnce(client, wire, 'me over graphql-sse', { query: '{ me { id email } }' });
    assert.deepEqual(
      query,
      [{ data: { me: { id: session.user.id, email: session.user.email } } }],
      `expected me over graphql-sse (bearer header) to be the signed-up user, in one result: ${wire()}`,
    );

    const title = `${prefix}created-over-sse`;
    const mutation = await runOnce(client, wire, 'createPost over graphql-sse', { query: CREATE_POST, variables: { title } });
    assert.equal(mutation.length, 1, `expected exactly one result for the mutation, then complete: ${wire()}`);
    assert.equal(mutation[0].errors, undefined, `expected createPost over graphql-sse to succeed: ${wire()}`);
    const created = mutation[0].data?.createPost;
    assert.equal(created?.title, title, `expected createPost over graphql-sse to return the new post: ${wire()}`);
    assert.equal(created.ownerId, session.user.id, `expected the bearer token's user to own the post created over graphql-sse: ${wire()}`);
    const readBack = await gql(server.url, 'query ($id: ID!) { post(id: $id) { id title } }', { id: created.id });
    assert.deepEqual(readBack.body, { data: { post: { id: created.id, title } } }, `expected the post created over graphql-sse to be committed: ${readBack.text}`);

    const feed = new Feed('postChanged over graphql-sse', wire);
    const dispose = client.subscribe({ query: POST_CHANGED, variables: { prefix } }, feed.sink);
    const canaries = await waitLive(feed, { url: server.url, token, prefix, seen: seenPostTitled });
    const post = await createPost(server.url, token, `${prefix}written-over-http`);
    await feed.waitFor(() => eventsOf(feed, canaries).some((e) => e.id === post.id), `a postChanged event for post ${post.id}`);
    const events = eventsOf(feed, canaries);
    assert.deepEqual(
      events.map((e) => [e.action, e.id, e.record?.title, e.record?.ownerId]),
      [['CREATE', post.id, `${prefix}written-over-http`, session.user.id]],
      `expected exactly one CREATE for the HTTP-written post (and nothing for the post created before subscribing): ${feed.describe()}`,
    );
    assert.ok(Number.isFinite(Date.parse(events[0].at)), `expected the event's at to be a date-time: ${feed.describe()}`);
    assertIncreasing(payloads(feed, 'postChanged').map((e) => e.cursor), 'the postChanged events (canaries included)');

    // Distinct connections: one POST per operation, each an event stream with the bearer header.
    assert.deepEqual(
      http.requests.map((r) => [r.method, r.path, r.status, r.headers.accept, r.headers.authorization]),
      Array.from({ length: 3 }, () => ['POST', '/graphql/stream', 200, 'text/event-stream', `Bearer ${token}`]),
      `expected three POST /graphql/stream requests accepting text/event-stream with the bearer header, each answered 200: ${wire()}`,
    );
    await waitForGauges(
      server.url,
      (g) => g.sse === start.sse + 1,
      `exactly one open graphql-sse stream on the server (the subscription's; the query's and the mutation's ended with complete), from ${start.sse}`,
    );

    dispose();
    await feed.waitFor(() => feed.done, 'the disposed subscription to complete in the client');
    assert.equal(feed.error, undefined, `expected dispose to complete the subscription without an error: ${feed.describe()}`);
    await waitForGauges(
      server.url,
      (g) => g.sse === start.sse && g.subscriptions === start.subscriptions,
      `the server to close the disposed subscription's stream and stop its subscription (back to ${JSON.stringify({ sse: start.sse, subscriptions: start.subscriptions })})`,
    );
  });
});

describe('graphql-sse client, single connection mode', () => {
  test('two subscriptions share one reserved stream; disposing one stops it (DELETE, nothing more on the wire) while the other keeps receiving', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('single');
    let nextId = 0;
    const { client, http, messages, describe: wire } = sseClient(token, {
      singleConnection: true,
      generateID: () => `op-${(nextId += 1)}`,
    });
    t.after(() => client.dispose());

    // op-1: postChanged; op-2: changes(posts). Both on the one stream.
    const posts = new Feed('postChanged (op-1)', wire);
    const disposePosts = client.subscribe({ query: POST_CHANGED, variables: { prefix } }, posts.sink);
    const hints = new Feed('changes(posts) (op-2)', wire);
    client.subscribe({ query: CHANGES_POSTS }, hints.sink);
    const canaries = await waitLive(posts, { url: server.url, token, prefix, seen: seenPostTitled });
    await waitLive(hints, { url: server.url, token, prefix: `${prefix}hints-`, seen: (items) => items.length > 0 });

    const one = await createPost(server.url, token, `${prefix}one`);
    const created = await firstOf(posts, () => eventsOf(posts, canaries).filter((e) => e.id === one.id), `op-1 to receive the CREATE of post ${one.id}`);
    assert.equal(created.action, 'CREATE', `expected a CREATE for post ${one.id}: ${posts.describe()}`);
    await hints.waitFor(
      () => payloads(hints, 'changes').some((h) => h.cursor === created.cursor),
      `op-2 to receive the hint with cursor ${created.cursor} of post ${one.id}`,
    );
    assert.deepEqual(
      payloads(hints, 'changes').filter((h) => h.cursor === created.cursor).map((h) => [h.collection, h.action]),
      [['posts', 'CREATE']],
      `expected one { collection: "posts", action: CREATE } hint for the post's cursor: ${hints.describe()}`,
    );

    // The protocol on the wire: one PUT (201, the token), one GET event stream
    // with the token, a POST (202) per operation carrying its operationId.
    const reservation = http.requests.filter((r) => r.method === 'PUT');
    const streams = http.requests.filter((r) => r.method === 'GET');
    assert.deepEqual(reservation.map((r) => [r.path, r.status]), [['/graphql/stream', 201]], `expected one PUT reservation answered 201: ${wire()}`);
    assert.deepEqual(
      streams.map((r) => [r.path, r.status, r.headers.accept]),
      [['/graphql/stream', 200, 'text/event-stream']],
      `expected exactly one GET event stream for both operations: ${wire()}`,
    );
    const streamToken = streams[0].headers['x-graphql-event-stream-token'];
    assert.match(String(streamToken), /^\S+$/, `expected the stream GET to carry the reservation token: ${wire()}`);
    const operations = http.requests.filter((r) => r.method === 'POST');
    assert.deepEqual(
      operations
        .map((r) => [r.status, r.headers['x-graphql-event-stream-token'], JSON.parse(r.body).extensions?.operationId])
        .sort((x, y) => x[2].localeCompare(y[2])),
      [
        [202, streamToken, 'op-1'],
        [202, streamToken, 'op-2'],
      ],
      `expected each operation POSTed with the stream token and its operationId, answered 202: ${wire()}`,
    );

    // Stop op-1. The client DELETEs it; the server answers 200.
    const seenByPosts = posts.items.length;
    disposePosts();
    await posts.waitFor(() => posts.done, 'op-1 to complete once disposed');
    assert.equal(posts.error, undefined, `expected op-1 to complete without an error: ${posts.describe()}`);
    const deletes = http.requests.filter((r) => r.method === 'DELETE');
    assert.deepEqual(
      deletes.map((r) => [r.path, r.status, r.headers['x-graphql-event-stream-token']]),
      [['/graphql/stream?operationId=op-1', 200, streamToken]],
      `expected one DELETE ?operationId=op-1 with the stream token, answered 200: ${wire()}`,
    );
    const messagesAtStop = messages.length;

    // A new postChanged (op-3) on the same stream goes live with canaries that
    // op-1's filter matches too: had op-1 not stopped, it would get them.
    const again = new Feed('postChanged (op-3, after op-1 stopped)', wire);
    client.subscribe({ query: POST_CHANGED, variables: { prefix } }, again.sink);
    const againCanaries = await waitLive(again, { url: server.url, token, prefix: `${prefix}again-`, seen: seenPostTitled });
    const two = await createPost(server.url, token, `${prefix}two`);
    const second = await firstOf(again, () => eventsOf(again, againCanaries).filter((e) => e.id === two.id), `op-3 to receive the CREATE of post ${two.id}`);
    await hints.waitFor(
      () => payloads(hints, 'changes').some((h) => h.cursor === second.cursor),
      `op-2 (still running) to receive the hint with cursor ${second.cursor} of post ${two.id}`,
    );
    await sleep(QUIET_MS);

    assert.equal(posts.items.length, seenByPosts, `expected op-1 to receive nothing after its dispose: ${posts.describe()}`);
    assert.deepEqual(
      messages.slice(messagesAtStop).filter((m) => m.data?.id === 'op-1'),
      [],
      `expected no stream message for op-1 after its DELETE: ${wire()}`,
    );
    assert.equal(hints.error, undefined, `expected op-2 to keep running: ${hints.describe()}`);
    assert.equal(hints.done, false, `expected op-2 to keep running: ${hints.describe()}`);
    assert.equal(
      http.requests.filter((r) => r.method === 'PUT' || r.method === 'GET').length,
      2,
      `expected all three operations to share the one reserved stream (one PUT, one GET): ${wire()}`,
    );
    assertIncreasing(payloads(hints, 'changes').map((h) => h.cursor), 'the hints of op-2');
  });
});

describe('graphql-sse client, request errors', () => {
  for (const singleConnection of [false, true]) {
    const mode = singleConnection ? 'single connection' : 'distinct connections';
    test(`in ${mode} mode, a subscription with an unknown field or a syntax error yields one result with the error, then completes`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const session = await signUp(server.url);
      const { client, describe: wire } = sseClient(session.accessToken, { singleConnection });
      t.after(() => client.dispose());
      const cases = [
        ['an unknown field', 'subscription { postChangedTypo { id } }', 'GRAPHQL_VALIDATION_FAILED', /postChangedTypo/],
        ['a syntax error', 'subscription { postChanged { id }', 'GRAPHQL_PARSE_FAILED', /./],
      ];
      for (const [what, query, code, message] of cases) {
        const results = await runOnce(client, wire, `a subscription with ${what} (${mode})`, { query });
        assert.equal(results.length, 1, `expected exactly one result for a subscription with ${what}, then complete: ${wire()}`);
        const [result] = results;
        assert.equal(result.data, undefined, `expected no data for a subscription with ${what}: ${wire()}`);
        assert.equal(result.errors?.length, 1, `expected one error for a subscription with ${what}: ${wire()}`);
        assert.equal(result.errors[0].extensions?.code, code, `expected the error of a subscription with ${what} to be ${code}: ${wire()}`);
        assert.match(result.errors[0].message, message, `expected the error message to name the problem: ${wire()}`);
      }
    });
  }

  test('a bad bearer token is refused with 401 and graphql-sse reports it as an error, without retrying', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    for (const singleConnection of [false, true]) {
      const { client, http, describe: wire } = sseClient('not-a-jwt.garbage.token', { singleConnection });
      t.after(() => client.dispose());
      const feed = new Feed(`postChanged with a bad token (singleConnection: ${singleConnection})`, wire);
      client.subscribe({ query: POST_CHANGED, variables: { prefix: newPrefix('badtoken') } }, feed.sink);
      const err = await feed.waitForError('the subscription to fail with a bad token');
      assert.equal(err?.name, 'NetworkError', `expected graphql-sse to report a NetworkError, got ${describeError(err)}: ${wire()}`);
      assert.equal(err.response?.status, 401, `expected the server to refuse the bad token with 401, got ${describeError(err)}: ${wire()}`);
      await sleep(300);
      assert.equal(http.requests.length, 1, `expected exactly one request (no retry, no stream opened) with a bad token: ${wire()}`);
      assert.equal(feed.items.length, 0, `expected no results with a bad token: ${feed.describe()}`);
    }
  });
});

describe('EventSource (npm eventsource) on /realtime', () => {
  test('receives `change` events whose lastEventId is the cursor of the matching postChanged event, for the listed collections only', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('es');

    // A graphql-sse subscription ties each post to its cursor.
    const { client, describe: wire } = sseClient(token);
    t.after(() => client.dispose());
    const reference = new Feed('postChanged (reference)', wire);
    client.subscribe({ query: POST_CHANGED, variables: { prefix } }, reference.sink);
    const canaries = await waitLive(reference, { url: server.url, token, prefix, seen: seenPostTitled });

    const es = eventSourceFeed(`${origin}/realtime?collections=posts&access_token=${encodeURIComponent(token)}`, { name: 'EventSource /realtime?collections=posts' });
    t.after(() => es.es.close());
    await waitLive(es.feed, { url: server.url, token, prefix: `${prefix}es-`, seen: (items) => items.length > 0 });
    assert.equal(es.es.readyState, 1, `expected the EventSource to be OPEN: ${es.describe()}`);

    // A note first: another collection, which this feed must not carry.
    await createNote(token, `${prefix}a note`);
    const post = await createPost(server.url, token, `${prefix}tracked`);
    await updatePost(server.url, token, post.id, `${prefix}tracked-renamed`);
    await deletePost(server.url, token, post.id);
    await reference.waitFor(
      () => eventsOf(reference, canaries).filter((e) => e.id === post.id).length >= 3,
      `the CREATE, UPDATE and DELETE of post ${post.id} on the reference subscription`,
    );
    const tracked = eventsOf(reference, canaries).filter((e) => e.id === post.id);
    assert.deepEqual(tracked.map((e) => e.action), ['CREATE', 'UPDATE', 'DELETE'], `expected the reference to see CREATE, UPDATE, DELETE: ${reference.describe()}`);
    await es.feed.waitFor(
      (items) => tracked.every((e) => items.some((i) => i.lastEventId === e.cursor)),
      `change events with the cursors ${JSON.stringify(tracked.map((e) => e.cursor))} of the post's CREATE, UPDATE and DELETE`,
    );

    assert.deepEqual(
      tracked.map((e) => es.feed.items.filter((i) => i.lastEventId === e.cursor).map((i) => i.data)),
      [
        [{ collection: 'posts', action: 'create' }],
        [{ collection: 'posts', action: 'update' }],
        [{ collection: 'posts', action: 'delete' }],
      ],
      `expected one change event per cursor, data { collection: "posts", action } with the action in lowercase: ${es.feed.describe()}`,
    );
    assert.ok(
      es.feed.items.every((i) => i.data?.collection === 'posts' && Object.keys(i.data).sort().join() === 'action,collection'),
      `expected only posts changes (not the note), carrying no row data: ${es.feed.describe()}`,
    );
    assertIncreasing(es.feed.items.map((i) => i.lastEventId), 'the change events, in arrival order');
    assert.deepEqual(es.errors, [], `expected no error events: ${es.describe()}`);
    assert.equal(es.http.requests.length, 1, `expected one connection: ${es.describe()}`);
    assert.equal(es.http.requests[0].headers.accept, 'text/event-stream', `expected the EventSource to accept text/event-stream: ${es.describe()}`);
  });

  test('a cut connection: EventSource reconnects by itself with Last-Event-ID, and 60 posts written around the cut each arrive exactly once, in cursor order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('es-resume');
    const N = 60;
    const titles = Array.from({ length: N }, (_, i) => `${prefix}post-${String(i).padStart(2, '0')}`);

    // The reference: a graphql-sse subscription (never cut) gives each post's cursor.
    const { client, describe: wire } = sseClient(token);
    t.after(() => client.dispose());
    const reference = new Feed('postChanged (reference, never cut)', wire);
    client.subscribe({ query: POST_CHANGED, variables: { prefix, actions: ['CREATE'] } }, reference.sink);
    await waitLive(reference, { url: server.url, token, prefix, seen: seenPostTitled });
    const cursorOf = (title) => eventsOf(reference).find((e) => e.record?.title === title)?.cursor;

    // The EventSource goes through a proxy whose sockets the test cuts.
    const proxy = await cuttableProxy(origin);
    t.after(() => proxy.close());
    const es = eventSourceFeed(`${proxy.url}/realtime?collections=posts&access_token=${encodeURIComponent(token)}`, { name: 'EventSource via the proxy' });
    t.after(() => es.es.close());
    await waitLive(es.feed, { url: server.url, token, prefix: `${prefix}es-`, seen: (items) => items.length > 0 });
    const live = es.feed.items.length;

    // One writer, continuously: posts 0-19 while the stream is up (the cut
    // comes once 5 of them arrived, so the rest are in flight or written
    // after), 20-39 while the EventSource is disconnected, 40-59 the moment
    // its reconnect reaches the server, racing the replay.
    const cutDone = gate();
    const reconnected = gate();
    const created = [];
    const writing = (async () => {
      for (let i = 0; i < N; i += 1) {
        if (i === 20) await cutDone.opened;
        if (i === 40) await reconnected.opened;
        created.push(await createPost(server.url, token, titles[i]));
      }
    })();
    writing.catch(() => {});

    await unlessFailed(es.feed.waitFor((items) => items.length >= live + 5, 'five change events before the cut'), writing);
    assert.equal(proxy.requests().length, 1, `expected one connection before the cut: ${es.describe()}`);
    proxy.cut();
    // The EventSource notices (an error event, readyState CONNECTING) and reconnects after its retry delay (3 s).
    await unlessFailed(
      es.feed.waitFor(() => es.errors.length > 0, 'an error event for the cut connection'),
      writing,
    );
    const firstConnection = es.feed.items.filter((i) => i.connection === 1);
    const lastIdBeforeCut = firstConnection.at(-1).lastEventId;
    assert.equal(es.es.readyState, 0, `expected the EventSource to be CONNECTING (reconnecting) after the cut: ${es.describe()}`);
    cutDone.open();

    const [, resume] = await unlessFailed(proxy.waitForRequests(2, 'the EventSource to reconnect through the proxy'), writing);
    reconnected.open();
    await writing;
    assert.equal(created.length, N, 'expected the writer to create every post');

    // Everything, then a sentinel written last, so a late duplicate cannot slip by.
    await reference.waitFor(() => titles.every((title) => cursorOf(title)), `the reference subscription to see all ${N} posts`);
    const cursors = titles.map(cursorOf);
    await es.feed.waitFor(
      (items) => {
        const received = new Set(items.map((i) => i.lastEventId));
        return cursors.every((c) => received.has(c));
      },
      `change events for all ${N} posts across the cut (cursors ${cursors[0]}..${cursors.at(-1)})`,
    );
    const sentinel = await createPost(server.url, token, `${prefix}sentinel`);
    await reference.waitFor(() => cursorOf(sentinel.title), 'the sentinel on the reference subscription');
    await es.feed.waitFor((items) => items.some((i) => i.lastEventId === cursorOf(sentinel.title)), 'the sentinel change event after the 60 posts');

    const context = `EventSource events:\n${es.feed.describe()}\nrequests through the proxy: ${JSON.stringify(proxy.requests())}`;
    assert.equal(
      resume.headers['last-event-id'],
      lastIdBeforeCut,
      `expected the reconnect to send Last-Event-ID: ${lastIdBeforeCut}, the id of the last event dispatched before the cut: ${context}`,
    );
    assert.equal(resume.path, proxy.requests()[0].path, `expected the reconnect to request the same URL: ${context}`);
    assert.equal(proxy.requests().length, 2, `expected exactly one reconnect: ${context}`);
    assert.equal(es.es.readyState, 1, `expected the EventSource to be OPEN again: ${context}`);

    const ids = es.feed.items.map((i) => i.lastEventId);
    const counts = cursors.map((c) => ids.filter((id) => id === c).length);
    assert.deepEqual(
      titles.filter((_, i) => counts[i] === 0),
      [],
      `expected no post to be missing across the cut (no gap): ${context}`,
    );
    assert.deepEqual(
      titles.filter((_, i) => counts[i] > 1),
      [],
      `expected no post to be delivered twice across the cut (no duplicate): ${context}`,
    );
    assertIncreasing(ids, 'every change event across both connections, in arrival order');
    assert.ok(
      es.feed.items.filter((i) => i.connection === 2).every((i) => compareCursors(i.lastEventId, lastIdBeforeCut) > 0),
      `expected the resumed connection to replay nothing at or before ${lastIdBeforeCut}: ${context}`,
    );
    assert.ok(
      cursors.slice(20, 40).every((c) => es.feed.items.some((i) => i.connection === 2 && i.lastEventId === c)),
      `expected the posts written while disconnected (20-39) to be replayed on the second connection: ${context}`,
    );
    assert.ok(
      es.feed.items.every((i) => i.data?.collection === 'posts' && i.data?.action === 'create'),
      `expected only posts creates: ${context}`,
    );
  });
});

describe('graphql-sse distinct stream resumed with Last-Event-ID (raw fetch reader)', () => {
  test('a stream cut by the client and reopened with Last-Event-ID delivers 30 posts written around the cut exactly once, in cursor order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('sse-resume');
    const N = 30;
    const titles = Array.from({ length: N }, (_, i) => `${prefix}post-${String(i).padStart(2, '0')}`);
    const variables = { prefix, actions: ['CREATE'] };
    const nexts = (feed) => feed.items.filter((e) => e.event === 'next');
    const changeOf = (e) => e.data?.data?.postChanged;
    const seen = (items, title) => items.some((e) => e.event === 'next' && changeOf(e)?.record?.title === title);

    // First stream: POST /graphql/stream, as graphql-sse's distinct mode sends it.
    const first = await openStream(`${origin}/graphql/stream`, {
      method: 'POST',
      headers: { ...bearer(token), 'content-type': 'application/json' },
      body: JSON.stringify({ query: POST_CHANGED, variables }),
      name: 'first stream (POST /graphql/stream)',
    });
    assert.equal(first.status, 200, `expected the first stream to open: ${first.text}`);
    t.after(() => first.abort());
    await waitLive(first.feed, { url: server.url, token, prefix, seen });
    const live = nexts(first.feed).length;

    const cutDone = gate();
    const reached20 = gate();
    const resumed = gate();
    const created = [];
    const writing = (async () => {
      for (let i = 0; i < N; i += 1) {
        if (i === 10) await cutDone.opened;
        if (i === 20) {
          reached20.open();
          await resumed.opened;
        }
        created.push(await createPost(server.url, token, titles[i]));
      }
    })();
    writing.catch(() => {});

    // Posts 0-9 go out; the client cuts its stream once 5 arrived.
    await unlessFailed(first.feed.waitFor(() => nexts(first.feed).length >= live + 5, 'five events before the cut'), writing);
    first.abort();
    await first.feed.waitFor(() => first.feed.done, 'the first stream to end once aborted');
    const lastId = nexts(first.feed).at(-1).id;
    cutDone.open();
    // Posts 10-19 are written while no stream is open.
    await unlessFailed(reached20.opened, writing);

    // Second stream: GET /graphql with Accept: text/event-stream and Last-Event-ID;
    // posts 20-29 are written as soon as it is open, racing the replay.
    const params = new URLSearchParams({ query: POST_CHANGED, variables: JSON.stringify(variables) });
    const second = await openStream(`${origin}/graphql?${params}`, {
      headers: { ...bearer(token), 'last-event-id': lastId },
      name: `second stream (GET /graphql, Last-Event-ID: ${lastId})`,
    });
    resumed.open();
    assert.equal(second.status, 200, `expected the resumed stream to open: ${second.text}`);
    t.after(() => second.abort());
    await writing;

    const all = () => [...nexts(first.feed), ...nexts(second.feed)];
    const mine = () => all().filter((e) => titles.includes(changeOf(e)?.record?.title));
    const context = () => `${first.feed.describe()}\n${second.feed.describe()}`;
    await second.feed.waitFor(
      () => titles.every((title) => mine().some((e) => changeOf(e).record.title === title)),
      `all ${N} posts across both streams (the first got ${nexts(first.feed).length - live} before its cut, after ${lastId})`,
    );
    const sentinel = await createPost(server.url, token, `${prefix}sentinel`);
    await second.feed.waitFor(() => nexts(second.feed).some((e) => changeOf(e)?.id === sentinel.id), 'the sentinel after the 30 posts');

    for (const e of all()) {
      assert.equal(e.data?.errors, undefined, `expected no errors in the stream: ${context()}`);
      assert.equal(e.id, changeOf(e)?.cursor, `expected each next event's SSE id to be its postChanged cursor: ${context()}`);
    }
    const received = mine();
    const counts = new Map(titles.map((title) => [title, 0]));
    for (const e of received) counts.set(changeOf(e).record.title, counts.get(changeOf(e).record.title) + 1);
    assert.deepEqual(titles.filter((title) => counts.get(title) === 0), [], `expected no post to be missing across the cut (no gap): ${context()}`);
    assert.deepEqual(titles.filter((title) => counts.get(title) > 1), [], `expected no post to be delivered twice across the cut (no duplicate): ${context()}`);
    assert.deepEqual(
      received.map((e) => changeOf(e).id),
      created.map((p) => p.id),
      `expected the ${N} CREATE events in the order the posts were written: ${context()}`,
    );
    assertIncreasing(all().map((e) => e.id), 'every next event across both streams, in arrival order');
    assert.ok(
      nexts(second.feed).every((e) => compareCursors(e.id, lastId) > 0),
      `expected the resumed stream to replay nothing at or before ${lastId}: ${context()}`,
    );
    assert.equal(second.feed.done, false, `expected the resumed stream to stay open: ${context()}`);
    assert.equal(second.feed.error, undefined, `expected the resumed stream not to fail: ${context()}`);
  });
});

describe('scoping over SSE (notes are owner-only, hints = "readers")', () => {
  test("user B's noteChanged and /realtime?collections=notes get nothing of user A's note, while A's get it", { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const a = await signUp(server.url);
    const b = await signUp(server.url);
    const prefix = newPrefix('notes');
    const noteSeen = (items, title) => items.some((i) => i.data?.noteChanged?.record?.title === title);

    const clientA = sseClient(a.accessToken);
    const clientB = sseClient(b.accessToken);
    t.after(() => clientA.client.dispose());
    t.after(() => clientB.client.dispose());
    const subA = new Feed("A's noteChanged", clientA.describe);
    const subB = new Feed("B's noteChanged", clientB.describe);
    clientA.client.subscribe({ query: NOTE_CHANGED, variables: { prefix } }, subA.sink);
    clientB.client.subscribe({ query: NOTE_CHANGED, variables: { prefix } }, subB.sink);
    await waitLiveNotes(subA, { token: a.accessToken, prefix: `${prefix}a-`, seen: noteSeen });
    await waitLiveNotes(subB, { token: b.accessToken, prefix: `${prefix}b-`, seen: noteSeen });

    // A's feed takes ?token=, B's the Authorization header.
    const esA = eventSourceFeed(`${origin}/realtime?collections=notes&token=${encodeURIComponent(a.accessToken)}`, { name: "A's /realtime?collections=notes" });
    const esB = eventSourceFeed(`${origin}/realtime?collections=notes`, { headers: bearer(b.accessToken), name: "B's /realtime?collections=notes" });
    t.after(() => esA.es.close());
    t.after(() => esB.es.close());
    await waitLiveNotes(esA.feed, { token: a.accessToken, prefix: `${prefix}a-es-`, seen: (items) => items.length > 0 });
    await waitLiveNotes(esB.feed, { token: b.accessToken, prefix: `${prefix}b-es-`, seen: (items) => items.length > 0 });

    // A writes a note; then B writes one, which B's streams get after anything
    // earlier (each stream is in cursor order); then A once more, likewise.
    const secret = await createNote(a.accessToken, `${prefix}secret-of-a`);
    const aEvent = await firstOf(subA, () => payloads(subA, 'noteChanged').filter((e) => e.id === secret.id), `A's noteChanged to get A's note ${secret.id}`);
    await esA.feed.waitFor((items) => items.some((i) => i.lastEventId === aEvent.cursor), `A's feed to get the change with cursor ${aEvent.cursor} of A's note`);
    const sentinelB = await createNote(b.accessToken, `${prefix}sentinel-of-b`);
    const bEvent = await firstOf(subB, () => payloads(subB, 'noteChanged').filter((e) => e.id === sentinelB.id), `B's noteChanged to get B's note ${sentinelB.id}`);
    await esB.feed.waitFor((items) => items.some((i) => i.lastEventId === bEvent.cursor), `B's feed to get the change with cursor ${bEvent.cursor} of B's note`);
    const sentinelA = await createNote(a.accessToken, `${prefix}sentinel-of-a`);
    const a2Event = await firstOf(subA, () => payloads(subA, 'noteChanged').filter((e) => e.id === sentinelA.id), `A's noteChanged to get A's second note ${sentinelA.id}`);
    await esA.feed.waitFor((items) => items.some((i) => i.lastEventId === a2Event.cursor), `A's feed to get the change of A's second note`);
    await sleep(QUIET_MS);

    assert.deepEqual(
      payloads(subB, 'noteChanged').filter((e) => e.record?.ownerId !== b.user.id),
      [],
      `expected B's noteChanged to carry only B's own notes (not A's note ${secret.id}): ${subB.describe()}`,
    );
    assert.deepEqual(
      payloads(subA, 'noteChanged').filter((e) => e.record?.ownerId !== a.user.id),
      [],
      `expected A's noteChanged to carry only A's own notes (not B's note ${sentinelB.id}): ${subA.describe()}`,
    );
    const cursorsOf = (feed) => new Set(payloads(feed, 'noteChanged').map((e) => e.cursor));
    const bCursors = cursorsOf(subB);
    const aCursors = cursorsOf(subA);
    assert.ok(
      !esB.feed.items.some((i) => i.lastEventId === aEvent.cursor || i.lastEventId === a2Event.cursor),
      `expected B's /realtime feed not to hint A's notes (cursors ${aEvent.cursor}, ${a2Event.cursor}): ${esB.feed.describe()}`,
    );
    assert.deepEqual(
      esB.feed.items.filter((i) => !bCursors.has(i.lastEventId)),
      [],
      `expected every change on B's feed to be one of B's own notes (cursors ${[...bCursors]}): ${esB.feed.describe()}`,
    );
    assert.deepEqual(
      esA.feed.items.filter((i) => !aCursors.has(i.lastEventId)),
      [],
      `expected every change on A's feed to be one of A's own notes (cursors ${[...aCursors]}): ${esA.feed.describe()}`,
    );
    assert.deepEqual(
      esA.feed.items.filter((i) => i.lastEventId === aEvent.cursor).map((i) => i.data),
      [{ collection: 'notes', action: 'create' }],
      `expected A's feed to carry A's note as one { collection: "notes", action: "create" }: ${esA.feed.describe()}`,
    );
    for (const [name, feed] of [
      ["A's feed", esA],
      ["B's feed", esB],
    ]) {
      assertIncreasing(feed.feed.items.map((i) => i.lastEventId), name);
      assert.deepEqual(feed.errors, [], `expected no error events on ${name}: ${feed.describe()}`);
    }
  });
});

describe('/realtime refusals', () => {
  test('bad credentials (401) and an unknown collection (400) fail the EventSource for good: an error event with the status, no reconnect', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = encodeURIComponent(session.accessToken);
    const cases = [
      ['a bad ?access_token=', `${origin}/realtime?collections=posts&access_token=not-a-jwt.garbage.token`, {}, 401],
      ['a bad ?token=', `${origin}/realtime?collections=posts&token=not-a-jwt.garbage.token`, {}, 401],
      ['a bad Authorization header', `${origin}/realtime?collections=posts`, bearer('not-a-jwt.garbage.token'), 401],
      ['an unknown collection', `${origin}/realtime?collections=posts,nope&access_token=${token}`, {}, 400],
    ];
    for (const [what, url, headers, status] of cases) {
      const es = eventSourceFeed(url, { headers, name: `EventSource with ${what}` });
      t.after(() => es.es.close());
      await es.feed.waitFor(() => es.errors.length > 0, `an error event for ${what}`);
      await sleep(300);
      assert.deepEqual(
        es.errors.map((e) => [e.code, e.readyState]),
        [[status, 2]],
        `expected one error event with code ${status} and the EventSource CLOSED for ${what}: ${es.describe()}`,
      );
      assert.equal(es.http.requests.length, 1, `expected no reconnect for ${what}: ${es.describe()}`);
      assert.equal(es.opens, 0, `expected no open event for ${what}: ${es.describe()}`);
    }
  });

  test('a Last-Event-ID or ?after= that is not a cursor of this server is a 400 with BAD_USER_INPUT', { timeout: TEST_TIMEOUT_MS }, async () => {
    const session = await signUp(server.url);
    const cases = [
      ['Last-Event-ID: not-a-cursor', '', { 'last-event-id': 'not-a-cursor' }],
      ['Last-Event-ID beyond the newest event', '', { 'last-event-id': '999999999999' }],
      ['?after=not-a-cursor', '&after=not-a-cursor', {}],
    ];
    for (const [what, query, headers] of cases) {
      const res = await openStream(`${origin}/realtime?collections=posts${query}`, { headers: { ...bearer(session.accessToken), ...headers } });
      if (res.status === 200) res.abort();
      assert.equal(res.status, 400, `expected 400 for ${what}, got ${res.status}: ${res.text ?? '(an open stream)'}`);
      assert.equal(JSON.parse(res.text).errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `expected BAD_USER_INPUT for ${what}: ${res.text}`);
    }
  });
});

describe('token expiry', () => {
  test('an access token that expires ends its streams: /realtime (the EventSource sees the end), a graphql-sse subscription (an error) and a raw graphql-sse stream', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('expiry');
    // Expires 4 s from now (whole seconds): time to go live, little to wait.
    const exp = Math.floor(Date.now() / 1000) + 4;
    const short = withExpiry(token, exp);

    const es = eventSourceFeed(`${origin}/realtime?collections=posts&access_token=${encodeURIComponent(short)}`, { name: 'EventSource with an expiring token' });
    t.after(() => es.es.close());
    const { client, describe: wire } = sseClient(short);
    t.after(() => client.dispose());
    const feed = new Feed('postChanged over graphql-sse with an expiring token', wire);
    client.subscribe({ query: POST_CHANGED, variables: { prefix } }, feed.sink);
    const raw = await openStream(`${origin}/graphql/stream`, {
      method: 'POST',
      headers: { ...bearer(short), 'content-type': 'application/json' },
      body: JSON.stringify({ query: POST_CHANGED, variables: { prefix } }),
      name: 'raw graphql-sse stream with an expiring token',
    });
    assert.equal(raw.status, 200, `expected the raw stream to open: ${raw.text}`);
    t.after(() => raw.abort());
    // Writes use the long-lived token.
    await waitLive(feed, { url: server.url, token, prefix, seen: seenPostTitled });
    await waitLive(raw.feed, { url: server.url, token, prefix: `${prefix}raw-`, seen: (items) => items.some((e) => e.event === 'next') });
    await waitLive(es.feed, { url: server.url, token, prefix: `${prefix}es-`, seen: (items) => items.length > 0 });
    assert.ok(Date.now() < exp * 1000, 'expected the streams to be live before the token expires (took too long to go live)');

    const ms = exp * 1000 - Date.now() + WAIT_MS;
    await raw.feed.waitFor(() => raw.feed.done, 'the raw stream to end when its token expires', ms).catch((err) => {
      throw raw.feed.error ? new Error(`expected the raw stream to end cleanly, got ${describeError(raw.feed.error)}`) : err;
    });
    const rawEnded = Date.now();
    const err = await feed.waitForError('the graphql-sse subscription to error when its stream ends', ms);
    await es.feed.waitFor(() => es.errors.length > 0, 'an error event on the EventSource when its stream ends', ms);

    assert.ok(rawEnded >= exp * 1000 - 50, `expected the stream to end at the token's expiry (${new Date(exp * 1000).toISOString()}), not before: it ended at ${new Date(rawEnded).toISOString()}`);
    assert.ok(
      !raw.feed.items.some((e) => e.event === 'complete'),
      `expected an expired stream to end without completing the operation (the client must resume): ${raw.feed.describe()}`,
    );
    assert.equal(err?.name, 'NetworkError', `expected graphql-sse to report the ended stream as a NetworkError (retryable), got ${describeError(err)}: ${feed.describe()}`);
    assert.equal(es.errors[0].readyState, 0, `expected the EventSource to be reconnecting (CONNECTING) after its stream ended: ${es.describe()}`);
  });
});

describe('no leaks', () => {
  test('once every client above closed, the server has no graphql-sse or /realtime stream open and no subscription running', { timeout: TEST_TIMEOUT_MS }, async () => {
    await waitForGauges(
      server.url,
      (g) => g.sse === 0 && g.eventsource === 0 && g.subscriptions === 0,
      'the realtime gauges (graphql-sse and eventsource connections, subscriptions) to return to 0',
    );
  });
});
