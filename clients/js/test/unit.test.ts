// Unit tests without a server: how subscription documents are prepared to
// resume, JWT expiry, and the event-stream reader.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parse, print } from 'graphql';

import { jwtTimes } from '@livegate/client';
// Internal modules, from the build.
import { prepareSubscription } from '#internal/document.js';
import { readEventStream, type ServerSentEvent } from '#internal/sse.js';

const norm = (q: string) => print(parse(q));

describe('prepareSubscription', () => {
  test('adds `after` and `cursor` when the document has neither', () => {
    const p = prepareSubscription('subscription { postChanged(actions: [CREATE]) { id } }', undefined);
    assert.equal(
      p.query,
      norm('subscription ($livegateAfter: String) { postChanged(actions: [CREATE], after: $livegateAfter) { id livegateCursor: cursor } }'),
    );
    assert.deepEqual(p.resume, {
      rootKey: 'postChanged',
      cursorKey: 'livegateCursor',
      cursorAdded: true,
      afterVariable: 'livegateAfter',
      callerVariable: false,
      literalAfter: undefined,
    });
  });

  test("uses the caller's `after` variable, alias and cursor alias", () => {
    const p = prepareSubscription('subscription S($a: String) { c: changes(after: $a) { at: cursor collection } }', undefined);
    assert.equal(p.query, norm('subscription S($a: String) { c: changes(after: $a) { at: cursor collection } }'));
    assert.equal(p.operationName, 'S');
    assert.deepEqual(p.resume, {
      rootKey: 'c',
      cursorKey: 'at',
      cursorAdded: false,
      afterVariable: 'a',
      callerVariable: true,
      literalAfter: undefined,
    });
  });

  test('a literal `after` becomes the first cursor', () => {
    const p = prepareSubscription('subscription { noteChanged(after: "42") { cursor } }', undefined);
    assert.equal(p.resume?.literalAfter, '42');
    assert.match(p.query, /noteChanged\(after: \$livegateAfter\)/);
  });

  test('rooms and opted-out subscriptions are sent as written', () => {
    const room = 'subscription { room(name: "x") { kind } }';
    assert.equal(prepareSubscription(room, undefined).resume, undefined);
    assert.equal(prepareSubscription('subscription { postChanged { id } }', false).resume, undefined);
  });

  test('a cursor under @include does not count as selected', () => {
    const p = prepareSubscription('subscription ($c: Boolean!) { postChanged { cursor @include(if: $c) } }', undefined);
    assert.equal(p.resume?.cursorKey, 'livegateCursor');
  });

  test('refuses queries', () => {
    assert.throws(() => prepareSubscription('query { me { id } }', undefined), /takes a subscription/);
  });
});

describe('jwtTimes', () => {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  test('reads exp and iat in ms', () => {
    assert.deepEqual(jwtTimes(`${b64({ alg: 'HS256' })}.${b64({ exp: 100, iat: 40 })}.sig`), { exp: 100_000, iat: 40_000 });
  });
  test('undefined for opaque tokens', () => {
    assert.equal(jwtTimes('opaque'), undefined);
    assert.equal(jwtTimes(`${b64({})}.${b64({ sub: 'x' })}.sig`), undefined);
  });
});

describe('readEventStream', () => {
  const stream = (chunks: string[]) =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const chunk of chunks) c.enqueue(new TextEncoder().encode(chunk));
        c.close();
      },
    });

  test('events, ids, comments, CRLF split across chunks, an unfinished event dropped', async () => {
    const events: ServerSentEvent[] = [];
    const last = await readEventStream(
      stream([': hi\n\nevent: change\nid: 1\ndata: {"a":', '1}\r', '\n\r\ndata: x\ndata: y\n\nid: 3\ndata: cut']),
      '0',
      (e) => events.push(e),
    );
    assert.deepEqual(events, [
      { event: 'change', data: '{"a":1}', id: '1' },
      { event: 'message', data: 'x\ny', id: '1' },
    ]);
    assert.equal(last, '1', 'the unfinished event 3 does not count as received');
  });
});
