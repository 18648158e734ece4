// @livegate/client against a real livegate server: typed subscriptions, a
// network cut mid-stream (through a loopback proxy), token renewal before
// expiry and after a 4403, the /realtime feed across a reconnect, and rooms.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { createClient, jwtTimes, type LivegateClient, type LiveChange, type RoomEvent, type RoomMember } from '@livegate/client';
import { CreatePost, DeletePost, Me, PostChanged, PostChangedAfter, UpdatePost } from './documents.js';
import type { PostChangedSubscription } from './gql/graphql.js';
import {
  gql,
  randomWrites,
  recordingWebSocket,
  refreshSession,
  signUp,
  sleep,
  startProxy,
  startServer,
  suffix,
  waitUntil,
  type Server,
  type Session,
  type Write,
} from './helpers.js';

type Change = PostChangedSubscription['postChanged'];
type Received = { action: string; id: string; cursor?: string };

/** Fast reconnects for tests (the default backoff tops out at 10 s). */
const FAST = { maxRetryDelayMs: 500 };

/**
 * Waits until a subscription is live: creates canary posts titled
 * `${prefix}canary-N` until one arrives (graphql-ws has no "subscribed" signal).
 */
async function waitLive(url: string, token: string, prefix: string, seen: (id: string) => boolean): Promise<Set<string>> {
  const canaries = new Set<string>();
  for (let n = 0; n < 60; n += 1) {
    const d = await gql<{ createPost: { id: string } }>(
      url,
      `mutation ($t: String!) { createPost(input: { title: $t }) { id } }`,
      { t: `${prefix}canary-${n}` },
      token,
    );
    canaries.add(d.createPost.id);
    const deadline = Date.now() + 250;
    while (Date.now() < deadline) {
      if ([...canaries].some(seen)) return canaries;
      await sleep(10);
    }
  }
  throw new Error('the subscription never went live');
}

/** Asserts `received` (less canaries) is exactly `writes`, in order, each once. */
function assertExactlyOnce(received: Received[], writes: Write[], canaries: Set<string>, what: string) {
  const got = received.filter((e) => !canaries.has(e.id)).map((e) => `${e.action} ${e.id}`);
  const want = writes.map((w) => `${w.action} ${w.id}`);
  const missing = want.filter((w) => !got.includes(w));
  assert.deepEqual(got, want, `${what}: expected every write once, in order (missing: ${JSON.stringify(missing)}, got ${got.length}, want ${want.length})`);
  const cursors = received.map((e) => e.cursor).filter((c): c is string => c !== undefined);
  assert.equal(new Set(cursors).size, cursors.length, `${what}: a cursor was delivered twice`);
  for (let i = 1; i < cursors.length; i += 1) {
    assert.ok(BigInt(cursors[i - 1]!) < BigInt(cursors[i]!), `${what}: cursors out of order at ${i}: ${cursors.join(',')}`);
  }
}

describe('@livegate/client', () => {
  let server: Server;
  let ada: Session;
  const clients: LivegateClient[] = [];
  const client = (options: Omit<Parameters<typeof createClient>[0], 'url'> & { url?: string }) => {
    const c = createClient({ url: server.url, webSocketImpl: WebSocket, ...FAST, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startServer();
    ada = await signUp(server.url);
  });
  after(async () => {
    for (const c of clients) c.dispose();
    await server?.stop();
  });

  test('request() and subscribe() are typed by codegen documents; create, update and delete arrive', async () => {
    const c = client({ token: ada.accessToken });
    const me = await c.request(Me);
    assert.equal(me.me?.email, ada.user.email);

    const prefix = `typed-${suffix()}-`;
    const changes: Change[] = [];
    const errors: unknown[] = [];
    const stop = c.subscribe(
      PostChanged,
      { where: { title: { startsWith: prefix } } },
      {
        next: (result) => {
          const change = result.data?.postChanged;
          if (!change) return;
          // Typed by the document: these lines fail `tsc` if the types do not flow.
          const action: 'CREATE' | 'UPDATE' | 'DELETE' = change.action;
          const title: string | undefined = change.record?.title;
          // @ts-expect-error `cursor` was not selected, so it is not in the type
          void change.cursor;
          void action;
          void title;
          changes.push(change);
        },
        error: (e) => errors.push(e),
      },
    );
    const canaries = await waitLive(server.url, ada.accessToken, prefix, (id) => changes.some((ch) => ch.id === id));

    const created = await c.request(CreatePost, { input: { title: `${prefix}one` } });
    const updated = await c.request(UpdatePost, { id: created.createPost.id, title: `${prefix}two` });
    await c.request(DeletePost, { id: updated.updatePost.id });
    const mine = () => changes.filter((ch) => !canaries.has(ch.id));
    await waitUntil(() => mine().length >= 3, () => JSON.stringify(changes));
    assert.deepEqual(
      mine().map((ch) => [ch.action, ch.id, ch.record?.title]),
      [
        ['CREATE', created.createPost.id, `${prefix}one`],
        ['UPDATE', created.createPost.id, `${prefix}two`],
        ['DELETE', created.createPost.id, `${prefix}two`],
      ],
    );
    for (const ch of changes) assert.ok(!('livegateCursor' in ch) && !('cursor' in ch), 'the cursor the client added is not delivered');
    assert.match(stop.cursor ?? '', /^\d+$/, 'the subscription tracks its cursor');
    assert.deepEqual(errors, []);
    stop();
  });

  test('a network cut mid-stream: every event exactly once, in order', async () => {
    const proxy = await startProxy(server.port);
    try {
      const rec = recordingWebSocket();
      // Pings every 500 ms and a 1-second connect timeout: a frozen connection
      // (or handshake) is given up within a second or so.
      const c = client({
        url: `http://127.0.0.1:${proxy.port}/graphql`,
        token: ada.accessToken,
        webSocketImpl: rec.WebSocket,
        keepAlive: 500,
        connectTimeoutMs: 1000,
      });
      const prefix = `cut-${suffix()}-`;
      const received: Received[] = [];
      const errors: unknown[] = [];
      const stop = c.subscribe(
        PostChangedAfter,
        { where: { title: { startsWith: prefix } } },
        {
          next: (r) => {
            const ch = r.data?.postChanged;
            if (ch) received.push({ action: ch.action, id: ch.id, cursor: ch.cursor });
          },
          error: (e) => errors.push(e),
        },
      );
      const canaries = await waitLive(server.url, ada.accessToken, prefix, (id) => received.some((e) => e.id === id));

      const subscribes = () => rec.sent.filter((f) => f.includes('"type":"subscribe"')).length;
      const count = 40 + Math.floor(Math.random() * 40);
      const first = Math.floor(count / 4);
      const frozen = Math.floor(count / 2);
      const second = Math.floor((count * 3) / 4);
      let outage: Promise<void> | undefined;
      const writes = await randomWrites(server.url, ada.accessToken, prefix, count, async (i) => {
        if (i === first) proxy.cut(); // a blip: reconnects at once
        if (i === frozen) {
          // Once the client is back from the cut: silence (the connection stays
          // open, nothing gets through), which only its unanswered ping notices.
          await waitUntil(() => subscribes() >= 2, () => `no resubscription after the cut:\n${rec.sent.join('\n')}`);
          proxy.freeze();
        }
        if (i === second) {
          // Once the client gave up on the frozen connection and came back:
          // down a while, and writes go on.
          await waitUntil(() => subscribes() >= 3, () => `no resubscription after the freeze:\n${rec.sent.join('\n')}`);
          outage = proxy.down(1500);
        }
      });
      await outage;
      await waitUntil(
        () => received.filter((e) => !canaries.has(e.id)).length >= writes.length,
        () => `${received.length} events, ${writes.length} writes; errors ${JSON.stringify(errors)}`,
        20_000,
      );
      await sleep(300); // a duplicate would arrive now
      assertExactlyOnce(received, writes, canaries, `${count} writes, a cut, a freeze and an outage`);
      assert.ok(proxy.connections() >= 4, `expected the client to reconnect three times, saw ${proxy.connections()} connections`);
      const resumed = rec.sent.filter((f) => f.includes('"type":"subscribe"') && /"after":"\d+"/.test(f));
      assert.ok(resumed.length >= 3, `expected resubscriptions with after: a cursor, sent:\n${rec.sent.join('\n')}`);
      assert.deepEqual(errors, []);
      stop();
    } finally {
      await proxy.close();
    }
  });

  test('a connection lost before the first event loses nothing: the subscription starts from Query.cursor', async () => {
    const proxy = await startProxy(server.port);
    try {
      const rec = recordingWebSocket();
      const c = client({ url: `http://127.0.0.1:${proxy.port}/graphql`, token: ada.accessToken, webSocketImpl: rec.WebSocket, keepAlive: 500, connectTimeoutMs: 1000 });
      const prefix = `early-${suffix()}-`;
      const received: Received[] = [];
      const errors: unknown[] = [];
      const stop = c.subscribe(
        PostChangedAfter,
        { where: { title: { startsWith: prefix } } },
        {
          next: (r) => {
            const ch = r.data?.postChanged;
            if (ch) received.push({ action: ch.action, id: ch.id, cursor: ch.cursor });
          },
          error: (e) => errors.push(e),
        },
      );
      // The client has read where the feeds stand; the network goes down before
      // any event (and maybe before the subscribe frame got through), and
      // writes land meanwhile.
      await waitUntil(() => stop.cursor !== undefined, () => `no starting cursor; sent:\n${rec.sent.join('\n')}`);
      const outage = proxy.down(1500);
      const writes = await randomWrites(server.url, ada.accessToken, prefix, 10 + Math.floor(Math.random() * 10));
      await outage;
      await waitUntil(
        () => received.length >= writes.length,
        () => `${received.length} events, ${writes.length} writes; errors ${JSON.stringify(errors)}; sent:\n${rec.sent.join('\n')}`,
        20_000,
      );
      await sleep(300); // a duplicate would arrive now
      assertExactlyOnce(received, writes, new Set(), 'writes during an outage before the first event');
      assert.deepEqual(errors, []);
      stop();
    } finally {
      await proxy.close();
    }
  });

  test('a token function is read on every request and connection; one that fails for a while is retried', async () => {
    let stored: string | undefined;
    let failures = 0;
    const reported: unknown[] = [];
    const c = client({
      token: async () => {
        if (failures > 0) {
          failures -= 1;
          throw new Error('offline');
        }
        return stored;
      },
      onError: (e) => reported.push(e),
    });
    assert.equal((await c.request(Me)).me, null, 'anonymous before the sign-in');
    stored = ada.accessToken; // the app signs in after creating the client
    assert.equal((await c.request(Me)).me?.email, ada.user.email, 'the stored token is used from then on');

    // The socket cannot get its token twice (offline), then can: it retries
    // instead of ending the subscription.
    failures = 2;
    const prefix = `tokfail-${suffix()}-`;
    const received: Received[] = [];
    const errors: unknown[] = [];
    const stop = c.subscribe(
      PostChangedAfter,
      { where: { title: { startsWith: prefix } } },
      {
        next: (r) => {
          const ch = r.data?.postChanged;
          if (ch) received.push({ action: ch.action, id: ch.id, cursor: ch.cursor });
        },
        error: (e) => errors.push(e),
      },
    );
    // Once it has its starting cursor (read over the socket, so connected):
    await waitUntil(() => stop.cursor !== undefined, () => `no starting cursor; errors ${JSON.stringify(errors)}; reported ${reported.length}`);
    const writes = await randomWrites(server.url, ada.accessToken, prefix, 5);
    await waitUntil(() => received.length >= writes.length, () => `${received.length} events; errors ${JSON.stringify(errors)}; reported ${reported.length}`, 20_000);
    assertExactlyOnce(received, writes, new Set(), 'after two failed token reads');
    assert.deepEqual(errors, []);
    assert.ok(reported.length >= 1, 'the failed token reads were reported');
    stop();
  });

  test('live(): the /realtime feed resumes with Last-Event-ID across a cut', async () => {
    const proxy = await startProxy(server.port);
    try {
      const c = client({ url: `http://127.0.0.1:${proxy.port}/graphql`, token: ada.accessToken });
      // The feed carries every posts change of the account; the writes below
      // are the only ones made while it runs (this suite runs one test at a time).
      const got: LiveChange[] = [];
      let opens = 0;
      const errors: unknown[] = [];
      const stop = c.live('posts', (ch) => got.push(ch), { onOpen: () => (opens += 1), onError: (e) => errors.push(e) });
      const prefix = `live-${suffix()}-`;
      const canaries = new Set<string>();
      for (let n = 0; got.length === 0; n += 1) {
        assert.ok(n < 60, 'the feed never went live');
        const d = await gql<{ createPost: { id: string } }>(server.url, `mutation ($t: String!) { createPost(input: { title: $t }) { id } }`, { t: `${prefix}canary-${n}` }, ada.accessToken);
        canaries.add(d.createPost.id);
        await sleep(200);
      }
      const before = got.length;
      const count = 20 + Math.floor(Math.random() * 20);
      let outage: Promise<void> | undefined;
      const writes = await randomWrites(server.url, ada.accessToken, prefix, count, (i) => {
        if (i === Math.floor(count / 2)) outage = proxy.down(1000);
      });
      await outage;
      await waitUntil(() => got.length - before >= writes.length, () => `${got.length - before} of ${writes.length}: ${JSON.stringify(errors)}`, 20_000);
      await sleep(300);
      const after = got.slice(before);
      assert.deepEqual(
        after.map((ch) => `${ch.collection} ${ch.action}`),
        writes.map((w) => `posts ${w.action.toLowerCase()}`),
        'every change once, in order',
      );
      const cursors = got.map((ch) => BigInt(ch.cursor));
      assert.ok(cursors.every((cur, i) => i === 0 || cursors[i - 1]! < cur), 'cursors increase');
      assert.ok(opens >= 2, `expected a reconnect, saw ${opens} opens`);
      assert.deepEqual(errors, []);
      stop();
    } finally {
      await proxy.close();
    }
  });

  test('room(): roster, handlers by kind, send, leave', async () => {
    const bobSession = await signUp(server.url);
    const name = `chat:${suffix()}`;
    const adaC = client({ token: ada.accessToken });
    const bobC = client({ token: bobSession.accessToken });

    const adaChat: Array<{ payload: unknown; from: RoomMember }> = [];
    const adaOther: RoomEvent[] = [];
    const adaRosters: RoomMember[][] = [];
    const adaRoom = adaC.room(name, {
      on: { chat: (payload, event) => adaChat.push({ payload, from: event.from }) },
      onMessage: (event) => adaOther.push(event),
      onMembers: (m) => adaRosters.push(m),
    });
    const first = await adaRoom.joined;
    assert.deepEqual(first.map((m) => m.email), [ada.user.email]);
    assert.equal(adaRoom.self()?.email, ada.user.email);

    const bobChat: unknown[] = [];
    const bobRoom = bobC.room(name, { on: { chat: (payload) => bobChat.push(payload) } });
    const bobFirst = await bobRoom.joined;
    assert.deepEqual(bobFirst.map((m) => m.email), [ada.user.email, bobSession.user.email]);
    await waitUntil(() => adaRoom.members().length === 2, () => JSON.stringify(adaRosters));
    assert.deepEqual(
      adaRoom.members().map((m) => m.peerId),
      bobRoom.members().map((m) => m.peerId),
      'both see the same roster',
    );

    assert.equal(await bobRoom.send('chat', { text: 'hi from bob' }), true);
    assert.equal(await adaRoom.send('typing', { on: true }), true);
    await waitUntil(() => adaChat.length === 1 && adaOther.length === 1 && bobChat.length === 1, () => JSON.stringify({ adaChat, adaOther, bobChat }));
    assert.deepEqual(adaChat[0]!.payload, { text: 'hi from bob' });
    assert.equal(adaChat[0]!.from.peerId, bobRoom.self()?.peerId, 'sent from bob\'s membership');
    assert.equal(adaOther[0]!.kind, 'typing', 'a kind without a handler goes to onMessage');
    assert.deepEqual(bobChat, [{ text: 'hi from bob' }], 'the sender hears its own message');

    bobRoom.leave();
    await waitUntil(() => adaRoom.members().length === 1, () => JSON.stringify(adaRoom.members()));
    assert.equal(adaRoom.members()[0]!.email, ada.user.email);
    adaRoom.leave();
  });
});

describe('@livegate/client token renewal (5-second access tokens)', () => {
  let server: Server;
  const clients: LivegateClient[] = [];

  before(async () => {
    server = await startServer({ LIVEGATE_ACCESS_TOKEN_TTL: '5' });
  });
  after(async () => {
    for (const c of clients) c.dispose();
    await server?.stop();
  });

  /** A session whose `refresh` rotates the refresh token and records when it ran. */
  async function renewingSession() {
    const session = await signUp(server.url);
    let refreshToken = session.refreshToken;
    let current = session.accessToken;
    const calls: Array<{ at: number; exp: number }> = [];
    const refresh = async () => {
      calls.push({ at: Date.now(), exp: jwtTimes(current)!.exp });
      const next = await refreshSession(server.url, refreshToken);
      refreshToken = next.refreshToken;
      current = next.accessToken;
      return current;
    };
    return { session, refresh, calls };
  }

  async function run(label: string, extra: { refreshMarginMs?: number }) {
    const { session, refresh, calls } = await renewingSession();
    const rec = recordingWebSocket();
    const c = createClient({ url: server.url, token: session.accessToken, refresh, webSocketImpl: rec.WebSocket, ...FAST, ...extra });
    clients.push(c);
    const prefix = `${label}-${suffix()}-`;
    const received: Received[] = [];
    const errors: unknown[] = [];
    const stop = c.subscribe(
      PostChanged,
      { where: { title: { startsWith: prefix } } },
      {
        next: (r) => {
          const ch = r.data?.postChanged;
          if (ch) received.push({ action: ch.action, id: ch.id });
        },
        error: (e) => errors.push(e),
      },
    );
    // The /realtime feed of the same client, across the same renewals. Nothing
    // else writes to this server while the test runs.
    const hints: LiveChange[] = [];
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    let opens = 0;
    const stopLive = c.live('posts', (ch) => hints.push(ch), {
      onOpen: () => {
        opens += 1;
        opened();
      },
      onError: (e) => errors.push(e),
    });
    await open;
    // Writes by a second user, whose session is refreshed before each batch.
    let writer = await signUp(server.url);
    const canaries = await waitLive(server.url, writer.accessToken, prefix, (id) => received.some((e) => e.id === id));
    const writes: Write[] = [];
    const end = Date.now() + 11_000; // past two expiries of the subscriber's token
    while (Date.now() < end) {
      writer = await refreshSession(server.url, writer.refreshToken);
      writes.push(...(await randomWrites(server.url, writer.accessToken, `${prefix}${writes.length}-`, 12, () => {}, 60)));
    }
    await waitUntil(() => received.filter((e) => !canaries.has(e.id)).length >= writes.length, () => `${received.length} of ${writes.length}; ${JSON.stringify(errors)}`);
    await sleep(300);
    assertExactlyOnce(received, writes, canaries, label);
    await waitUntil(() => hints.length >= canaries.size + writes.length, () => `live: ${hints.length} of ${canaries.size + writes.length}`);
    await sleep(300);
    assert.deepEqual(
      hints.map((h) => h.action),
      [...[...canaries].map(() => 'create'), ...writes.map((w) => w.action.toLowerCase())],
      `${label}: the /realtime feed got every change once, in order`,
    );
    assert.ok(opens >= 2, `${label}: the /realtime feed reconnected across the renewals (${opens} opens)`);
    assert.deepEqual(errors, []);
    stop();
    stopLive();
    return { calls, closes: rec.closes, sent: rec.sent };
  }

  test('refresh() runs before the token expires; the socket reconnects with the new one; no event lost', async () => {
    const { calls, closes } = await run('renew', {});
    assert.ok(calls.length >= 2, `expected at least two renewals in 11 s of 5-second tokens, got ${calls.length}`);
    for (const call of calls) assert.ok(call.at < call.exp, `refresh() ran ${call.at - call.exp} ms after the token expired`);
    assert.ok(!closes.includes(4403), `the server never had to close for an expired token: ${closes.join(',')}`);
    assert.ok(closes.filter((code) => code === 4000).length >= 2, `expected the client's own reconnects (4000): ${closes.join(',')}`);
  });

  test('a 4403 close (token expired first) renews and resumes; no event lost', async () => {
    // A margin below zero: the client only renews once the server closed the socket.
    const { calls, closes, sent } = await run('forbidden', { refreshMarginMs: -60_000 });
    assert.ok(closes.includes(4403), `expected the server to close with 4403: ${closes.join(',')}`);
    assert.ok(calls.length >= 1, 'refresh() was called after the 4403');
    assert.ok(sent.some((f) => f.includes('"type":"subscribe"') && /"livegateAfter":"\d+"/.test(f)), 'resubscribed with after');
  });
});
