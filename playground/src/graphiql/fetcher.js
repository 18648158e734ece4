// GraphiQL's fetcher for livegate: queries and mutations over HTTP (POST /graphql),
// subscriptions and live queries (`query @live`) over a graphql-ws WebSocket on the
// same URL, all as the signed-in user unless the headers editor says otherwise.
//
// Credentials, in order:
// - an `Authorization` header typed into the headers editor wins (on HTTP it is sent
//   as is; on the WebSocket its bearer token goes into `connection_init` as `token`);
// - else the playground session (the Sign in panel): `Authorization: Bearer <token>`
//   on HTTP and `connection_init` `{ token }` on the WebSocket;
// - else anonymous. An `X-Account` header picks the account an anonymous viewer
//   browses; on the WebSocket it becomes the `account` key of `connection_init`.

import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { getOperationAST, parse } from 'graphql';
import { createClient } from 'graphql-ws';

import { currentSession, freshAccessToken } from '../shared/session.js';

/** The value of header `name` (any case) in a headers object, or undefined. */
function header(headers, name) {
  for (const [key, value] of Object.entries(headers || {})) {
    if (key.toLowerCase() === name && value != null) return String(value);
  }
  return undefined;
}

/**
 * Whether the operation streams: a subscription, or a live query (`query @live`,
 * kept up to date by livegate: each new result replaces the last in the pane).
 */
function isStreaming(params, documentAST) {
  try {
    const doc = documentAST || parse(params.query);
    const op = getOperationAST(doc, params.operationName || undefined);
    if (op == null) return false;
    const live = op.operation === 'query' && (op.directives || []).some((d) => d.name.value === 'live');
    return op.operation === 'subscription' || live;
  } catch {
    return false; // unparsable: let the server say why, over HTTP
  }
}

function isCloseEvent(event) {
  return event != null && typeof event === 'object' && 'code' in event && 'reason' in event;
}

/**
 * What a failed subscription shows in the response pane: GraphQL errors as they
 * came, anything else as a GraphQL-shaped error (a plain object, so GraphiQL shows
 * the message without a stack trace).
 */
function describeError(err) {
  if (Array.isArray(err)) return err; // GraphQL errors from an `error` message
  if (isCloseEvent(err)) return { message: `WebSocket closed: ${err.code}${err.reason ? ` ${err.reason}` : ''}` };
  if (err instanceof Error) return { message: err.message };
  return { message: 'WebSocket error: could not reach livegate' };
}

/**
 * Builds the fetcher. `httpUrl` and `wsUrl` are the endpoint as seen from the page.
 * The fetcher is stable: it reads the session on every call, so signing in or out
 * needs no new fetcher (and no new schema introspection).
 */
export function createLivegateFetcher({ httpUrl, wsUrl }) {
  const http = createGraphiQLFetcher({ url: httpUrl, enableIncrementalDelivery: false });

  // One lazy graphql-ws client per identity: it opens a socket with the first
  // subscription and closes it after the last, so an idle identity costs nothing.
  // A running subscription keeps the socket (and identity) it started with.
  const clients = new Map();
  function clientFor(key, connectionParams, { refreshes = false } = {}) {
    let client = clients.get(key);
    if (!client) {
      client = createClient({
        url: wsUrl,
        connectionParams,
        lazy: true,
        retryAttempts: 3,
        // 4403 is final (a bad token, or anonymous sockets not allowed) unless the
        // token merely expired and the session can refresh it on reconnect.
        shouldRetry: (event) => !(isCloseEvent(event) && event.code === 4403 && !(refreshes && /expired/i.test(event.reason))),
      });
      clients.set(key, client);
    }
    return client;
  }

  function wsClient(editorHeaders) {
    const account = header(editorHeaders, 'x-account');
    const withAccount = (params) => (account ? { ...params, account } : params);
    const explicit = header(editorHeaders, 'authorization');
    if (explicit) {
      const token = explicit.replace(/^Bearer\s+/i, '');
      return clientFor(`header:${token}:${account || ''}`, () => withAccount({ token }));
    }
    const session = currentSession();
    if (session) {
      // Read the token at each (re)connect, so a reconnect after the server closed
      // an expired token's socket (4403) comes back with a refreshed one.
      const userId = session.user.id;
      const options = { refreshes: Boolean(session.refreshToken) };
      return clientFor(`session:${userId}:${account || ''}`, async () => {
        const token = await freshAccessToken();
        const now = currentSession();
        // Signed out, or in as someone else, since this socket was opened: end its
        // subscriptions rather than carry them on under another identity.
        if (!token || !now || now.user.id !== userId) throw new Error('signed out or in as another user');
        return withAccount({ token });
      }, options);
    }
    return clientFor(`anonymous:${account || ''}`, () => withAccount({}));
  }

  return async (params, opts = {}) => {
    const editorHeaders = opts.headers || {};
    if (isStreaming(params, opts.documentAST)) {
      const client = wsClient(editorHeaders);
      return {
        subscribe(sink) {
          const dispose = client.subscribe(params, {
            next: (value) => sink.next(value),
            error: (err) => sink.error(describeError(err)),
            complete: () => sink.complete(),
          });
          return { unsubscribe: dispose };
        },
      };
    }
    const headers = { ...editorHeaders };
    if (!header(editorHeaders, 'authorization')) {
      const token = await freshAccessToken();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    return http(params, { ...opts, headers });
  };
}
