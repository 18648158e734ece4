// Helpers for the realtime interop tests: real WebSocket clients (the npm `ws`
// package: Node 20 has no global WebSocket) that record every frame, a
// subscription "feed" that tests wait on with a deadline, and post writes over
// HTTP. A failed wait says what was expected and shows what was received and
// the frames on the wire, so a server bug can be read off the failure.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import WebSocket from 'ws';

import { bearer, gql } from './helpers.js';

/** How long a test waits for an event it expects before failing. */
export const WAIT_MS = 10_000;

/** The WebSocket URL of a server's /graphql endpoint (http → ws). */
export function wsUrl(httpUrl) {
  return httpUrl.replace(/^http/, 'ws');
}

/**
 * A `ws` WebSocket class that logs what its instances send and receive, to
 * hand to a client library as its WebSocket implementation.
 *
 * Resolves to `{ WebSocket, sockets, log, frames(), closes, describe() }`:
 * `sockets` are the instances in creation order (so `sockets.length` is how
 * many connections the client opened), `log` lines look like
 * `#1 -> {...}` / `#1 <- {...}` / `#1 closed 4403 "Forbidden: ..."`,
 * `frames()` is every text frame received (parsed), `closes` is
 * `{ socket, code, reason }` per closed socket.
 */
export function recordingWebSocket() {
  const sockets = [];
  const log = [];
  const received = [];
  const closes = [];
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
      const n = sockets.length;
      this.recordingNumber = n;
      this.on('message', (data, isBinary) => {
        const text = isBinary ? `(binary, ${data.length} bytes)` : data.toString();
        log.push(`#${n} <- ${text}`);
        if (!isBinary) {
          try {
            received.push({ socket: n, frame: JSON.parse(text) });
          } catch {
            received.push({ socket: n, frame: text });
          }
        }
      });
      this.on('close', (code, reason) => {
        const why = reason.toString();
        log.push(`#${n} closed ${code} ${JSON.stringify(why)}`);
        closes.push({ socket: n, code, reason: why });
      });
      this.on('error', (err) => log.push(`#${n} error ${err.message}`));
    }

    send(data, ...rest) {
      log.push(`#${this.recordingNumber} -> ${data}`);
      return super.send(data, ...rest);
    }
  }
  return {
    WebSocket: RecordingWebSocket,
    sockets,
    log,
    closes,
    /** Every text frame received, parsed, optionally only those of socket `n`. */
    frames: (n) => received.filter((r) => n === undefined || r.socket === n).map((r) => r.frame),
    describe: () => (log.length ? log.join('\n') : '(no frames)'),
  };
}

/** A readable form of whatever a client library reports as an error. */
export function describeError(err) {
  if (err === undefined) return 'no error';
  if (err && typeof err === 'object' && 'code' in err && 'reason' in err) {
    return `close ${err.code} ${JSON.stringify(String(err.reason))}`;
  }
  if (Array.isArray(err)) return `errors ${JSON.stringify(err)}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

/**
 * What one subscription delivered: `items` (each result, in order), and whether
 * it errored (`error`) or completed (`done`). Fed by a client's callbacks
 * (`next` / `error` / `complete`); tests `waitFor` a condition on the items.
 */
export class Feed {
  /** `context` adds lines (e.g. the frames on the wire) to a failure message. */
  constructor(name, context = () => '') {
    this.name = name;
    this.context = context;
    this.items = [];
    this.error = undefined;
    this.done = false;
    this.waiters = new Set();
    this.sink = {
      next: (value) => this.push(value),
      error: (err) => this.fail(err),
      complete: () => this.end(),
    };
  }

  push(value) {
    this.items.push(value);
    this.wake();
  }

  fail(err) {
    this.error = err ?? new Error('error without a value');
    this.wake();
  }

  end() {
    this.done = true;
    this.wake();
  }

  wake() {
    for (const waiter of [...this.waiters]) waiter();
  }

  describe() {
    const state = this.error !== undefined ? `errored (${describeError(this.error)})` : this.done ? 'completed' : 'open';
    const plain = (_key, v) => (v instanceof Error ? `${v.name}: ${v.message}` : v);
    const items = this.items.map((i) => `  ${JSON.stringify(i, plain)}`).join('\n') || '  (nothing)';
    const extra = this.context();
    return `${this.name}: ${state}; received:\n${items}${extra ? `\nframes:\n${extra}` : ''}`;
  }

  /**
   * Resolves to `check(items)` once that is truthy; rejects, saying `what` was
   * expected, when the feed errors or completes first or after `ms`.
   */
  waitFor(check, what, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      let timer;
      const finish = (fn, value) => {
        clearTimeout(timer);
        this.waiters.delete(poll);
        fn(value);
      };
      const poll = () => {
        let value;
        try {
          value = check(this.items);
        } catch (err) {
          finish(reject, err);
          return;
        }
        if (value) finish(resolve, value);
        else if (this.error !== undefined || this.done) {
          finish(reject, new Error(`expected ${what}, but the subscription ended first: ${this.describe()}`));
        }
      };
      timer = setTimeout(() => {
        finish(reject, new Error(`expected ${what} within ${ms / 1000} s: ${this.describe()}`));
      }, ms);
      this.waiters.add(poll);
      poll();
    });
  }

  /** Resolves to the error once the feed errors; rejects if it does not within `ms`. */
  waitForError(what, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(poll);
        reject(new Error(`expected ${what} within ${ms / 1000} s: ${this.describe()}`));
      }, ms);
      const poll = () => {
        if (this.error !== undefined) {
          clearTimeout(timer);
          this.waiters.delete(poll);
          resolve(this.error);
        }
      };
      this.waiters.add(poll);
      poll();
    });
  }
}

/**
 * The `field` payloads of a feed's items, asserting that none carries errors
 * (each item is a GraphQL result `{ data, errors? }`).
 */
export function payloads(feed, field) {
  return feed.items.map((item, i) => {
    assert.equal(item.errors, undefined, `expected result ${i} of ${feed.name} to have no errors: ${feed.describe()}`);
    assert.ok(item.data?.[field], `expected result ${i} of ${feed.name} to carry data.${field}: ${feed.describe()}`);
    return item.data[field];
  });
}

/**
 * Orders two cursors. They are opaque to clients (API.md §3), but the server
 * promises resuming "after" one replays what came later, so they must order:
 * today they are decimal strings, compared as integers; anything else falls
 * back to comparing as strings.
 */
export function compareCursors(a, b) {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Asserts that `cursors` strictly increase; `what` names the list. */
export function assertIncreasing(cursors, what) {
  for (let i = 1; i < cursors.length; i += 1) {
    assert.ok(
      compareCursors(cursors[i - 1], cursors[i]) < 0,
      `expected the cursors of ${what} to strictly increase, but #${i - 1} ${JSON.stringify(cursors[i - 1])} is not before #${i} ${JSON.stringify(cursors[i])}: ${JSON.stringify(cursors)}`,
    );
  }
}

const POST_FIELDS = 'id title ownerId';
const CREATE_POST = `mutation ($title: String!) { createPost(input: { title: $title }) { ${POST_FIELDS} } }`;
const UPDATE_POST = `mutation ($id: ID!, $title: String!) { updatePost(id: $id, input: { title: $title }) { ${POST_FIELDS} } }`;
const DELETE_POST = `mutation ($id: ID!) { deletePost(id: $id) { ${POST_FIELDS} } }`;

async function mutate(url, token, query, variables, field, what) {
  const res = await gql(url, query, variables, bearer(token));
  assert.equal(res.status, 200, `expected HTTP 200 for ${what}: ${res.text}`);
  assert.equal(res.body?.errors, undefined, `expected no errors for ${what}: ${res.text}`);
  assert.ok(res.body?.data?.[field], `expected data.${field} for ${what}: ${res.text}`);
  return res.body.data[field];
}

/** Creates a post titled `title` over HTTP as the holder of `token`; returns it. */
export function createPost(url, token, title) {
  return mutate(url, token, CREATE_POST, { title }, 'createPost', `createPost ${JSON.stringify(title)} over HTTP`);
}

/** Renames post `id` over HTTP; returns it. */
export function updatePost(url, token, id, title) {
  return mutate(url, token, UPDATE_POST, { id, title }, 'updatePost', `updatePost ${id} over HTTP`);
}

/** Deletes post `id` over HTTP; returns it as it was. */
export function deletePost(url, token, id) {
  return mutate(url, token, DELETE_POST, { id }, 'deletePost', `deletePost ${id} over HTTP`);
}

/**
 * Waits until a just-started subscription is live. graphql-ws and
 * subscriptions-transport-ws have no "subscribed" acknowledgement, so a write
 * made right after `subscribe` may commit before the server listens. This
 * creates canary posts titled `${prefix}canary-N` over HTTP, one at a time,
 * until the feed delivers one (`seen(items, title)` says whether it did).
 * Returns the canary titles created, so tests can leave them out.
 */
export async function waitLive(feed, { url, token, prefix, seen, attempts = 40, every = 250 }) {
  const canaries = [];
  for (let n = 0; n < attempts; n += 1) {
    const title = `${prefix}canary-${n}`;
    canaries.push(title);
    await createPost(url, token, title);
    try {
      await feed.waitFor((items) => canaries.some((t) => seen(items, t)), `a canary post (${title})`, every);
      return canaries;
    } catch (err) {
      if (feed.error !== undefined || feed.done) throw err;
    }
  }
  throw new Error(`expected ${feed.name} to go live (deliver one of ${attempts} canary posts): ${feed.describe()}`);
}

/** Whether a feed of `postChanged` results holds an event for a post titled `title`. */
export function seenPostTitled(items, title) {
  return items.some((i) => i.data?.postChanged?.record?.title === title);
}

/** Resolves after `ms`. */
export { sleep };
