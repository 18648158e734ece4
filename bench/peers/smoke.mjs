#!/usr/bin/env node
// Smoke test of the two benchmark peers (yoga, mercurius): for each, start it on a free
// port with a fresh database, then check /healthz, the auth gate, a graphql-ws
// subscription (and, for yoga, GraphQL over SSE with POST and with GET) receiving the
// CREATE of a post made over HTTP, the queries, and a clean stop by PID. Then mercurius
// in its bare mode (BARE=1): createPost and the queries without a token, no event row.
//
//   npm ci --prefix bench/peers/yoga && npm ci --prefix bench/peers/mercurius
//   node bench/peers/smoke.mjs            # or: node bench/peers/smoke.mjs yoga mercurius-bare
//
// Exits non-zero on any failure. The clients (graphql-ws, ws) come from yoga's node_modules.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** What each name starts: a peer's folder, and its extra environment. */
const PEERS = {
  yoga: { dir: 'yoga', env: {} },
  mercurius: { dir: 'mercurius', env: {} },
  'mercurius-bare': { dir: 'mercurius', env: { BARE: '1' } },
};
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const START_TIMEOUT_MS = 10_000;
const PEER_TIMEOUT_MS = 30_000;
/** How long each createPost waits for every subscriber before the next is tried. */
const ATTEMPT_WINDOW_MS = 200;
const MAX_ATTEMPTS = 25;
const LISTENING = /^listening on http:\/\/127\.0\.0\.1:(\d+)\/graphql$/;

for (const dir of ['yoga', 'mercurius']) {
  if (!existsSync(join(HERE, dir, 'node_modules'))) {
    console.error(`smoke: ${dir}/node_modules is missing; run: npm ci --prefix ${join(HERE, dir)}`);
    process.exit(2);
  }
}
const requireFromYoga = createRequire(join(HERE, 'yoga', 'package.json'));
const { createClient } = requireFromYoga('graphql-ws');
const WebSocket = requireFromYoga('ws');
// To read the bare peer's database file after it stopped.
const Database = createRequire(join(HERE, 'mercurius', 'package.json'))('better-sqlite3');

// ---------------------------------------------------------------- helpers

function b64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256 JWT signed here with node:crypto (independently of the peers' jsonwebtoken). */
function signJwt(claims, secret = SECRET) {
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Errors as text: Error, a WebSocket close event, GraphQL errors. */
function describe(errors) {
  return JSON.stringify(
    errors.map((e) => (e instanceof Error ? e.message : e?.code ? `close ${e.code} ${e.reason ?? ''}` : e)),
  );
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Children still running, so that any exit path stops them (by PID). */
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** Starts a peer with PORT=0 and DB_PATH in `dir`; resolves once it printed its line. */
function startPeer(peer, dir) {
  const dbPath = join(dir, 'peer.db');
  // A stale file at DB_PATH: the peer must start on a fresh database anyway.
  writeFileSync(dbPath, 'not a database');
  const { dir: peerDir, env } = PEERS[peer];
  const child = spawn(process.execPath, [join(HERE, peerDir, 'server.mjs')], {
    env: { ...process.env, BARE: '', PORT: '0', DB_PATH: dbPath, JWT_SECRET: SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    stderr += chunk;
  });
  const ready = new Promise((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      stdout += chunk;
      const newline = stdout.indexOf('\n');
      if (newline >= 0) {
        const line = stdout.slice(0, newline);
        const m = LISTENING.exec(line);
        if (m) resolve(Number(m[1]));
        else reject(new Error(`first stdout line is not "listening on ...": ${JSON.stringify(line)}`));
      }
    });
    child.on('error', reject);
    exited.then(({ code, signal }) =>
      reject(new Error(`${peer} exited (code ${code}, signal ${signal}) before listening:\n${stderr}`)),
    );
  });
  return {
    child,
    dbPath,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    port: withTimeout(ready, START_TIMEOUT_MS, `${peer} to print its listening line`),
  };
}

async function stopPeer(proc) {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return proc.exited;
  process.kill(proc.child.pid, 'SIGTERM');
  try {
    return await withTimeout(proc.exited, 5_000, 'the peer to exit on SIGTERM');
  } catch (err) {
    process.kill(proc.child.pid, 'SIGKILL');
    await proc.exited;
    throw err;
  }
}

async function graphql(base, token, query, variables) {
  const headers = { 'content-type': 'application/json', accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

const CREATE_POST = `mutation Create($input: PostCreateInput!) {
  createPost(input: $input) { id ownerId title body published createdAt }
}`;
const POST_CHANGED = `subscription { postChanged { action id cursor at record { id ownerId title body published createdAt } } }`;

/** A subscriber over graphql-ws: collects `postChanged` payloads. */
function wsSubscriber(base, token) {
  const events = [];
  const errors = [];
  let connected;
  const ready = new Promise((resolve) => {
    connected = resolve;
  });
  const client = createClient({
    url: `${base.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { token },
    lazy: false,
    retryAttempts: 0,
    keepAlive: 0,
    onNonLazyError: (err) => errors.push(err),
    on: { connected: () => connected() },
  });
  const dispose = client.subscribe(
    { query: POST_CHANGED },
    {
      next: (result) => {
        if (result.errors) errors.push(result.errors);
        else events.push(result.data.postChanged);
      },
      error: (err) => errors.push(err),
      complete: () => {},
    },
  );
  return {
    name: 'graphql-ws',
    events,
    errors,
    ready,
    async close() {
      dispose();
      await client.dispose();
    },
  };
}

/**
 * A subscriber over GraphQL over SSE (distinct connections mode): a POST with a JSON body,
 * or a GET with the query in the URL, both with `Accept: text/event-stream`.
 */
function sseSubscriber(base, token, method) {
  const events = [];
  const errors = [];
  const controller = new AbortController();
  let responded;
  const ready = new Promise((resolve) => {
    responded = resolve;
  });
  const url = new URL(`${base}/graphql`);
  const init = {
    method,
    headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
    signal: controller.signal,
  };
  if (method === 'POST') {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify({ query: POST_CHANGED });
  } else {
    url.searchParams.set('query', POST_CHANGED);
  }
  const done = (async () => {
    const res = await fetch(url, init).finally(() => responded());
    if (res.status !== 200) throw new Error(`SSE ${method}: HTTP ${res.status}: ${await res.text()}`);
    const type = res.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream')) throw new Error(`SSE ${method}: content-type ${type}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':') || line === '') continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
        if (data.length === 0 && event === 'message') continue; // a comment-only block (ping)
        if (event === 'next') {
          const result = JSON.parse(data.join('\n'));
          if (result.errors) errors.push(result.errors);
          else events.push(result.data.postChanged);
        } else if (event === 'complete') {
          return;
        } else {
          errors.push(new Error(`SSE ${method}: unexpected event ${JSON.stringify(event)}`));
        }
      }
    }
  })().catch((err) => {
    if (err.name !== 'AbortError') errors.push(err);
  });
  return {
    name: `SSE ${method}`,
    events,
    errors,
    ready,
    async close() {
      controller.abort();
      await done;
    },
  };
}

/**
 * Opens a raw graphql-transport-ws socket, sends `connection_init` with `payload`, and
 * reports what came back before the server closed it (or `acked` if it acknowledged).
 */
function rawInit(base, payload) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
      const messages = [];
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload })));
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data));
        messages.push(msg.type);
        if (msg.type === 'connection_ack') {
          ws.close(1000);
        }
      });
      ws.on('close', (code, reason) => resolve({ code, reason: String(reason), messages, protocol: ws.protocol }));
      ws.on('error', reject);
    }),
    5_000,
    'a raw graphql-transport-ws handshake',
  );
}

// ---------------------------------------------------------------- the checks

/** The queries read what was written: `created` posts, the last one owned by `owner`. */
async function readsBack(base, token, created, owner) {
  const last = created.at(-1);
  const read = await graphql(base, token, `query ($id: ID!) {
    postsCount posts(limit: 1) { id } post(id: $id) { id title ownerId } missing: post(id: "nope") { id }
  }`, { id: last.id });
  assert.equal(read.status, 200, JSON.stringify(read.body));
  assert.deepEqual(read.body.data, {
    postsCount: created.length,
    posts: [{ id: last.id }],
    post: { id: last.id, title: last.title, ownerId: owner },
    missing: null,
  });
}

async function smoke(peer) {
  const dir = mkdtempSync(join(tmpdir(), `livegate-smoke-${peer}-`));
  const proc = startPeer(peer, dir);
  const subscribers = [];
  try {
    const port = await proc.port;
    assert.ok(port > 0, 'a real port');
    const base = `http://127.0.0.1:${port}`;
    const user = `user-${peer}`;
    const token = signJwt({ sub: user, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 });

    // Liveness, and the auth gate on HTTP.
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200, '/healthz answers 200');
    await health.arrayBuffer();
    for (const [what, bad] of [
      ['no token', null],
      ['a token signed with another secret', signJwt({ sub: user }, 'not-the-secret-not-the-secret-not-the-secret')],
      ['an expired token', signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) - 60 })],
    ]) {
      const res = await graphql(base, bad, '{ postsCount }');
      assert.equal(res.status, 401, `HTTP with ${what} is 401`);
      assert.equal(res.body?.errors?.[0]?.extensions?.code, 'UNAUTHENTICATED', `HTTP with ${what}: UNAUTHENTICATED`);
    }

    // The stale file at DB_PATH was replaced by a fresh database.
    const fresh = await graphql(base, token, '{ postsCount posts { id } }');
    assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
    assert.deepEqual(fresh.body, { data: { postsCount: 0, posts: [] } }, 'a fresh database per start');

    // The auth gate on WebSocket: a bad or missing token is refused, a good one acknowledged.
    const good = await rawInit(base, { token });
    assert.equal(good.protocol, 'graphql-transport-ws', 'the server picks graphql-transport-ws');
    // (mercurius sends its first keep-alive `ping` right after the ack)
    assert.equal(good.messages[0], 'connection_ack', 'a good token is acknowledged');
    const refusals = {};
    for (const [what, payload] of [
      ['no token', {}],
      ['a bad token', { token: signJwt({ sub: user }, 'not-the-secret-not-the-secret-not-the-secret') }],
    ]) {
      const refused = await rawInit(base, payload);
      assert.ok(!refused.messages.includes('connection_ack'), `WS with ${what} is not acknowledged`);
      if (peer === 'yoga') assert.equal(refused.code, 4403, `WS with ${what} closes with 4403`);
      refusals[what] = `close ${refused.code}${refused.messages.length ? ` after ${refused.messages.join(',')}` : ''}`;
    }

    // Subscribers: graphql-ws on both; GraphQL over SSE (POST and GET) on yoga.
    subscribers.push(wsSubscriber(base, token));
    if (peer === 'yoga') subscribers.push(sseSubscriber(base, token, 'POST'), sseSubscriber(base, token, 'GET'));

    // There is no "subscribed" acknowledgement in either protocol, so once every subscriber
    // is connected, create posts until every subscriber has the latest one (the first may
    // still come before a subscription is live on the server).
    await withTimeout(Promise.all(subscribers.map((s) => s.ready)), 5_000, 'subscribers to connect').catch((err) => {
      throw new Error(`${err.message}; ${subscribers.map((s) => `${s.name} errors: ${describe(s.errors)}`).join('; ')}`);
    });
    const created = [];
    let last;
    for (let attempt = 1; ; attempt++) {
      const input = { title: `smoke ${peer} ${attempt}`, body: 'hello' };
      const res = await graphql(base, token, CREATE_POST, { input });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.errors, undefined, JSON.stringify(res.body.errors));
      last = res.body.data.createPost;
      created.push(last);
      assert.equal(last.ownerId, user, 'ownerId is the token sub');
      assert.equal(last.published, false, 'published defaults to false');
      assert.equal(last.title, input.title);
      assert.ok(!Number.isNaN(Date.parse(last.createdAt)), 'createdAt is a date');
      const deadline = Date.now() + ATTEMPT_WINDOW_MS;
      while (Date.now() < deadline && !subscribers.every((s) => s.events.some((e) => e.id === last.id))) {
        for (const s of subscribers) assert.equal(s.errors.length, 0, `${s.name} errors: ${describe(s.errors)}`);
        await sleep(10);
      }
      if (subscribers.every((s) => s.events.some((e) => e.id === last.id))) break;
      assert.ok(attempt < MAX_ATTEMPTS, `subscribers never received a CREATE: ${subscribers.map((s) => `${s.name}: ${s.events.length} events`).join('; ')}`);
    }
    for (const s of subscribers) {
      assert.equal(s.errors.length, 0, `${s.name} errors: ${describe(s.errors)}`);
      const change = s.events.find((e) => e.id === last.id);
      assert.equal(change.action, 'CREATE', `${s.name}: action`);
      assert.deepEqual(change.record, last, `${s.name}: the record is the created post`);
      assert.match(change.cursor, /^[1-9][0-9]*$/, `${s.name}: the cursor is the event id`);
      assert.equal(change.cursor, String(created.length), `${s.name}: one event per create`);
      assert.equal(change.at, last.createdAt, `${s.name}: at`);
      for (const e of s.events) assert.ok(created.some((p) => p.id === e.id), `${s.name}: only created posts`);
    }

    // The queries read what was written.
    await readsBack(base, token, created, user);

    for (const s of subscribers.splice(0)) await s.close();
    const exit = await stopPeer(proc);
    assert.equal(exit.code, 0, `${peer} exits 0 on SIGTERM (got code ${exit.code}, signal ${exit.signal})`);
    assert.equal(proc.stdout(), `listening on http://127.0.0.1:${port}/graphql\n`, 'exactly one line on stdout');
    return { port, posts: created.length, refusals };
  } finally {
    for (const s of subscribers) await s.close().catch(() => {});
    await stopPeer(proc).catch(() => {});
    if (proc.stderr().trim()) console.error(`--- ${peer} stderr:\n${proc.stderr().trimEnd()}`);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * mercurius with BARE=1: no token needed (none, or a bad one, is served as the one user
 * `anonymous`), createPost and the queries work, and the database has the posts but no
 * event row.
 */
async function smokeBare(peer) {
  const dir = mkdtempSync(join(tmpdir(), `livegate-smoke-${peer}-`));
  const proc = startPeer(peer, dir);
  try {
    const port = await proc.port;
    assert.ok(port > 0, 'a real port');
    const base = `http://127.0.0.1:${port}`;

    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200, '/healthz answers 200');
    await health.arrayBuffer();

    const fresh = await graphql(base, null, '{ postsCount posts { id } }');
    assert.equal(fresh.status, 200, `no token is served: ${JSON.stringify(fresh.body)}`);
    assert.deepEqual(fresh.body, { data: { postsCount: 0, posts: [] } }, 'a fresh database per start');

    const created = [];
    for (const [what, token] of [
      ['no token', null],
      ['a token signed with another secret', signJwt({ sub: 'someone' }, 'not-the-secret-not-the-secret-not-the-secret')],
    ]) {
      const input = { title: `smoke ${peer} ${created.length + 1}`, body: 'hello' };
      const res = await graphql(base, token, CREATE_POST, { input });
      assert.equal(res.status, 200, `createPost with ${what}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.errors, undefined, JSON.stringify(res.body.errors));
      const post = res.body.data.createPost;
      assert.equal(post.ownerId, 'anonymous', `createPost with ${what}: ownerId is the one bare user`);
      assert.equal(post.title, input.title);
      assert.equal(post.published, false, 'published defaults to false');
      assert.ok(!Number.isNaN(Date.parse(post.createdAt)), 'createdAt is a date');
      created.push(post);
    }
    const long = await graphql(base, null, CREATE_POST, { input: { title: 'x'.repeat(201) } });
    assert.equal(long.body?.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', 'a 201-character title is BAD_USER_INPUT');

    await readsBack(base, null, created, 'anonymous');
    const all = await graphql(base, null, '{ posts { id } }');
    assert.deepEqual(all.body.data.posts.map((p) => p.id), created.map((p) => p.id).reverse(), 'posts, newest first');

    const exit = await stopPeer(proc);
    assert.equal(exit.code, 0, `${peer} exits 0 on SIGTERM (got code ${exit.code}, signal ${exit.signal})`);
    assert.equal(proc.stdout(), `listening on http://127.0.0.1:${port}/graphql\n`, 'exactly one line on stdout');

    // The file at DB_PATH outlives the peer: the posts are there, the event log is empty.
    const db = new Database(proc.dbPath, { readonly: true });
    try {
      const counts = db.prepare('SELECT (SELECT count(*) FROM posts) AS posts, (SELECT count(*) FROM events) AS events').get();
      assert.deepEqual(counts, { posts: created.length, events: 0 }, 'the posts are written, no event row');
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal', 'WAL like the other peers');
    } finally {
      db.close();
    }
    return { port, posts: created.length };
  } finally {
    await stopPeer(proc).catch(() => {});
    if (proc.stderr().trim()) console.error(`--- ${peer} stderr:\n${proc.stderr().trimEnd()}`);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!Object.hasOwn(PEERS, name)) {
    console.error(`smoke: unknown peer ${JSON.stringify(name)} (known: ${Object.keys(PEERS).join(', ')})`);
    process.exit(2);
  }
}
let passed = 0;
let failed = 0;
for (const peer of wanted.length ? wanted : Object.keys(PEERS)) {
  const started = Date.now();
  try {
    const bare = peer === 'mercurius-bare';
    const info = await withTimeout((bare ? smokeBare : smoke)(peer), PEER_TIMEOUT_MS, `the ${peer} smoke test`);
    passed++;
    const checks = bare
      ? 'served without a token, no event row'
      : `WS refusals: ${Object.entries(info.refusals).map(([k, v]) => `${k}: ${v}`).join('; ')}`;
    console.log(`ok ${peer} (${Date.now() - started} ms; ${info.posts} post(s); ${checks})`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${peer} (${Date.now() - started} ms): ${err?.stack ?? err}`);
  }
}
console.log(`smoke: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
