// Automatic persisted queries with Apollo Client's own link
// (@apollo/client/link/persisted-queries): the first request of a document
// sends only its hash, the server answers PERSISTED_QUERY_NOT_FOUND, the link
// retries with the text, and later requests send the hash alone; over POST,
// over GET (useGETForHashedQueries), and over graphql-ws, where a hash alone
// runs a document registered earlier.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { ApolloClient, HttpLink, InMemoryCache, gql as apolloGql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { signUp, startServer, uniqueSuffix } from './helpers.js';
import { Feed, createPost, describeError, wsUrl } from './realtime-helpers.js';
import { recordingFetch } from './sse-helpers.js';

const TEST_TIMEOUT_MS = 60_000;
/** Behind a balancer each instance registers a document on its own. */
const BALANCED = process.env.LIVEGATE_TEST_BALANCED === '1';
const sha256 = (text) => createHash('sha256').update(text).digest('hex');

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** What a recorded request sent: its GraphQL parameters, from the body or the URL. */
function sent(request) {
  if (request.body !== undefined) return JSON.parse(request.body);
  const params = new URL(request.url).searchParams;
  const json = (name) => (params.has(name) ? JSON.parse(params.get(name)) : undefined);
  return { query: params.get('query') ?? undefined, variables: json('variables'), extensions: json('extensions') };
}

function apollo(url, token, options = {}) {
  const http = recordingFetch();
  const link = new PersistedQueryLink({ sha256, ...options }).concat(
    new HttpLink({ uri: url, fetch: http.fetchFn, headers: { authorization: `Bearer ${token}` } }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return { client, http };
}

describe('@apollo/client persisted-queries link', () => {
  test('over POST: a miss, the retry with the text, then the hash alone', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { accessToken: token } = await signUp(server.url);
    const prefix = `apq-${uniqueSuffix()}-`;
    await createPost(server.url, token, `${prefix}one`);
    const { client, http } = apollo(server.url, token);
    t.after(() => client.stop());
    const POSTS = apolloGql`query ApqPosts($prefix: String!) { posts(where: { title: { startsWith: $prefix } }) { id title } }`;

    const first = await client.query({ query: POSTS, variables: { prefix }, fetchPolicy: 'network-only' });
    assert.equal(first.error, undefined, `the first query failed: ${describeError(first.error)}\n${http.describe()}`);
    assert.deepEqual(first.data.posts.map((p) => p.title), [`${prefix}one`]);
    const [miss, retry] = http.requests.map(sent);
    assert.equal(miss.query, undefined, `the first request sends the hash alone: ${http.describe()}`);
    assert.match(miss.extensions.persistedQuery.sha256Hash, /^[0-9a-f]{64}$/);
    assert.equal(typeof retry.query, 'string', `the retry sends the text: ${http.describe()}`);
    assert.equal(retry.extensions.persistedQuery.sha256Hash, miss.extensions.persistedQuery.sha256Hash);
    assert.equal(http.requests.length, 2, http.describe());

    await createPost(server.url, token, `${prefix}two`);
    const second = await client.query({ query: POSTS, variables: { prefix }, fetchPolicy: 'network-only' });
    assert.equal(second.error, undefined, describeError(second.error));
    assert.deepEqual(second.data.posts.map((p) => p.title).sort(), [`${prefix}one`, `${prefix}two`]);
    const third = sent(http.requests[2]);
    assert.equal(third.query, undefined, `a known document goes by hash alone: ${http.describe()}`);
    if (!BALANCED) assert.equal(http.requests.length, 3, `no retry once registered: ${http.describe()}`);

    // A mutation goes through the same link.
    const CREATE = apolloGql`mutation ApqCreate($title: String!) { createPost(input: { title: $title }) { id title } }`;
    const made = await client.mutate({ mutation: CREATE, variables: { title: `${prefix}three` } });
    assert.equal(made.error, undefined, describeError(made.error));
    assert.equal(made.data.createPost.title, `${prefix}three`);
  });

  test('over GET (useGETForHashedQueries): the hash in the URL', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { accessToken: token } = await signUp(server.url);
    const prefix = `apq-get-${uniqueSuffix()}-`;
    await createPost(server.url, token, `${prefix}one`);
    const { client, http } = apollo(server.url, token, { useGETForHashedQueries: true });
    t.after(() => client.stop());
    const COUNT = apolloGql`query ApqCount($prefix: String!) { postsCount(where: { title: { startsWith: $prefix } }) }`;
    for (let i = 0; i < 2; i++) {
      const result = await client.query({ query: COUNT, variables: { prefix }, fetchPolicy: 'network-only' });
      assert.equal(result.error, undefined, `${describeError(result.error)}\n${http.describe()}`);
      assert.equal(result.data.postsCount, 1);
    }
    const [miss] = http.requests;
    assert.equal(miss.method, 'GET', http.describe());
    assert.equal(sent(miss).query, undefined, http.describe());
    // (Behind a balancer the second query may reach the instance that has not
    // seen the text yet, and retry over POST.)
    if (!BALANCED) {
      const last = http.requests.at(-1);
      assert.equal(last.method, 'GET', `the known hash goes over GET: ${http.describe()}`);
      assert.equal(sent(last).query, undefined, http.describe());
      assert.ok(sent(last).extensions.persistedQuery.sha256Hash, http.describe());
      assert.equal(http.requests.length, 3, http.describe());
    }
  });
});

describe('persisted queries over graphql-ws', () => {
  test('Apollo over GraphQLWsLink (text and hash), then graphql-ws with the hash alone', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { accessToken: token } = await signUp(server.url);
    const prefix = `apq-ws-${uniqueSuffix()}-`;
    const frames = [];
    class Recording extends WebSocket {
      send(data, ...rest) {
        frames.push(String(data));
        return super.send(data, ...rest);
      }
    }
    const wsClient = createClient({ url: wsUrl(server.url), webSocketImpl: Recording, connectionParams: { token }, retryAttempts: 0, lazy: false });
    t.after(() => wsClient.dispose());
    const link = new PersistedQueryLink({ sha256 }).concat(new GraphQLWsLink(wsClient));
    const client = new ApolloClient({ link, cache: new InMemoryCache() });
    t.after(() => client.stop());
    const CHANGED = 'subscription ApqChanged($prefix: String!) { postChanged(where: { title: { startsWith: $prefix } }) { action record { title } } }';

    const apolloFeed = new Feed('Apollo over ws with persisted queries', () => frames.join('\n'));
    const sub = client.subscribe({ query: apolloGql(CHANGED), variables: { prefix } }).subscribe(apolloFeed.sink);
    t.after(() => sub.unsubscribe());
    // The hash of the text as the server sees it, to name it alone later.
    for (let i = 0; !frames.some((f) => f.includes('"subscribe"')); i++) {
      assert.ok(i < 200, `no subscribe frame within 10 s: ${frames.join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const subscribe = JSON.parse(frames.find((f) => f.includes('"subscribe"')));
    const hash = subscribe.payload.extensions.persistedQuery.sha256Hash;
    assert.equal(hash, sha256(subscribe.payload.query), 'Apollo hashes the text it sends');

    // graphql-ws with the hash alone (it insists on a `query` string: empty).
    const byHash = new Feed('graphql-ws by hash', () => frames.join('\n'));
    const unsubscribe = wsClient.subscribe(
      { query: '', variables: { prefix }, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } },
      byHash.sink,
    );
    t.after(() => unsubscribe());
    // Both are live once a write reaches both.
    let n = 0;
    const seen = (feed, title) => feed.items.some((r) => r.data?.postChanged?.record?.title === title);
    for (;;) {
      const title = `${prefix}${n++}`;
      await createPost(server.url, token, title);
      try {
        await byHash.waitFor(() => seen(byHash, title), `graphql-ws by hash sees ${title}`, 1_000);
        await apolloFeed.waitFor(() => seen(apolloFeed, title), `Apollo sees ${title}`, 1_000);
        break;
      } catch (e) {
        if (byHash.error !== undefined || apolloFeed.error !== undefined || n > 20) throw e;
      }
    }
    for (const feed of [apolloFeed, byHash]) {
      assert.ok(feed.items.every((r) => r.errors === undefined), feed.describe());
    }
  });
});
