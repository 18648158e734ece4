// Benchmark peer: graphql-yoga on Node's http server, on SQLite (better-sqlite3).
//   HTTP:      POST/GET /graphql (GraphQL over HTTP, yoga's own handler)
//   WebSocket: /graphql, subprotocol graphql-transport-ws (graphql-ws's `useServer` on `ws`)
//   SSE:       /graphql with `Accept: text/event-stream` (yoga's built-in GraphQL over SSE,
//              distinct connections mode: `event: next` / `event: complete`)
//   GET /healthz answers 200.
// Env: PORT (default 4100, 0 = any free port), DB_PATH (default: a temp file), JWT_SECRET.
// See ../README.md.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Database from 'better-sqlite3';
import { GraphQLError } from 'graphql';
import { createPubSub, createSchema, createYoga } from 'graphql-yoga';
import { useServer } from 'graphql-ws/use/ws';
import jwt from 'jsonwebtoken';
import { WebSocketServer } from 'ws';

import { bearerToken, initToken, makeVerifier, UNAUTHENTICATED_BODY } from '../common/auth.mjs';
import { InputError, openStore, portFromEnv } from '../common/store.mjs';

const ENDPOINT = '/graphql';
const TOPIC = 'postChanged';
/** livegate's example app pings every 30 s (`heartbeat_seconds`); graphql-ws's default is 12 s. */
const WS_KEEP_ALIVE_MS = 30_000;

const typeDefs = readFileSync(new URL('../common/schema.graphql', import.meta.url), 'utf8');
const verify = makeVerifier(jwt);
const port = portFromEnv();
const store = openStore(Database);
const pubsub = createPubSub();

function requireUser(user) {
  if (!user) throw new GraphQLError('Unauthenticated', { extensions: { code: 'UNAUTHENTICATED' } });
  return user;
}

const resolvers = {
  Query: {
    posts: (_root, { limit }) => store.listPosts(limit),
    post: (_root, { id }) => store.getPost(id),
    postsCount: () => store.countPosts(),
  },
  Mutation: {
    createPost: (_root, { input }, { user }) => {
      let change;
      try {
        change = store.createPost(requireUser(user).id, input);
      } catch (err) {
        if (err instanceof InputError) throw new GraphQLError(err.message, { extensions: { code: err.code } });
        throw err;
      }
      // Published after the commit (store.createPost returns only once it has committed).
      pubsub.publish(TOPIC, change);
      return change.record;
    },
  },
  Subscription: {
    postChanged: {
      subscribe: () => pubsub.subscribe(TOPIC),
      resolve: (change) => change,
    },
  },
};

const yoga = createYoga({
  schema: createSchema({ typeDefs, resolvers }),
  graphqlEndpoint: ENDPOINT,
  graphiql: false,
  landingPage: false,
  logging: false,
  // HTTP and SSE: `req.user` was set by the gate below; WebSocket: `user` comes from onConnect.
  context: ({ req, user }) => ({ user: user ?? req?.user ?? null }),
});

const server = createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('ok');
    return;
  }
  // Auth on every request: one JWT check per HTTP request or SSE stream.
  const user = verify(bearerToken(req.headers.authorization));
  if (!user) {
    res.writeHead(401, { 'content-type': 'application/json; charset=utf-8', 'www-authenticate': 'Bearer' });
    res.end(UNAUTHENTICATED_BODY);
    return;
  }
  req.user = user;
  yoga(req, res);
});

// graphql-ws over `ws`, the recipe from yoga's docs ("Subscriptions: graphql-ws").
const wsServer = new WebSocketServer({ server, path: ENDPOINT });
useServer(
  {
    // A missing or bad token: returning false makes graphql-ws close with 4403 Forbidden.
    onConnect: (ctx) => {
      const user = verify(initToken(ctx.connectionParams));
      if (!user) return false;
      ctx.extra.user = user;
      return true;
    },
    execute: (args) => args.rootValue.execute(args),
    subscribe: (args) => args.rootValue.subscribe(args),
    onSubscribe: async (ctx, _id, params) => {
      const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
        ...ctx,
        req: ctx.extra.request,
        socket: ctx.extra.socket,
        params,
        user: ctx.extra.user,
      });
      const args = {
        schema,
        operationName: params.operationName,
        document: parse(params.query),
        variableValues: params.variables,
        contextValue: await contextFactory(),
        rootValue: { execute, subscribe },
      };
      const errors = validate(args.schema, args.document);
      if (errors.length) return errors;
      return args;
    },
  },
  wsServer,
  // graphql-ws pings with WebSocket ping frames and drops a peer that sends no pong in time.
  WS_KEEP_ALIVE_MS,
);

function fail(err) {
  console.error(`yoga peer: ${err?.stack ?? err}`);
  store.close();
  process.exit(1);
}
server.on('error', fail);
wsServer.on('error', fail);

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  store.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}${ENDPOINT}`);
});
