// Rooms as real clients see them (/work/shared/API.md §3 `room`, `sendToRoom`,
// `roomMembers`; §4 rooms): two graphql-ws clients and one graphql-sse client
// in one room see each other's presence and exchange messages, whichever
// transport they send over.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';

import { bearer, gql, signUp, startServer, uniqueSuffix } from './helpers.js';
import { Feed, wsUrl } from './realtime-helpers.js';

const ROOM = `subscription Room($name: String!) {
  room(name: $name) { room kind payload from { peerId userId email } at }
}`;
const SEND = `mutation Send($room: String!, $kind: String!, $payload: JSON) {
  sendToRoom(room: $room, kind: $kind, payload: $payload)
}`;

/** The room events a feed received (asserting none carried errors). */
function events(feed) {
  return feed.items.map((item) => {
    assert.equal(item.errors, undefined, `${feed.name}: ${JSON.stringify(item)}`);
    return item.data.room;
  });
}

/** The sync event's own peer id (a member's first event is the roster). */
function ownPeer(feed) {
  const [sync] = events(feed);
  assert.equal(sync.kind, 'presence');
  assert.equal(sync.payload.event, 'sync');
  return sync.from.peerId;
}

describe('rooms with graphql-ws and graphql-sse clients', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('two graphql-ws members and a graphql-sse member: presence, messages over every transport, leave', async (t) => {
    const suffix = uniqueSuffix();
    const room = `team-${suffix}`;
    const [ada, bob, cy] = await Promise.all(
      ['ada', 'bob', 'cy'].map((who) => signUp(server.url, { email: `${who}-${suffix}@example.com` })),
    );
    const wsClient = (session) =>
      createWsClient({
        url: wsUrl(server.url),
        webSocketImpl: WebSocket,
        connectionParams: { token: session.accessToken },
        retryAttempts: 0,
      });
    const adaWs = wsClient(ada);
    const bobWs = wsClient(bob);
    const cySse = createSseClient({
      url: `${server.url}/stream`,
      headers: bearer(cy.accessToken),
      retryAttempts: 0,
    });
    t.after(() => {
      adaWs.dispose();
      bobWs.dispose();
      cySse.dispose();
    });

    // Ada joins first: her roster is herself.
    const adaFeed = new Feed('ada room');
    const stopAda = adaWs.subscribe({ query: ROOM, variables: { name: room } }, adaFeed.sink);
    t.after(stopAda);
    await adaFeed.waitFor((items) => items.length >= 1, 'ada sync');
    const adaPeer = ownPeer(adaFeed);
    assert.deepEqual(
      events(adaFeed)[0].payload.members.map((m) => m.email),
      [ada.user.email],
    );

    // Bob (graphql-ws) and Cy (graphql-sse) join; everyone sees the others arrive.
    const bobFeed = new Feed('bob room');
    const stopBob = bobWs.subscribe({ query: ROOM, variables: { name: room } }, bobFeed.sink);
    t.after(stopBob);
    await bobFeed.waitFor((items) => items.length >= 1, 'bob sync');
    const bobPeer = ownPeer(bobFeed);
    const cyFeed = new Feed('cy room (sse)');
    const stopCy = cySse.subscribe({ query: ROOM, variables: { name: room } }, cyFeed.sink);
    await cyFeed.waitFor((items) => items.length >= 1, 'cy sync');
    const cyPeer = ownPeer(cyFeed);
    assert.deepEqual(
      events(cyFeed)[0].payload.members.map((m) => m.peerId),
      [adaPeer, bobPeer, cyPeer],
      'the roster, in order of joining, the new member included',
    );
    const joins = (feed) =>
      events(feed)
        .filter((e) => e.kind === 'presence' && e.payload.event === 'join')
        .map((e) => e.payload.member.peerId);
    await adaFeed.waitFor(() => joins(adaFeed).length >= 2, 'ada sees bob and cy join');
    assert.deepEqual(joins(adaFeed), [bobPeer, cyPeer]);
    await bobFeed.waitFor(() => joins(bobFeed).length >= 1, 'bob sees cy join');
    assert.deepEqual(joins(bobFeed), [cyPeer]);

    const members = await gql(server.url, `query($r: String!) { roomMembers(room: $r) { peerId email } }`, { r: room }, bearer(bob.accessToken));
    assert.deepEqual(members.body.data.roomMembers.map((m) => m.peerId), [adaPeer, bobPeer, cyPeer]);

    // Messages: Ada over her socket (so from her membership), Cy over HTTP
    // beside her SSE membership, Bob over his socket.
    const send = (client, payload) =>
      new Promise((resolve, reject) => {
        let result;
        client.subscribe(
          { query: SEND, variables: { room, kind: 'chat', payload } },
          { next: (r) => (result = r), error: reject, complete: () => resolve(result) },
        );
      });
    const sentByAda = await send(adaWs, { text: 'hi from ada' });
    assert.deepEqual(sentByAda, { data: { sendToRoom: true } });
    const sentByCy = await gql(server.url, SEND, { room, kind: 'chat', payload: { text: 'hi from cy' } }, bearer(cy.accessToken));
    assert.equal(sentByCy.body.data.sendToRoom, true, JSON.stringify(sentByCy.body));
    await send(bobWs, { text: 'hi from bob' });

    const chat = (feed) => events(feed).filter((e) => e.kind === 'chat');
    for (const feed of [adaFeed, bobFeed, cyFeed]) {
      await feed.waitFor(() => chat(feed).length >= 3, `${feed.name}: three messages`);
      const got = chat(feed);
      assert.deepEqual(
        got.map((e) => e.payload.text),
        ['hi from ada', 'hi from cy', 'hi from bob'],
        `${feed.name}: every message, the member's own included, in order`,
      );
      assert.equal(got[0].from.peerId, adaPeer, 'sent over the socket that holds the membership: from that member');
      assert.equal(got[2].from.peerId, bobPeer);
      assert.equal(got[1].from.email, cy.user.email, 'sent over HTTP: from a one-off peer of that user');
      assert.ok(got.every((e) => e.room === room && typeof e.at === 'string'));
    }

    // Cy leaves (the SSE stream closes); the others see her go.
    stopCy();
    const leaves = (feed) =>
      events(feed)
        .filter((e) => e.kind === 'presence' && e.payload.event === 'leave')
        .map((e) => e.payload.member.peerId);
    await adaFeed.waitFor(() => leaves(adaFeed).includes(cyPeer), 'ada sees cy leave');
    await bobFeed.waitFor(() => leaves(bobFeed).includes(cyPeer), 'bob sees cy leave');
    const after = await gql(server.url, `query($r: String!) { roomMembers(room: $r) { peerId } }`, { r: room }, bearer(ada.accessToken));
    assert.deepEqual(after.body.data.roomMembers.map((m) => m.peerId), [adaPeer, bobPeer]);
  });

  test('an anonymous client may not join a members-only room', async (t) => {
    const client = createWsClient({ url: wsUrl(server.url), webSocketImpl: WebSocket, retryAttempts: 0 });
    t.after(() => client.dispose());
    const feed = new Feed('anonymous room');
    client.subscribe({ query: ROOM, variables: { name: `team-${uniqueSuffix()}` } }, feed.sink);
    await feed.waitFor((items) => items.length >= 1, 'an error result');
    assert.equal(feed.items[0].errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', JSON.stringify(feed.items[0]));
  });
});
