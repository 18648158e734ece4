// Authentication and tenancy as a plain fetch client sees them (/work/shared/API.md
// §1 access levels and tenancy, §2 credentials, §3 signUp / signIn /
// refreshSession / signOut / me, §5 error codes). Every test signs up users of
// its own (unique emails and account slugs: a postgres test database is shared
// across runs), so the tests do not depend on each other.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { SESSION_FIELDS, TEST_JWT_SECRET, bearer, gql, signUp, startServer, uniqueSuffix } from './helpers.js';

const ME = '{ me { id email role accountId } }';
const CREATE_POST = `mutation ($title: String!) {
  createPost(input: { title: $title }) { id title ownerId accountId }
}`;
const SIGN_IN = `mutation ($email: String!, $password: String!) {
  signIn(email: $email, password: $password) { ${SESSION_FIELDS} }
}`;
const REFRESH = `mutation ($refreshToken: String!) {
  refreshSession(refreshToken: $refreshToken) { ${SESSION_FIELDS} }
}`;
const SIGN_OUT = 'mutation ($refreshToken: String!) { signOut(refreshToken: $refreshToken) }';
/** A post by id, both in the list (filtered to that id) and fetched directly. */
const POST_BY_ID = `query ($id: ID!) {
  posts(where: { id: { eq: $id } }) { id accountId }
  post(id: $id) { id accountId }
}`;
const POSTS_BY_ID = 'query ($id: ID!) { posts(where: { id: { eq: $id } }) { id } }';

/** Not a JWT at all: the server must refuse it, not treat it as anonymous. */
const GARBAGE_TOKEN = 'not-a-jwt.garbage.token';

let server;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
});

after(async () => {
  await server?.stop();
});

/** The `extensions.code` of every error in a response. */
const codesOf = (res) => (res.body?.errors ?? []).map((e) => e.extensions?.code);

/**
 * Asserts that `res` failed with UNAUTHENTICATED and that field `field` produced
 * no data. `what` says which request it was, for the message.
 */
function assertUnauthenticated(res, field, what) {
  assert.ok(res.body !== undefined, `expected a JSON body for ${what}, got HTTP ${res.status}: ${res.text}`);
  assert.deepEqual(codesOf(res), ['UNAUTHENTICATED'], `expected ${what} to fail with exactly one UNAUTHENTICATED error: ${res.text}`);
  assert.equal(res.body.data?.[field] ?? null, null, `expected ${what} to return no ${field} data: ${res.text}`);
}

/** Asserts an HTTP 401 whose errors are UNAUTHENTICATED, with no data at all. */
function assert401(res, what) {
  assert.equal(res.status, 401, `expected HTTP 401 for ${what}: ${res.text}`);
  assert.ok(res.body !== undefined, `expected a JSON body with the 401 for ${what}: ${res.text}`);
  assert.ok(codesOf(res).length > 0, `expected errors with the 401 for ${what}: ${res.text}`);
  assert.ok(
    codesOf(res).every((c) => c === 'UNAUTHENTICATED'),
    `expected every error of ${what} to be UNAUTHENTICATED: ${res.text}`,
  );
  assert.equal(res.body.data ?? null, null, `expected no data for ${what}: ${res.text}`);
}

/** Asserts a response with data and no errors, and returns its data. */
function dataOf(res, what) {
  assert.equal(res.status, 200, `expected HTTP 200 for ${what}: ${res.text}`);
  assert.equal(res.body?.errors, undefined, `expected no errors for ${what}: ${res.text}`);
  assert.ok(res.body?.data, `expected data for ${what}: ${res.text}`);
  return res.body.data;
}

/** `me` as the holder of `token` sees it. */
async function me(token) {
  return dataOf(await gql(server.url, ME, undefined, bearer(token)), 'me with a valid token').me;
}

/** Creates a post titled uniquely as the holder of `token`; returns it. */
async function createPost(token, what = 'createPost with a valid token') {
  const title = `auth-${randomUUID()}`;
  const post = dataOf(await gql(server.url, CREATE_POST, { title }, bearer(token)), what).createPost;
  assert.equal(post.title, title, `expected ${what} to return the title it was given`);
  return post;
}

/** How many posts titled `title` the holder of `token` can see. */
async function countTitled(title, token) {
  const res = await gql(
    server.url,
    'query ($title: String!) { postsCount(where: { title: { eq: $title } }) }',
    { title },
    bearer(token),
  );
  return dataOf(res, 'postsCount with a valid token').postsCount;
}

/** Asserts that a session looks like API.md §3's `Session`. */
function assertSession(session, what) {
  assert.equal(typeof session?.accessToken, 'string', `expected ${what} to return an accessToken`);
  assert.equal(session.accessToken.split('.').length, 3, `expected ${what}'s accessToken to be a JWT (three dot-separated parts)`);
  assert.equal(typeof session.refreshToken, 'string', `expected ${what} to return a refreshToken`);
  assert.ok(session.refreshToken.length >= 16, `expected ${what}'s refreshToken not to be trivially short`);
  const expires = Date.parse(session.expiresAt);
  assert.ok(Number.isFinite(expires), `expected ${what}'s expiresAt to be a date-time, got ${session.expiresAt}`);
  assert.ok(expires > Date.now(), `expected ${what}'s expiresAt (${session.expiresAt}) to be in the future`);
  assert.equal(typeof session.user?.id, 'string', `expected ${what} to return the user's id`);
  assert.equal(typeof session.user.accountId, 'string', `expected ${what} to return the user's accountId`);
}

describe('signUp and me', () => {
  test('signUp returns a session, and me with its token is the same user of the default account', async () => {
    const local = `Interop-${uniqueSuffix()}`;
    const given = `  ${local}@Example.COM `;
    const session = await signUp(server.url, { email: given });
    assertSession(session, 'signUp');
    assert.equal(session.user.email, `${local.toLowerCase()}@example.com`, 'expected signUp to store the email trimmed and lowercased');
    assert.equal(session.user.role, 'USER', 'expected a sign-up without newAccount to be role USER');

    assert.deepEqual(await me(session.accessToken), session.user, 'expected me with the signUp token to be the user signUp returned');

    // The default account: its rows are what anonymous viewers of slug
    // `default` see, so a post by this user shows that account's id.
    const post = await createPost(session.accessToken);
    const anon = dataOf(
      await gql(server.url, POST_BY_ID, { id: post.id }, { 'x-account': 'default' }),
      'an anonymous read with X-Account: default',
    );
    assert.equal(anon.post?.accountId, session.user.accountId, "expected the user's accountId to be the default account's id");

    const other = await signUp(server.url);
    assert.equal(other.user.accountId, session.user.accountId, 'expected two sign-ups without newAccount to join the same (default) account');
    assert.notEqual(other.user.id, session.user.id, 'expected two sign-ups to be two users');
  });

  test('me without a token is null', async () => {
    const data = dataOf(await gql(server.url, ME), 'me without a token');
    assert.equal(data.me, null, 'expected me to be null for an anonymous request');
  });
});

describe('signIn', () => {
  test('with the right password returns a new session whose token works', async () => {
    const signedUp = await signUp(server.url);
    const res = await gql(server.url, SIGN_IN, { email: signedUp.user.email, password: signedUp.password });
    const session = dataOf(res, 'signIn with the right password').signIn;
    assertSession(session, 'signIn');
    assert.deepEqual(session.user, signedUp.user, 'expected signIn to return the user that signed up');
    assert.notEqual(session.accessToken, signedUp.accessToken, 'expected signIn to return a new access token');
    assert.notEqual(session.refreshToken, signedUp.refreshToken, 'expected signIn to return a new refresh token');
    assert.deepEqual(await me(session.accessToken), signedUp.user, 'expected me with the signIn token to be the signed-in user');
  });

  test('with a wrong password gives UNAUTHENTICATED and no data', async () => {
    const signedUp = await signUp(server.url);
    const res = await gql(server.url, SIGN_IN, { email: signedUp.user.email, password: `${signedUp.password}-wrong` });
    assertUnauthenticated(res, 'signIn', 'signIn with a wrong password');
    assert.ok(!res.text.includes('accessToken'), `expected no session in the response to a wrong password: ${res.text}`);
  });
});

describe('the access token is used', () => {
  test('createPost with the token succeeds and ownerId is the user', async () => {
    const session = await signUp(server.url);
    const post = await createPost(session.accessToken);
    assert.equal(post.ownerId, session.user.id, "expected the new post's ownerId to be the signed-up user's id");
    assert.equal(post.accountId, session.user.accountId, "expected the new post's accountId to be the user's account");
  });

  test('createPost without a token gives UNAUTHENTICATED and writes nothing', async () => {
    const session = await signUp(server.url);
    const title = `auth-anon-${randomUUID()}`;
    const res = await gql(server.url, CREATE_POST, { title });
    assertUnauthenticated(res, 'createPost', 'createPost without a token');
    assert.equal(await countTitled(title, session.accessToken), 0, 'expected createPost without a token not to create a post');
  });

  test('a garbage token is HTTP 401 UNAUTHENTICATED, not an anonymous request', async () => {
    const session = await signUp(server.url);
    const title = `auth-garbage-${randomUUID()}`;
    const write = await gql(server.url, CREATE_POST, { title }, bearer(GARBAGE_TOKEN));
    assert401(write, 'createPost with a garbage token');
    assert.equal(await countTitled(title, session.accessToken), 0, 'expected createPost with a garbage token not to create a post');

    // posts is anon-readable: had the garbage token been ignored, this would succeed.
    const read = await gql(server.url, '{ posts(limit: 1) { id } }', undefined, bearer(GARBAGE_TOKEN));
    assert401(read, 'an anon-readable query with a garbage token');
  });

  test('a token with an altered signature is HTTP 401 UNAUTHENTICATED', async () => {
    const session = await signUp(server.url);
    // Same header and claims, a signature the server did not make: change its first character.
    const [header, claims, signature] = session.accessToken.split('.');
    const forged = `${header}.${claims}.${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
    assert401(await gql(server.url, ME, undefined, bearer(forged)), 'me with a token whose signature was altered');
  });
});

describe('access_token query parameter', () => {
  test('POST /graphql?access_token=<token> acts as the user', async () => {
    const session = await signUp(server.url);
    const url = new URL(server.url);
    url.searchParams.set('access_token', session.accessToken);

    const who = dataOf(await gql(url, ME), 'me with ?access_token=').me;
    assert.deepEqual(who, session.user, 'expected me with ?access_token= to be the signed-up user');

    const res = await gql(url, CREATE_POST, { title: `auth-query-${randomUUID()}` });
    const post = dataOf(res, 'createPost with ?access_token=').createPost;
    assert.equal(post.ownerId, session.user.id, 'expected a post created with ?access_token= to be owned by the user');
  });

  test('a garbage ?access_token= is HTTP 401 UNAUTHENTICATED', async () => {
    const url = new URL(server.url);
    url.searchParams.set('access_token', GARBAGE_TOKEN);
    assert401(await gql(url, '{ posts(limit: 1) { id } }'), 'an anon-readable query with a garbage ?access_token=');
  });
});

describe('refreshSession', () => {
  test('returns a new pair whose access token works', async () => {
    const first = await signUp(server.url);
    const res = await gql(server.url, REFRESH, { refreshToken: first.refreshToken });
    const second = dataOf(res, 'refreshSession with a fresh refresh token').refreshSession;
    assertSession(second, 'refreshSession');
    assert.deepEqual(second.user, first.user, 'expected refreshSession to return the same user');
    assert.notEqual(second.refreshToken, first.refreshToken, 'expected refreshSession to rotate the refresh token');
    assert.deepEqual(await me(second.accessToken), first.user, 'expected me with the refreshed access token to be the user');
  });

  test('reusing the old refresh token fails and revokes the session, new refresh token included', async () => {
    const first = await signUp(server.url);
    const second = dataOf(
      await gql(server.url, REFRESH, { refreshToken: first.refreshToken }),
      'the first refreshSession',
    ).refreshSession;

    const reused = await gql(server.url, REFRESH, { refreshToken: first.refreshToken });
    assertUnauthenticated(reused, 'refreshSession', 'refreshSession with an already-used refresh token');

    const afterReuse = await gql(server.url, REFRESH, { refreshToken: second.refreshToken });
    assertUnauthenticated(afterReuse, 'refreshSession', 'refreshSession with the new refresh token after reuse was detected');

    assert401(
      await gql(server.url, ME, undefined, bearer(second.accessToken)),
      "me with an access token of a session revoked by refresh-token reuse",
    );
  });

  test('an unknown refresh token gives UNAUTHENTICATED', async () => {
    const res = await gql(server.url, REFRESH, { refreshToken: `unknown-${uniqueSuffix()}` });
    assertUnauthenticated(res, 'refreshSession', 'refreshSession with a refresh token the server never issued');
  });
});

describe('signOut', () => {
  test('returns true; then the access token is refused and the refresh token fails', async () => {
    const session = await signUp(server.url);
    assert.deepEqual(await me(session.accessToken), session.user, 'expected the token to work before signOut');

    const out = dataOf(await gql(server.url, SIGN_OUT, { refreshToken: session.refreshToken }), 'signOut');
    assert.equal(out.signOut, true, 'expected signOut with a live refresh token to return true');

    assert401(await gql(server.url, ME, undefined, bearer(session.accessToken)), "me with a signed-out session's access token");
    const write = await gql(server.url, CREATE_POST, { title: `auth-signed-out-${randomUUID()}` }, bearer(session.accessToken));
    assert401(write, "createPost with a signed-out session's access token");

    const refreshed = await gql(server.url, REFRESH, { refreshToken: session.refreshToken });
    assertUnauthenticated(refreshed, 'refreshSession', "refreshSession with a signed-out session's refresh token");
  });

  test("ends only that session: the user's other session keeps working", async () => {
    const signedUp = await signUp(server.url);
    const other = dataOf(
      await gql(server.url, SIGN_IN, { email: signedUp.user.email, password: signedUp.password }),
      'signIn for a second session',
    ).signIn;

    const out = dataOf(await gql(server.url, SIGN_OUT, { refreshToken: signedUp.refreshToken }), 'signOut');
    assert.equal(out.signOut, true, 'expected signOut to return true');
    assert.deepEqual(await me(other.accessToken), signedUp.user, "expected the user's other session to survive signOut of the first");
  });

  test('with a refresh token that names no session returns false', async () => {
    const out = dataOf(await gql(server.url, SIGN_OUT, { refreshToken: `unknown-${uniqueSuffix()}` }), 'signOut with an unknown token');
    assert.equal(out.signOut, false, 'expected signOut with an unknown refresh token to return false');
  });
});

describe('accounts (tenancy)', () => {
  test('signUp with newAccount makes an ADMIN of a new account, whose posts stay in it', async () => {
    const slug = `acme-${uniqueSuffix()}`;
    const admin = await signUp(server.url, { newAccount: slug });
    const member = await signUp(server.url); // a user of the default account
    assert.equal(admin.user.role, 'ADMIN', 'expected signUp with newAccount to make the user ADMIN');
    assert.notEqual(admin.user.accountId, member.user.accountId, 'expected signUp with newAccount to create an account other than the default');
    assert.deepEqual(await me(admin.accessToken), admin.user, 'expected me of the new admin to be ADMIN of the new account');

    const post = await createPost(admin.accessToken, 'createPost by the new account admin');
    assert.equal(post.accountId, admin.user.accountId, "expected the admin's post to belong to the new account");
    assert.equal(post.ownerId, admin.user.id, "expected the admin's post to be owned by the admin");

    // A signed-in user of the default account sees neither the row nor that it exists.
    const asMember = await gql(server.url, POSTS_BY_ID, { id: post.id }, bearer(member.accessToken));
    assert.deepEqual(dataOf(asMember, 'posts as a default-account user').posts, [], "expected a default-account user's posts not to contain another account's post");
    const fetchedByMember = await gql(server.url, 'query ($id: ID!) { post(id: $id) { id } }', { id: post.id }, bearer(member.accessToken));
    assert.deepEqual(codesOf(fetchedByMember), ['NOT_FOUND'], `expected post(id) of another account's post to be NOT_FOUND for a default-account user: ${fetchedByMember.text}`);
    assert.equal(fetchedByMember.body.data?.post ?? null, null, `expected no post data for another account's post: ${fetchedByMember.text}`);

    // Anonymous viewers see the account they name with X-Account ...
    const named = dataOf(
      await gql(server.url, POST_BY_ID, { id: post.id }, { 'x-account': slug }),
      `an anonymous read with X-Account: ${slug}`,
    );
    assert.deepEqual(named.posts, [{ id: post.id, accountId: admin.user.accountId }], `expected anonymous posts with X-Account: ${slug} to contain the post`);
    assert.deepEqual(named.post, { id: post.id, accountId: admin.user.accountId }, `expected anonymous post(id) with X-Account: ${slug} to return the post`);

    // ... and the default account when they name none.
    const unnamed = await gql(server.url, POSTS_BY_ID, { id: post.id });
    assert.deepEqual(dataOf(unnamed, 'anonymous posts without X-Account').posts, [], 'expected anonymous posts without X-Account not to contain the new account\'s post');
    const fetchedAnon = await gql(server.url, 'query ($id: ID!) { post(id: $id) { id } }', { id: post.id });
    assert.deepEqual(codesOf(fetchedAnon), ['NOT_FOUND'], `expected anonymous post(id) without X-Account to be NOT_FOUND: ${fetchedAnon.text}`);
  });

  test('a default-account post is invisible to the admin of another account', async () => {
    const admin = await signUp(server.url, { newAccount: `acme-${uniqueSuffix()}` });
    const member = await signUp(server.url);
    const post = await createPost(member.accessToken);
    const res = await gql(server.url, POSTS_BY_ID, { id: post.id }, bearer(admin.accessToken));
    assert.deepEqual(dataOf(res, "posts as another account's admin").posts, [], "expected another account's admin not to see a default-account post");
  });
});
