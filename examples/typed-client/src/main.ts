// The typed example client: signs up (or uses $LIVEGATE_TOKEN), lists posts with a
// filter over HTTP, subscribes to `postChanged` and `changes` over graphql-ws,
// creates a post, and prints what arrives. Exits 0 once both subscriptions have
// delivered an event for its post, 1 on an error or after $TIMEOUT_MS (20 s).
//
//   LIVEGATE_URL=http://127.0.0.1:4000/graphql npm start
//   npm run live          # the same against a throwaway livegate it starts itself
import { randomBytes } from 'node:crypto';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { Changes, CreatePost, ListPosts, PostChanged, SignUp } from './documents.js';
import type { ChangesSubscription, PostChangedSubscription, PostWhere, RoomSubscription } from './gql/graphql.js';
import { Room, RoomMembers, SendToRoom } from './room.js';
import { request, subscribe } from './graphql.js';

const url = process.env['LIVEGATE_URL'] ?? 'http://localhost:4000/graphql';
const timeoutMs = Number(process.env['TIMEOUT_MS'] ?? 20_000);
/** How long to wait for an event before writing another post (see below). */
const RETRY_MS = 1_000;

const tag = `typed-client-${randomBytes(4).toString('hex')}`;
const log = (line: string) => console.log(`[typed-client] ${line}`);

/** Resolves once `done()` holds or at `deadline` (ms since the epoch), whichever is first. */
async function waitUntil(done: () => boolean, deadline: number): Promise<void> {
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
}

async function signIn(): Promise<string> {
  const given = process.env['LIVEGATE_TOKEN'];
  if (given) {
    log('using the access token in $LIVEGATE_TOKEN');
    return given;
  }
  const { signUp } = await request(url, SignUp, {
    email: `${tag}@example.com`,
    password: 'correct horse battery staple',
  });
  log(`signed up ${signUp.user.email} (${signUp.user.role}, id ${signUp.user.id})`);
  return signUp.accessToken;
}

async function main(): Promise<void> {
  const token = await signIn();

  // Typed variables: a misspelt filter field or operator fails `tsc`.
  const mine: PostWhere = { title: { startsWith: tag } };
  const before = await request(url, ListPosts, { where: mine, limit: 10 }, token);
  log(`posts whose title starts with "${tag}": ${before.postsCount}`);
  const published = await request(url, ListPosts, { where: { published: { eq: true } }, limit: 3 }, token);
  log(`published posts: ${published.postsCount} (latest: ${published.posts.map((p) => JSON.stringify(p.title)).join(', ') || 'none'})`);

  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: { token },
    retryAttempts: 0,
  });

  let postEvent: PostChangedSubscription['postChanged'] | undefined;
  let changeEvent: ChangesSubscription['changes'] | undefined;
  let failure: unknown;
  const fail = (error: unknown) => {
    failure ??= error;
  };
  let connected = false;
  client.on('connected', () => {
    connected = true;
  });

  const stopPosts = subscribe(client, PostChanged, { where: mine }, ({ postChanged: e }) => {
    log(`postChanged: ${e.action} ${e.id} ${JSON.stringify(e.record?.title)} views=${e.record?.views} at ${e.at} (cursor ${e.cursor})`);
    postEvent ??= e;
  }, fail);
  const stopChanges = subscribe(client, Changes, { collections: ['posts'] }, ({ changes: e }) => {
    log(`changes: ${e.collection} ${e.action} at ${e.at} (cursor ${e.cursor})`);
    changeEvent ??= e;
  }, fail);
  log(`subscribed to postChanged(where: title startsWith "${tag}") and changes(collections: ["posts"])`);

  // graphql-ws does not acknowledge that a subscription is live, so a post written
  // at once could commit before the server has registered it. Wait for the
  // connection, write a post, and another each second until both feeds have
  // delivered one (or time runs out).
  const deadline = Date.now() + timeoutMs;
  const bothArrived = () => postEvent !== undefined && changeEvent !== undefined;
  let written = 0;
  try {
    await waitUntil(() => connected || failure !== undefined, deadline);
    while (failure === undefined && !bothArrived()) {
      if (Date.now() >= deadline) {
        throw new Error(`timed out after ${timeoutMs} ms: postChanged ${postEvent ? 'arrived' : 'missing'}, changes ${changeEvent ? 'arrived' : 'missing'}`);
      }
      written += 1;
      const { createPost: post } = await request(url, CreatePost, {
        input: { title: `${tag} #${written}`, body: 'Written by the typed example client.', published: true },
      }, token);
      log(`created post ${post.id} ${JSON.stringify(post.title)} at ${post.createdAt}`);
      await waitUntil(() => failure !== undefined || bothArrived(), Math.min(Date.now() + RETRY_MS, deadline));
    }
    if (failure !== undefined) throw failure;
  } finally {
    stopPosts();
    stopChanges();
    await client.dispose();
  }

  await roomRoundTrip(token, deadline);

  const after = await request(url, ListPosts, { where: mine, limit: 10 }, token);
  log(`posts whose title starts with "${tag}": ${after.postsCount}`);
  log(`received postChanged (${postEvent?.action} ${postEvent?.id}) and changes (${changeEvent?.collection} ${changeEvent?.action}): done`);
}

/** Joins a room, sends a message to it over HTTP and waits for it to come back. */
async function roomRoundTrip(token: string, deadline: number): Promise<void> {
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: { token },
    retryAttempts: 0,
  });
  const events: RoomSubscription['room'][] = [];
  let failure: unknown;
  const stop = subscribe(client, Room, { name: tag }, ({ room }) => {
    log(`room ${room.room}: ${room.kind} ${JSON.stringify(room.payload)} from ${room.from.email ?? room.from.peerId}`);
    events.push(room);
  }, (error) => {
    failure ??= error;
  });
  try {
    // The first event of a member is the roster: the membership is live then.
    await waitUntil(() => events.length > 0 || failure !== undefined, deadline);
    if (failure !== undefined) throw failure;
    const { roomMembers } = await request(url, RoomMembers, { room: tag }, token);
    log(`roomMembers(${tag}): ${roomMembers.map((m) => m.email ?? m.peerId).join(', ')}`);
    const { sendToRoom } = await request(url, SendToRoom, { room: tag, kind: 'chat', payload: { text: 'hello' } }, token);
    log(`sendToRoom: ${sendToRoom}`);
    await waitUntil(() => events.some((e) => e.kind === 'chat') || failure !== undefined, deadline);
    if (failure !== undefined) throw failure;
    if (!events.some((e) => e.kind === 'chat')) throw new Error('the room message did not come back in time');
  } finally {
    stop();
    await client.dispose();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`[typed-client] failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
