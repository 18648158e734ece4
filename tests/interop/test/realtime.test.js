// Realtime as real npm clients see it (/work/shared/API.md §2 WebSocket
// endpoint and credentials, §3 Subscription type, §4 realtime semantics):
// graphql-ws (`graphql-transport-ws`), subscriptions-transport-ws (legacy
// `graphql-ws`) and Apollo Client's GraphQLWsLink, all on the npm `ws` package.
// Writes go over HTTP with fetch unless a test says otherwise. Every test signs
// up its own user and titles its posts with a unique prefix (subscriptions
// filter on it), so the tests do not depend on each other or on other rows of
// a shared postgres database.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ApolloClient, InMemoryCache, gql as apolloGql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import { SubscriptionClient } from 'subscriptions-transport-ws';

import { TEST_JWT_SECRET, bearer, gql, signUp, startServer, uniqueSuffix } from './helpers.js';
import {
  Feed,
  WAIT_MS,
  assertIncreasing,
  createPost,
  deletePost,
  describeError,
  payloads,
  recordingWebSocket,
  seenPostTitled,
  updatePost,
  waitLive,
  wsUrl,
} from './realtime-helpers.js';

/** postChanged for posts whose title starts with $prefix, optionally resumed. */
const POST_CHANGED = `subscription ($prefix: String!, $actions: [ChangeAction!], $after: String) {
  postChanged(actions: $actions, where: { title: { startsWith: $prefix } }, after: $after) {
    action id cursor at record { id title }
  }
}`;

/** Per-test timeout: generous, since every wait inside has its own deadline. */
const TEST_TIMEOUT_MS = 60_000;

let server;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
});

after(async () => {
  await server?.stop();
});

/** A unique title prefix for one test's posts. */
const newPrefix = (what) => `rt-${what}-${uniqueSuffix()}-`;

/**
 * A graphql-ws client on `ws`, recording its frames. `options` go to
 * createClient (connectionParams, retryAttempts, on, ...). Returns
 * `{ client, rec }`; the caller disposes the client.
 */
function graphqlWsClient(options = {}, url = wsUrl(server.url)) {
  const rec = recordingWebSocket();
  const client = createClient({ url, webSocketImpl: rec.WebSocket, retryAttempts: 0, ...options });
  return { client, rec };
}

/** Subscribes `client` (graphql-ws) to `payload` and returns its Feed and unsubscribe. */
function subscribeFeed(client, rec, name, payload) {
  const feed = new Feed(name, rec.describe);
  const unsubscribe = client.subscribe(payload, feed.sink);
  return { feed, unsubscribe };
}

/** The postChanged events of a feed, without the canary posts waitLive made. */
function eventsOf(feed, canaries = []) {
  return payloads(feed, 'postChanged').filter((e) => !canaries.includes(e.record?.title));
}

/** Runs one operation over graphql-ws and returns every result, asserting it completes. */
async function runOnce(client, rec, name, payload) {
  const feed = new Feed(name, rec.describe);
  client.subscribe(payload, feed.sink);
  await feed.waitFor(() => feed.done, `${name} to complete`);
  return feed.items;
}

describe('graphql-ws client (graphql-transport-ws)', () => {
  test('postChanged delivers CREATE, UPDATE, DELETE of an HTTP-written post in order, with increasing cursors', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const prefix = newPrefix('crud');
    const { client, rec } = graphqlWsClient({ connectionParams: { token: session.accessToken } });
    t.after(() => client.dispose());

    const { feed } = subscribeFeed(client, rec, 'postChanged', { query: POST_CHANGED, variables: { prefix } });
    const canaries = await waitLive(feed, { url: server.url, token: session.accessToken, prefix, seen: seenPostTitled });

    const created = await createPost(server.url, session.accessToken, `${prefix}first`);
    await updatePost(server.url, session.accessToken, created.id, `${prefix}second`);
    await deletePost(server.url, session.accessToken, created.id);

    await feed.waitFor(
      () => eventsOf(feed, canaries).filter((e) => e.id === created.id).length >= 3,
      `three postChanged events for post ${created.id}`,
    );
    const events = eventsOf(feed, canaries);
    assert.deepEqual(
      events.map((e) => [e.action, e.id]),
      [
        ['CREATE', created.id],
        ['UPDATE', created.id],
        ['DELETE', created.id],
      ],
      `expected exactly CREATE, UPDATE, DELETE of post ${created.id}, in that order: ${feed.describe()}`,
    );
    assert.deepEqual(
      events.map((e) => e.record?.title),
      [`${prefix}first`, `${prefix}second`, `${prefix}second`],
      `expected each event's record to be the row after the change (for DELETE, the row as it was): ${feed.describe()}`,
    );
    assert.ok(
      events.every((e) => e.record?.id === created.id),
      `expected every event's record.id to be the post's id: ${feed.describe()}`,
    );
    assert.ok(
      events.every((e) => Number.isFinite(Date.parse(e.at))),
      `expected every event's at to be a date-time: ${feed.describe()}`,
    );
    assertIncreasing(
      payloads(feed, 'postChanged').map((e) => e.cursor),
      'the postChanged events (canaries included), in arrival order',
    );
    assert.equal(feed.error, undefined, `expected the subscription not to error: ${feed.describe()}`);
    assert.equal(feed.done, false, `expected the subscription to stay open: ${feed.describe()}`);
  });

  test('a query and a mutation over the same graphql-ws client each yield one result and complete', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const prefix = newPrefix('ops');
    const { client, rec } = graphqlWsClient({ connectionParams: { token: session.accessToken } });
    t.after(() => client.dispose());

    // A live subscription on the same socket, which must see the socket's mutation.
    const { feed } = subscribeFeed(client, rec, 'postChanged', { query: POST_CHANGED, variables: { prefix } });
    const canaries = await waitLive(feed, { url: server.url, token: session.accessToken, prefix, seen: seenPostTitled });

    const title = `${prefix}over-the-socket`;
    const mutation = await runOnce(client, rec, 'createPost over graphql-ws', {
      query: 'mutation ($title: String!) { createPost(input: { title: $title }) { id title ownerId } }',
      variables: { title },
    });
    assert.equal(mutation.length, 1, `expected exactly one result for the mutation, then complete: ${rec.describe()}`);
    assert.equal(mutation[0].errors, undefined, `expected the mutation over graphql-ws to succeed: ${JSON.stringify(mutation[0])}`);
    const post = mutation[0].data?.createPost;
    assert.equal(post?.title, title, `expected createPost over graphql-ws to return the new post: ${JSON.stringify(mutation[0])}`);
    assert.equal(post.ownerId, session.user.id, `expected the connectionParams token's user to own the post: ${JSON.stringify(mutation[0])}`);

    const query = await runOnce(client, rec, 'posts query over graphql-ws', {
      query: 'query ($id: ID!) { posts(where: { id: { eq: $id } }) { id title } me { id } }',
      variables: { id: post.id },
    });
    assert.equal(query.length, 1, `expected exactly one result for the query, then complete: ${rec.describe()}`);
    assert.deepEqual(
      query[0],
      { data: { posts: [{ id: post.id, title }], me: { id: session.user.id } } },
      'expected the query over graphql-ws to see the post and the connectionParams user',
    );

    await feed.waitFor(() => eventsOf(feed, canaries).some((e) => e.id === post.id), `a postChanged event for post ${post.id}`);
    assert.deepEqual(
      eventsOf(feed, canaries).map((e) => [e.action, e.id]),
      [['CREATE', post.id]],
      `expected the socket's own mutation to be delivered to its subscription as one CREATE: ${feed.describe()}`,
    );
    assert.equal(rec.sockets.length, 1, `expected the subscription, mutation and query to share one connection: ${rec.describe()}`);

    // Over HTTP too: the write over the socket committed.
    const http = await gql(server.url, 'query ($id: ID!) { post(id: $id) { id title } }', { id: post.id });
    assert.deepEqual(http.body, { data: { post: { id: post.id, title } } }, `expected the post written over graphql-ws to be readable over HTTP: ${http.text}`);
  });

  test('after a mid-stream disconnect, resuming with after: <last cursor> delivers every CREATE exactly once, in cursor order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('resume');
    const titles = Array.from({ length: 20 }, (_, i) => `${prefix}post-${String(i).padStart(2, '0')}`);
    const variables = { prefix, actions: ['CREATE'] };

    // First connection: subscribe, go live, then drop the socket after 5 posts.
    let socket;
    let resolveClosed;
    const closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });
    const first = graphqlWsClient({
      connectionParams: { token },
      on: {
        connected: (s) => {
          socket = s;
        },
        closed: (e) => resolveClosed(e),
      },
    });
    t.after(() => first.client.dispose());
    const { feed: feed1 } = subscribeFeed(first.client, first.rec, 'postChanged before the disconnect', { query: POST_CHANGED, variables });
    const canaries = await waitLive(feed1, { url: server.url, token, prefix, seen: seenPostTitled });
    const isPost = (e) => titles.includes(e.record?.title);

    const created = [];
    const create = async (from, to) => {
      for (let i = from; i < to; i += 1) created.push(await createPost(server.url, token, titles[i]));
    };
    // Posts 0-7 go out; the socket is cut once 5 have arrived, so 5-7 may be in flight.
    const burst = create(0, 8);
    await feed1.waitFor(() => eventsOf(feed1, canaries).filter(isPost).length >= 5, 'five CREATE events before the disconnect');
    socket.terminate();
    const closeEvent = await closed;
    await feed1.waitForError('the first subscription to fail once its socket was terminated (retryAttempts: 0)');
    await burst;
    const before = eventsOf(feed1, canaries);
    const lastCursor = payloads(feed1, 'postChanged').at(-1).cursor;

    // Posts 8-13 are written while no client is connected.
    await create(8, 14);

    // Second connection resumes after the last cursor seen; posts 14-19 are
    // written right away, racing the replay, so they cross the replay→live seam.
    const second = graphqlWsClient({ connectionParams: { token } });
    t.after(() => second.client.dispose());
    const { feed: feed2 } = subscribeFeed(second.client, second.rec, `postChanged after ${lastCursor}`, {
      query: POST_CHANGED,
      variables: { ...variables, after: lastCursor },
    });
    await create(14, 20);

    const received = () => [...before, ...eventsOf(feed2, canaries)].filter(isPost);
    await feed2.waitFor(
      () => titles.every((title) => received().some((e) => e.record.title === title)),
      `every one of the 20 posts across both connections (the first got ${before.filter(isPost).length} before closing ${closeEvent.code})`,
    );
    // A sentinel, written last, arrives after anything still in flight, so a
    // late duplicate cannot slip past the checks below.
    const sentinel = await createPost(server.url, token, `${prefix}sentinel`);
    await feed2.waitFor(() => eventsOf(feed2).some((e) => e.id === sentinel.id), 'the sentinel post after the 20');

    const all = received();
    const counts = new Map(titles.map((title) => [title, 0]));
    for (const e of all) counts.set(e.record.title, counts.get(e.record.title) + 1);
    const missing = titles.filter((title) => counts.get(title) === 0);
    const duplicated = titles.filter((title) => counts.get(title) > 1);
    const context = `first connection:\n${feed1.describe()}\nsecond connection:\n${feed2.describe()}`;
    assert.deepEqual(missing, [], `expected no post to be missing across the disconnect (no gap): ${context}`);
    assert.deepEqual(duplicated, [], `expected no post to be delivered twice across the disconnect (no duplicate): ${context}`);
    assert.deepEqual(
      all.map((e) => e.id),
      created.map((p) => p.id),
      `expected the 20 CREATE events in the order the posts were written: ${context}`,
    );
    assert.ok(all.every((e) => e.action === 'CREATE'), `expected only CREATE events (actions: [CREATE]): ${context}`);
    assertIncreasing(
      [...payloads(feed1, 'postChanged'), ...payloads(feed2, 'postChanged')].map((e) => e.cursor),
      'every event across both connections, in arrival order',
    );
    assert.ok(
      eventsOf(feed2, canaries).every((e) => !before.some((b) => b.cursor === e.cursor)),
      `expected the resumed subscription to replay nothing at or before ${lastCursor}: ${context}`,
    );
    assert.ok(
      payloads(feed2, 'postChanged').every((e) => !canaries.includes(e.record?.title)),
      `expected the resumed subscription not to replay the canaries, which came before ${lastCursor}: ${context}`,
    );
  });

  test('changes(collections: ["posts"]) delivers collection/action hints, with the cursor of the matching postChanged event', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('hints');
    const { client, rec } = graphqlWsClient({ connectionParams: { token } });
    t.after(() => client.dispose());

    const { feed: changes } = subscribeFeed(client, rec, 'changes(posts)', {
      query: 'subscription { changes(collections: ["posts"]) { collection action cursor at } }',
    });
    // postChanged on the same socket ties each hint to a post through its cursor.
    const { feed: posts } = subscribeFeed(client, rec, 'postChanged', { query: POST_CHANGED, variables: { prefix } });
    const canaries = await waitLive(posts, { url: server.url, token, prefix, seen: seenPostTitled });
    await waitLive(changes, { url: server.url, token, prefix: `${prefix}hint-`, seen: (items) => items.length > 0 });

    // A note is another collection: the posts-only feed must not hint it.
    const note = await gql(server.url, 'mutation { createNote(input: { title: "not a post" }) { id } }', undefined, bearer(token));
    assert.equal(note.body?.errors, undefined, `expected createNote over HTTP to succeed: ${note.text}`);

    const post = await createPost(server.url, token, `${prefix}hinted`);
    await updatePost(server.url, token, post.id, `${prefix}hinted-again`);
    await deletePost(server.url, token, post.id);
    await posts.waitFor(() => eventsOf(posts, canaries).filter((e) => e.id === post.id).length >= 3, `three postChanged events for ${post.id}`);
    const cursors = eventsOf(posts, canaries).filter((e) => e.id === post.id).map((e) => [e.action, e.cursor]);
    await changes.waitFor(
      (items) => cursors.every(([, c]) => items.some((i) => i.data?.changes?.cursor === c)),
      `hints with the cursors of the post's CREATE, UPDATE and DELETE (${JSON.stringify(cursors)})`,
    );

    const hints = payloads(changes, 'changes');
    for (const [action, cursor] of cursors) {
      const hint = hints.find((h) => h.cursor === cursor);
      assert.deepEqual(
        { collection: hint.collection, action: hint.action },
        { collection: 'posts', action },
        `expected the hint with cursor ${cursor} to be { collection: "posts", action: ${action} }: ${changes.describe()}`,
      );
      assert.ok(Number.isFinite(Date.parse(hint.at)), `expected the hint's at to be a date-time: ${JSON.stringify(hint)}`);
    }
    assert.ok(
      hints.every((h) => h.collection === 'posts'),
      `expected changes(collections: ["posts"]) to hint only the posts collection (not the note): ${changes.describe()}`,
    );
    assert.ok(
      hints.every((h) => Object.keys(h).sort().join() === 'action,at,collection,cursor'),
      `expected hints to carry no row data: ${changes.describe()}`,
    );
    assertIncreasing(hints.map((h) => h.cursor), 'the hints, in arrival order');
  });

  test('a bad token in connectionParams closes the socket with 4403 and the client does not retry', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const cases = [
      ['connectionParams { token }', { connectionParams: { token: 'not-a-jwt.garbage.token' } }, ''],
      ['connectionParams { Authorization: "Bearer ..." }', { connectionParams: { Authorization: 'Bearer not-a-jwt.garbage.token' } }, ''],
      ['?token= on the URL', {}, '?token=not-a-jwt.garbage.token'],
    ];
    for (const [how, options, query] of cases) {
      const closes = [];
      const { client, rec } = graphqlWsClient({ ...options, on: { closed: (e) => closes.push(e) } }, `${wsUrl(server.url)}${query}`);
      t.after(() => client.dispose());
      const { feed } = subscribeFeed(client, rec, `postChanged with a bad token in ${how}`, {
        query: POST_CHANGED,
        variables: { prefix: newPrefix('badtoken') },
      });
      const err = await feed.waitForError(`the subscription to fail with a bad token in ${how}`);
      assert.equal(err?.code, 4403, `expected a bad token in ${how} to fail the client with close code 4403, got ${describeError(err)}: ${rec.describe()}`);
      assert.match(String(err.reason), /^Forbidden/, `expected the 4403 close reason to start with "Forbidden": ${rec.describe()}`);
      assert.deepEqual(closes.map((e) => e.code), [4403], `expected one closed event, code 4403, for ${how}: ${rec.describe()}`);
      assert.deepEqual(
        rec.frames().map((f) => f.type),
        [],
        `expected the server to send no frame (no connection_ack) before closing for ${how}: ${rec.describe()}`,
      );
      // Give a retrying client time to show itself.
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(rec.sockets.length, 1, `expected exactly one connection attempt (retryAttempts: 0) for ${how}: ${rec.describe()}`);
      assert.equal(feed.items.length, 0, `expected no events with a bad token in ${how}: ${feed.describe()}`);
    }
  });

  test('a good token works as connectionParams { Authorization: "Bearer ..." } and as ?token= on the URL', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const cases = [
      ['connectionParams { Authorization: "Bearer ..." }', { connectionParams: { Authorization: `Bearer ${session.accessToken}` } }, ''],
      ['?token= on the URL', {}, `?token=${encodeURIComponent(session.accessToken)}`],
    ];
    for (const [how, options, query] of cases) {
      const { client, rec } = graphqlWsClient(options, `${wsUrl(server.url)}${query}`);
      t.after(() => client.dispose());
      const results = await runOnce(client, rec, `me with the token in ${how}`, { query: '{ me { id email } }' });
      assert.deepEqual(
        results,
        [{ data: { me: { id: session.user.id, email: session.user.email } } }],
        `expected me over graphql-ws with the token in ${how} to be the signed-up user: ${rec.describe()}`,
      );
    }
  });
});

describe('subscriptions-transport-ws client (legacy graphql-ws)', () => {
  test('SubscriptionClient receives a CREATE for an HTTP-written post, then unsubscribes cleanly', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('legacy');
    const rec = recordingWebSocket();
    const client = new SubscriptionClient(wsUrl(server.url), { connectionParams: { token }, reconnect: false }, rec.WebSocket);
    t.after(() => client.close());

    const feed = new Feed('postChanged over subscriptions-transport-ws', rec.describe);
    const subscription = client.request({ query: POST_CHANGED, variables: { prefix } }).subscribe(feed.sink);
    const canaries = await waitLive(feed, { url: server.url, token, prefix, seen: seenPostTitled });
    assert.equal(rec.sockets[0].protocol, 'graphql-ws', `expected the server to pick the legacy graphql-ws subprotocol: ${rec.describe()}`);

    const post = await createPost(server.url, token, `${prefix}legacy`);
    await feed.waitFor(() => eventsOf(feed, canaries).some((e) => e.id === post.id), `a postChanged event for post ${post.id}`);
    const events = eventsOf(feed, canaries);
    assert.deepEqual(
      events.map((e) => [e.action, e.id, e.record?.title]),
      [['CREATE', post.id, `${prefix}legacy`]],
      `expected one CREATE event carrying the new post: ${feed.describe()}`,
    );

    // Unsubscribing sends `stop`; the server answers `complete` for that id.
    const dataFrame = rec.frames().find((f) => f.type === 'data');
    assert.ok(dataFrame?.id, `expected the events to arrive as legacy "data" frames with an id: ${rec.describe()}`);
    const opId = dataFrame.id;
    subscription.unsubscribe();
    const deadline = Date.now() + WAIT_MS;
    while (!rec.frames().some((f) => f.type === 'complete' && f.id === opId) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(
      rec.log.some((l) => l.includes(`"type":"stop"`) && l.includes(`"id":"${opId}"`)),
      `expected the client to send stop for operation ${opId}: ${rec.describe()}`,
    );
    assert.ok(
      rec.frames().some((f) => f.type === 'complete' && f.id === opId),
      `expected the server to answer stop with complete for operation ${opId}: ${rec.describe()}`,
    );

    // After the stop, a second operation on the same connection sees a new post
    // and the stopped one sees nothing more.
    const framesAtStop = rec.frames().length;
    const probe = new Feed('second postChanged over subscriptions-transport-ws', rec.describe);
    client.request({ query: POST_CHANGED, variables: { prefix } }).subscribe(probe.sink);
    const probeCanaries = await waitLive(probe, { url: server.url, token, prefix: `${prefix}probe-`, seen: seenPostTitled });
    const later = await createPost(server.url, token, `${prefix}after-stop`);
    await probe.waitFor(() => eventsOf(probe, probeCanaries).some((e) => e.id === later.id), `the second operation to see post ${later.id}`);
    assert.deepEqual(
      rec.frames().slice(framesAtStop).filter((f) => f.id === opId),
      [],
      `expected no frame for stopped operation ${opId} after its complete: ${rec.describe()}`,
    );
    assert.equal(feed.error, undefined, `expected the unsubscribed operation not to error: ${feed.describe()}`);
    assert.equal(rec.sockets.length, 1, `expected one connection throughout: ${rec.describe()}`);
    assert.equal(
      rec.frames().filter((f) => f.type === 'connection_error' || f.type === 'error').length,
      0,
      `expected no connection_error or error frames: ${rec.describe()}`,
    );
  });
});

describe('@apollo/client with GraphQLWsLink', () => {
  test('a query, a mutation over the socket, and a subscription that sees the new post, through an InMemoryCache', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const session = await signUp(server.url);
    const token = session.accessToken;
    const prefix = newPrefix('apollo');
    const rec = recordingWebSocket();
    const wsClient = createClient({ url: wsUrl(server.url), webSocketImpl: rec.WebSocket, connectionParams: { token }, retryAttempts: 0 });
    t.after(() => wsClient.dispose());
    const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });
    t.after(() => client.stop());

    const POSTS = apolloGql`query Posts($prefix: String!) { posts(where: { title: { startsWith: $prefix } }, orderBy: [{ field: CREATED_AT }]) { id title } }`;
    const CREATE = apolloGql`mutation Create($title: String!) { createPost(input: { title: $title }) { id title ownerId } }`;
    const CHANGED = apolloGql(POST_CHANGED);

    // The subscription starts first and stays open, so the query and mutation
    // below share its connection (graphql-ws is lazy: it connects on the first
    // operation and closes when none is left).
    const feed = new Feed('Apollo postChanged', rec.describe);
    const subscription = client.subscribe({ query: CHANGED, variables: { prefix } }).subscribe(feed.sink);
    t.after(() => subscription.unsubscribe());
    const canaries = await waitLive(feed, { url: server.url, token, prefix, seen: seenPostTitled });

    const seed = await createPost(server.url, token, `${prefix}seed`);
    const first = await client.query({ query: POSTS, variables: { prefix } });
    assert.equal(first.error, undefined, `expected the Apollo query to succeed: ${describeError(first.error)}: ${rec.describe()}`);
    assert.deepEqual(
      first.data.posts.filter((p) => !canaries.includes(p.title)).map((p) => [p.__typename, p.id, p.title]),
      [['Post', seed.id, `${prefix}seed`]],
      `expected the Apollo query over the socket to return the seed post with its __typename: ${rec.describe()}`,
    );

    const title = `${prefix}from-apollo`;
    const mutated = await client.mutate({ mutation: CREATE, variables: { title } });
    assert.equal(mutated.error, undefined, `expected the Apollo mutation to succeed: ${describeError(mutated.error)}: ${rec.describe()}`);
    const post = mutated.data.createPost;
    assert.equal(post.title, title, `expected the Apollo mutation to return the new post: ${JSON.stringify(mutated.data)}`);
    assert.equal(post.ownerId, session.user.id, `expected the connectionParams token's user to own the post created over the socket: ${JSON.stringify(mutated.data)}`);
    assert.ok(
      rec.log.some((l) => l.startsWith('#1 -> ') && l.includes('"subscribe"') && l.includes('createPost')),
      `expected the mutation to go over the WebSocket as a subscribe message: ${rec.describe()}`,
    );

    await feed.waitFor(() => eventsOf(feed, canaries).some((e) => e.id === post.id), `an Apollo subscription event for post ${post.id}`);
    const events = feed.items
      .map((item) => {
        assert.equal(item.error, undefined, `expected no error in Apollo subscription results: ${feed.describe()}`);
        return item.data.postChanged;
      })
      .filter((e) => !canaries.includes(e.record?.title));
    assert.deepEqual(
      events.map((e) => [e.__typename, e.action, e.id, e.record?.__typename, e.record?.title]),
      [
        ['PostChange', 'CREATE', seed.id, 'Post', `${prefix}seed`],
        ['PostChange', 'CREATE', post.id, 'Post', title],
      ],
      `expected the Apollo subscription to receive the CREATE of the seed post (over HTTP), then of the post it created over the socket: ${feed.describe()}`,
    );

    // The cache normalised the post by id, and a fresh query sees both posts.
    const cached = client.cache.extract()[client.cache.identify({ __typename: 'Post', id: post.id })];
    assert.equal(cached?.title, title, `expected the InMemoryCache to hold Post:${post.id}: ${JSON.stringify(client.cache.extract())}`);
    const again = await client.query({ query: POSTS, variables: { prefix }, fetchPolicy: 'network-only' });
    assert.deepEqual(
      again.data.posts.filter((p) => !canaries.includes(p.title)).map((p) => p.id),
      [seed.id, post.id],
      `expected a network-only query to list the seed and the new post: ${JSON.stringify(again.data)}`,
    );
    assert.equal(rec.sockets.length, 1, `expected Apollo's query, mutation and subscription to share one connection: ${rec.describe()}`);
  });
});
