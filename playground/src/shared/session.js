// The signed-in session of the playground pages: sign up, sign in, use a pasted
// token, refresh before expiry, sign out. Kept in localStorage so a reload (or a
// second tab) stays signed in; every page of the playground shares it.
//
// A session is { accessToken, refreshToken?, expiresAt?, user: { id, email, role, accountId } }.
// A pasted token has no refresh token: when it expires, paste a new one.

import { graphqlHttpUrl } from './endpoints.js';

const STORAGE_KEY = 'livegate.playground.session';
/** Refresh an access token this long before it expires. */
const REFRESH_MARGIN_MS = 60_000;

const USER_FIELDS = 'user { id email role accountId }';
const SESSION_FIELDS = `accessToken refreshToken expiresAt ${USER_FIELDS}`;

const listeners = new Set();
let session = load();
let refreshing = null;

function load() {
  try {
    const raw = window.localStorage.getItem(STORAGE_KEY);
    const value = raw ? JSON.parse(raw) : null;
    return value && typeof value.accessToken === 'string' ? value : null;
  } catch {
    return null;
  }
}

function store(next) {
  session = next;
  try {
    if (next) window.localStorage.setItem(STORAGE_KEY, JSON.stringify(next));
    else window.localStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage may be disabled (private mode): the session then lasts as long as the page.
  }
  for (const listener of listeners) listener(session);
}

// Another tab signed in or out: follow it.
window.addEventListener('storage', (event) => {
  if (event.key !== STORAGE_KEY) return;
  session = load();
  for (const listener of listeners) listener(session);
});

/** The current session, or null when signed out (anonymous). */
export function currentSession() {
  return session;
}

/** Calls `listener(session)` on every change; returns a function that stops it. */
export function onSessionChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** A GraphQL error from livegate, with its `extensions.code`. */
export class GraphQLRequestError extends Error {
  constructor(message, code) {
    super(message);
    this.name = 'GraphQLRequestError';
    this.code = code;
  }
}

/** POSTs one operation to /graphql; resolves to `data`, rejects with the first error. */
export async function request(query, variables = {}, token = null) {
  const headers = { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(graphqlHttpUrl(), { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch (err) {
    throw new GraphQLRequestError(`cannot reach livegate: ${err.message}`, 'NETWORK');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLRequestError(`livegate answered HTTP ${response.status} without a GraphQL body`, 'NETWORK');
  }
  if (body.errors && body.errors.length > 0) {
    const first = body.errors[0];
    throw new GraphQLRequestError(first.message, first.extensions && first.extensions.code);
  }
  return body.data;
}

/** Signs in with email and password. */
export async function signIn(email, password) {
  const data = await request(
    `mutation PlaygroundSignIn($email: String!, $password: String!) {
      signIn(email: $email, password: $password) { ${SESSION_FIELDS} } }`,
    { email, password },
  );
  store(data.signIn);
  return data.signIn;
}

/** Creates a user (in the default account, or as the admin of a new account) and signs in. */
export async function signUp(email, password, newAccount) {
  const data = await request(
    `mutation PlaygroundSignUp($email: String!, $password: String!, $newAccount: String) {
      signUp(email: $email, password: $password, newAccount: $newAccount) { ${SESSION_FIELDS} } }`,
    { email, password, newAccount: newAccount || null },
  );
  store(data.signUp);
  return data.signUp;
}

/** Uses a token minted elsewhere (`livegate token`, an identity provider), after checking it. */
export async function signInWithToken(token) {
  const accessToken = token.trim().replace(/^Bearer\s+/i, '');
  if (!accessToken) throw new GraphQLRequestError('paste an access token first', 'BAD_USER_INPUT');
  const data = await request('query PlaygroundMe { me { id email role accountId } }', {}, accessToken);
  if (!data.me) throw new GraphQLRequestError('livegate read no user from that token', 'UNAUTHENTICATED');
  const next = { accessToken, refreshToken: null, expiresAt: expiryOf(accessToken), user: data.me };
  store(next);
  return next;
}

/** Signs out: revokes the session's refresh token (when there is one) and forgets the session. */
export async function signOut() {
  const ending = session;
  store(null);
  if (ending && ending.refreshToken) {
    try {
      await request('mutation PlaygroundSignOut($t: String!) { signOut(refreshToken: $t) }', { t: ending.refreshToken });
    } catch {
      // Already revoked or expired: either way it is no longer usable.
    }
  }
}

/**
 * The access token to send now, or null when signed out. Refreshes it first when it
 * expires within a minute and a refresh token is at hand; one refresh at a time.
 */
export async function freshAccessToken() {
  const now = session;
  if (!now) return null;
  const expires = now.expiresAt ? Date.parse(now.expiresAt) : NaN;
  if (!now.refreshToken || !(expires - Date.now() < REFRESH_MARGIN_MS)) return now.accessToken;
  if (!refreshing) {
    refreshing = request(
      `mutation PlaygroundRefresh($t: String!) { refreshSession(refreshToken: $t) { ${SESSION_FIELDS} } }`,
      { t: now.refreshToken },
    )
      .then((data) => {
        if (session === now) store(data.refreshSession);
      })
      .catch(() => {
        // The refresh token was revoked or expired: sign out rather than send a dead token.
        if (session === now) store(null);
      })
      .finally(() => {
        refreshing = null;
      });
  }
  await refreshing;
  return session ? session.accessToken : null;
}

/** The `exp` claim of a JWT as an ISO date, or null when it cannot be read. */
function expiryOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    return typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : null;
  } catch {
    return null;
  }
}
