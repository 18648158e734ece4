// Benchmark peer: fastify + mercurius, on SQLite (better-sqlite3).
//   HTTP:      POST/GET /graphql (mercurius's routes)
//   WebSocket: /graphql, subprotocol graphql-transport-ws (mercurius's own subscription
//              server on @fastify/websocket; it also speaks the legacy `graphql-ws`)
//   GET /healthz answers 200.
// Env: PORT (default 4100, 0 = any free port), DB_PATH (default: a temp file), JWT_SECRET,
// BARE (1: the bare mode: no token check, no event row, no publish, no subscriptions; every
// request is the one user `anonymous`. What a quick trial of mercurius compares against).
// See ../README.md.

import { readFileSync } from 'node:fs';

import Database from 'better-sqlite3';
import Fastify from 'fastify';
import jwt from 'jsonwebtoken';
import mercurius from 'mercurius';

import { bearerToken, initToken, makeVerifier, UNAUTHENTICATED_BODY } from '../common/auth.mjs';
import { InputError, openStore, portFromEnv } from '../common/store.mjs';

const ENDPOINT = '/graphql';
const TOPIC = 'POST_CHANGED';
/** livegate's example app pings every 30 s (`heartbeat_seconds`). */
const WS_KEEP_ALIVE_MS = 30_000;

/** The bare mode's one user: every request is served as it, token or not. */
const BARE_USER = { id: 'anonymous' };

const { ErrorWithProps } = mercurius;
const BARE = bareFromEnv();
const typeDefs = readFileSync(new URL('../common/schema.graphql', import.meta.url), 'utf8');
const verify = makeVerifier(jwt);
const port = portFromEnv();
const store = openStore(Database, undefined, { events: !BARE });

const app = Fastify({ logger: false });
app.decorateRequest('user', null);

function requireUser(user) {
  if (!user) throw new ErrorWithProps('Unauthenticated', { code: 'UNAUTHENTICATED' });
  return user;
}

const resolvers = {
  Query: {
    posts: (_root, { limit }) => store.listPosts(limit),
    post: (_root, { id }) => store.getPost(id),
    postsCount: () => store.countPosts(),
  },
  Mutation: {
    createPost: async (_root, { input }, { user }) => {
      let change;
      try {
        change = store.createPost(requireUser(user).id, input);
      } catch (err) {
        if (err instanceof InputError) throw new ErrorWithProps(err.message, { code: err.code });
        throw err;
      }
      // Published after the commit (store.createPost returns only once it has committed).
      if (!BARE) await app.graphql.pubsub.publish({ topic: TOPIC, payload: change });
      return change.record;
    },
  },
  Subscription: {
    postChanged: {
      subscribe: (_root, _args, { pubsub }) => pubsub.subscribe(TOPIC),
      resolve: (change) => change,
    },
  },
};

app.get('/healthz', (_request, reply) => {
  reply.type('text/plain; charset=utf-8').send('ok');
});

// Auth on every HTTP request (not in the bare mode). A WebSocket upgrade carries its token
// in `connection_init` instead (checked by onConnect below), as graphql-ws clients send it.
if (!BARE) app.addHook('onRequest', async (request, reply) => {
  if (request.url === '/healthz') return;
  if (request.headers.upgrade?.toLowerCase() === 'websocket') return;
  const user = verify(bearerToken(request.headers.authorization));
  if (!user) {
    reply
      .code(401)
      .header('content-type', 'application/json; charset=utf-8')
      .header('www-authenticate', 'Bearer')
      .send(UNAUTHENTICATED_BODY);
    return reply;
  }
  request.user = user;
});

await app.register(mercurius, {
  schema: typeDefs,
  resolvers,
  path: ENDPOINT,
  graphiql: false,
  context: BARE ? () => ({ user: BARE_USER }) : (request) => ({ user: request.user }),
  // The bare mode publishes nothing, so it has no WebSocket endpoint either.
  subscription: !BARE && {
    keepAlive: WS_KEEP_ALIVE_MS,
    // A missing or bad token: returning false makes mercurius send `connection_error` and close.
    onConnect: ({ payload }) => {
      const user = verify(initToken(payload));
      return user ? { user } : false;
    },
  },
});

/** BARE: unset, empty or 0 is off, 1 is on; anything else is refused (not silently off). */
function bareFromEnv() {
  const raw = process.env.BARE ?? '';
  if (raw === '' || raw === '0') return false;
  if (raw === '1') return true;
  throw new Error(`BARE must be 0 or 1, got ${JSON.stringify(raw)}`);
}

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  store.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

try {
  await app.listen({ port, host: '127.0.0.1' });
} catch (err) {
  console.error(`mercurius peer: ${err?.stack ?? err}`);
  store.close();
  process.exit(1);
}
console.log(`listening on http://127.0.0.1:${app.server.address().port}${ENDPOINT}`);
