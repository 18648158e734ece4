// The demo's graphql-ws client: one WebSocket on /graphql for the signed-in user,
// carrying the posts' live query and the chat's subscriptions and mutations.

import { createClient } from 'graphql-ws';

import { graphqlWsUrl } from '../shared/endpoints.js';
import { freshAccessToken } from '../shared/session.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isCloseEvent(event) {
  return event != null && typeof event === 'object' && 'code' in event && 'reason' in event;
}

/**
 * A graphql-ws client that connects with the session's token. It reads the token
 * at every (re)connect, so after livegate closes the socket of an expired token
 * (4403 "Forbidden: token expired") it comes back with a refreshed one; any other
 * 4403 (a revoked token, signed out) is final. `onStatus` hears 'connected' and
 * 'closed'.
 */
export function createLiveClient({ onStatus = () => {} } = {}) {
  return createClient({
    url: graphqlWsUrl(),
    connectionParams: async () => ({ token: await freshAccessToken() }),
    retryAttempts: 20,
    retryWait: (retries) => sleep(Math.min(1000 * 2 ** retries, 10_000)),
    shouldRetry: (event) => isCloseEvent(event) && !(event.code === 4403 && !/expired/i.test(event.reason)),
    on: {
      connected: () => onStatus('connected'),
      closed: () => onStatus('closed'),
    },
  });
}

/** Starts a subscription; `onData(data)` for each event. Returns a function that ends it. */
export function subscribe(client, query, variables, onData, onError) {
  return client.subscribe(
    { query, variables },
    {
      next: (result) => {
        if (result.errors) onError(result.errors);
        else onData(result.data);
      },
      error: onError,
      complete: () => {},
    },
  );
}

/** Runs one query or mutation over the socket; resolves to its `data`. */
export function execute(client, query, variables) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe(
      { query, variables },
      {
        next: (value) => (result = value),
        error: reject,
        complete: () => (result && result.errors ? reject(result.errors) : resolve(result && result.data)),
      },
    );
  });
}

/** A short text for whatever a request or a socket failed with. */
export function describeError(err) {
  if (Array.isArray(err)) return err.map((e) => e.message).join('; '); // GraphQL errors
  if (isCloseEvent(err)) return `connection closed (${err.code}${err.reason ? ` ${err.reason}` : ''})`;
  if (err && err.code) return `${err.message} (${err.code})`;
  return String((err && err.message) || err || 'cannot reach livegate');
}
