// GraphQL over HTTP as a plain fetch client sees it: the status codes, headers
// and error codes of /work/shared/API.md §2 and §5, and a write/read round trip.
// Writes need a signed-in user (posts: create = "user"), so those tests sign up
// a fresh one through the API and send its access token.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { TEST_JWT_SECRET, bearer, gql, signUp, startServer } from './helpers.js';

const GRAPHQL_RESPONSE_JSON = 'application/graphql-response+json';
const APPLICATION_JSON = 'application/json';

/** Every `extensions.code` a client may see (API.md §5). */
const CODES = new Set([
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'BAD_USER_INPUT',
  'CONFLICT',
  'CURSOR_EXPIRED',
  'TOO_MANY_SUBSCRIPTIONS',
  'RATE_LIMITED',
  'INTERNAL',
]);

/** The media type of a Content-Type header, without parameters. */
const mediaType = (headers) => (headers.get('content-type') || '').split(';')[0].trim().toLowerCase();

const assertCodes = (body) => {
  assert.ok(Array.isArray(body?.errors) && body.errors.length > 0, `expected errors, got ${JSON.stringify(body)}`);
  for (const e of body.errors) {
    assert.ok(CODES.has(e.extensions?.code), `error without an API.md §5 code: ${JSON.stringify(e)}`);
  }
};

let server;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
});

after(async () => {
  await server?.stop();
});

describe('GET', () => {
  test('a mutation over GET is 405 with Allow: POST, and does not run', async () => {
    // Signed in, so it is the method, not a missing token, that stops the write.
    const session = await signUp(server.url);
    const title = `via-get-${randomUUID()}`;
    const url = new URL(server.url);
    url.searchParams.set('query', 'mutation ($title: String!) { createPost(input: { title: $title }) { id } }');
    url.searchParams.set('variables', JSON.stringify({ title }));
    const res = await fetch(url, { headers: { accept: GRAPHQL_RESPONSE_JSON, ...bearer(session.accessToken) } });
    const text = await res.text();
    assert.equal(res.status, 405, text);
    assert.equal(res.headers.get('allow'), 'POST');
    assertCodes(JSON.parse(text));

    const check = await gql(
      server.url,
      'query ($title: String!) { postsCount(where: { title: { eq: $title } }) }',
      { title },
      bearer(session.accessToken),
    );
    assert.equal(check.status, 200, check.text);
    assert.equal(check.body.data.postsCount, 0, 'the mutation sent over GET must not have created a post');
  });

  test('a query over GET works', async () => {
    const url = new URL(server.url);
    url.searchParams.set('query', '{ __typename }');
    const res = await fetch(url, { headers: { accept: GRAPHQL_RESPONSE_JSON } });
    assert.equal(res.status, 200);
    assert.equal(mediaType(res.headers), GRAPHQL_RESPONSE_JSON);
    assert.deepEqual(await res.json(), { data: { __typename: 'Query' } });
  });
});

describe('parse errors', () => {
  test('with Accept: application/graphql-response+json, 400 and GRAPHQL_PARSE_FAILED, no data', async () => {
    const res = await gql(server.url, '{ posts { id ', undefined, { accept: GRAPHQL_RESPONSE_JSON });
    assert.equal(res.status, 400, res.text);
    assert.equal(mediaType(res.headers), GRAPHQL_RESPONSE_JSON);
    assertCodes(res.body);
    assert.equal(res.body.errors[0].extensions.code, 'GRAPHQL_PARSE_FAILED');
    assert.ok(!('data' in res.body), `a request error has no data entry: ${res.text}`);
  });

  test('with Accept: application/json, 200 and GRAPHQL_PARSE_FAILED', async () => {
    const res = await gql(server.url, '{ posts { id ', undefined, { accept: APPLICATION_JSON });
    assert.equal(res.status, 200, res.text);
    assert.equal(mediaType(res.headers), APPLICATION_JSON);
    assertCodes(res.body);
    assert.equal(res.body.errors[0].extensions.code, 'GRAPHQL_PARSE_FAILED');
  });

  test('a validation error is GRAPHQL_VALIDATION_FAILED (400 for graphql-response+json)', async () => {
    const res = await gql(server.url, '{ posts { noSuchField } }', undefined, { accept: GRAPHQL_RESPONSE_JSON });
    assert.equal(res.status, 400, res.text);
    assertCodes(res.body);
    assert.equal(res.body.errors[0].extensions.code, 'GRAPHQL_VALIDATION_FAILED');
  });
});

describe('round trip', () => {
  test('createPost as a signed-in user, then posts and post read it back', async () => {
    const session = await signUp(server.url);
    const auth = bearer(session.accessToken);
    const title = `interop-${randomUUID()}`;
    const created = await gql(
      server.url,
      'mutation ($input: PostCreateInput!) { createPost(input: $input) { id title body published } }',
      { input: { title, body: 'Hello from the interop suite.' } },
      auth,
    );
    assert.equal(created.status, 200, `expected createPost with a token to be 200: ${created.text}`);
    assert.equal(created.body.errors, undefined, `expected createPost with a token to have no errors: ${created.text}`);
    const post = created.body.data.createPost;
    assert.equal(typeof post.id, 'string');
    assert.equal(post.title, title);
    assert.equal(post.published, false, 'published defaults to false');

    const listed = await gql(
      server.url,
      'query ($title: String!, $id: ID!) { posts(where: { title: { eq: $title } }) { id title body } post(id: $id) { id title } }',
      { title, id: post.id },
      auth,
    );
    assert.equal(listed.status, 200, listed.text);
    assert.equal(listed.body.errors, undefined, listed.text);
    assert.deepEqual(listed.body.data.posts, [{ id: post.id, title, body: 'Hello from the interop suite.' }]);
    assert.deepEqual(listed.body.data.post, { id: post.id, title });
  });
});
