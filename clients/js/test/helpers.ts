// Test helpers: a real livegate server (as tests/interop starts it), a loopback
// TCP proxy whose connections the tests cut, and small GraphQL calls that do
// not go through the client under test.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

/** clients/js, whatever the current directory (this file runs from build/test/). */
const PACKAGE_DIR = fileURLToPath(new URL('../../', import.meta.url));
const REPO_DIR = path.resolve(PACKAGE_DIR, '..', '..');
const READY_LINE = /livegate listening on (http:\/\/\S+)/;

/** The HS256 secret of test servers. */
export const TEST_JWT_SECRET = 'livegate-client-test-secret-not-for-production-use-0123456789';
export const TEST_PASSWORD = 'correct horse battery staple';

const running = new Set<number>();
process.on('exit', () => {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

export interface Server {
  /** The /graphql URL. */
  url: string;
  port: number;
  stop(): Promise<void>;
  stderr(): string;
}

/**
 * Starts `$LIVEGATE_BIN` (default ../../target/debug/livegate) on 127.0.0.1
 * with an OS-chosen port, the example app, and a fresh SQLite database in a
 * temp folder (or $LIVEGATE_TEST_DATABASE_URL).
 */
export async function startServer(env: Record<string, string> = {}): Promise<Server> {
  const bin = path.resolve(PACKAGE_DIR, process.env['LIVEGATE_BIN'] || '../../target/debug/livegate');
  const dir = mkdtempSync(path.join(tmpdir(), 'livegate-client-'));
  const db = process.env['LIVEGATE_TEST_DATABASE_URL'] || `sqlite://${path.join(dir, 'test.db')}`;
  const args = ['serve', '--listen', '127.0.0.1:0', '--app', path.join(REPO_DIR, 'schema/app.toml'), '--database-url', db];
  const child = spawn(bin, args, {
    cwd: dir,
    env: { ...process.env, LIVEGATE_JWT_SECRET: TEST_JWT_SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => {
    stderr = (stderr + c).slice(-65536);
  });
  if (child.pid !== undefined) running.add(child.pid);
  const exited = once(child, 'exit').catch(() => {});
  const alive = () => child.exitCode === null && child.signalCode === null;
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  const stop = async () => {
    if (child.pid !== undefined && alive()) {
      child.kill('SIGTERM');
      const t = setTimeout(() => alive() && child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    if (child.pid !== undefined) running.delete(child.pid);
    cleanup();
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`livegate not ready in 30 s:\n${stderr}`)), 30_000);
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c: string) => {
        out += c;
        const m = READY_LINE.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${bin} (${err.message}): run \`cargo build\` or set LIVEGATE_BIN`));
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        reject(new Error(`livegate exited (${code}) before listening:\n${stderr}`));
      });
    });
    return { url, port: Number(new URL(url).port), stop, stderr: () => stderr };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A short random suffix for unique names. */
export function suffix(): string {
  return randomBytes(5).toString('hex');
}

/** POSTs a GraphQL request straight to the server (not through the client under test). */
export async function gql<T = any>(url: string, query: string, variables: Record<string, unknown> = {}, token?: string): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: unknown[] };
  if (body.errors?.length || !body.data) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
  return body.data;
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  user: { id: string; email: string };
}

const SESSION = 'accessToken refreshToken user { id email }';

export async function signUp(url: string): Promise<Session> {
  const email = `client-${suffix()}@example.com`;
  const data = await gql<{ signUp: Session }>(
    url,
    `mutation ($e: String!, $p: String!) { signUp(email: $e, password: $p) { ${SESSION} } }`,
    { e: email, p: TEST_PASSWORD },
  );
  return data.signUp;
}

export async function refreshSession(url: string, refreshToken: string): Promise<Session> {
  const data = await gql<{ refreshSession: Session }>(
    url,
    `mutation ($r: String!) { refreshSession(refreshToken: $r) { ${SESSION} } }`,
    { r: refreshToken },
  );
  return data.refreshSession;
}

/** A write made straight to the server, and the event it should cause. */
export interface Write {
  action: 'CREATE' | 'UPDATE' | 'DELETE';
  id: string;
}

/**
 * Makes `count` random writes to posts titled `${prefix}...` (creates, updates
 * and deletes of rows it created) straight to the server, one after another;
 * `during(i)` runs before write i (to cut the network mid-stream). Returns the
 * writes in commit order.
 */
export async function randomWrites(
  url: string,
  token: string,
  prefix: string,
  count: number,
  during: (i: number) => void | Promise<void> = () => {},
  pauseMs = 15,
): Promise<Write[]> {
  const writes: Write[] = [];
  const alive: string[] = [];
  for (let i = 0; i < count; i += 1) {
    await during(i);
    const r = Math.random();
    if (alive.length === 0 || r < 0.5) {
      const d = await gql<{ createPost: { id: string } }>(
        url,
        `mutation ($t: String!) { createPost(input: { title: $t }) { id } }`,
        { t: `${prefix}${i}` },
        token,
      );
      alive.push(d.createPost.id);
      writes.push({ action: 'CREATE', id: d.createPost.id });
    } else if (r < 0.8) {
      const id = alive[Math.floor(Math.random() * alive.length)]!;
      await gql(url, `mutation ($id: ID!, $t: String!) { updatePost(id: $id, input: { title: $t }) { id } }`, { id, t: `${prefix}${i}u` }, token);
      writes.push({ action: 'UPDATE', id });
    } else {
      const id = alive.splice(Math.floor(Math.random() * alive.length), 1)[0]!;
      await gql(url, `mutation ($id: ID!) { deletePost(id: $id) { id } }`, { id }, token);
      writes.push({ action: 'DELETE', id });
    }
    if (pauseMs > 0) await sleep(Math.random() * pauseMs);
  }
  return writes;
}

/**
 * A loopback TCP proxy to `port`. `cut()` destroys every proxied connection
 * (both sides, as a network failure would); `down(ms)` also refuses new ones
 * for that long (each is reset at once); `freeze()` stops forwarding on the
 * open ones without closing them (only the client's pings notice).
 */
export async function startProxy(port: number) {
  const sockets = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  const frozen: net.Socket[] = [];
  let refusing = false;
  let connections = 0;
  const server = net.createServer((client) => {
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    connections += 1;
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const proxyPort = (server.address() as net.AddressInfo).port;
  return {
    port: proxyPort,
    /** How many connections were proxied so far. */
    connections: () => connections,
    /** Stops forwarding on every open connection, leaving them open (a network gone quiet). */
    freeze() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        // Left open: cut() no longer reaches them (close() does).
        sockets.delete(client);
        sockets.delete(upstream);
        frozen.push(client, upstream);
      }
      pairs.clear();
    },
    cut() {
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
    },
    async down(ms: number) {
      refusing = true;
      this.cut();
      await sleep(ms);
      refusing = false;
    },
    async close() {
      this.cut();
      for (const s of frozen) s.destroy();
      server.close();
      await once(server, 'close').catch(() => {});
    },
  };
}

/** A `ws` WebSocket class that records the frames its instances send. */
export function recordingWebSocket() {
  const sent: string[] = [];
  const closes: number[] = [];
  class Recording extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols);
      this.on('close', (code) => closes.push(code));
    }
    override send(data: any, ...rest: any[]): void {
      sent.push(String(data));
      (super.send as (...a: unknown[]) => void)(data, ...rest);
    }
  }
  return { WebSocket: Recording, sent, closes };
}

/** Resolves once `check()` is truthy; rejects with `what()` after `ms`. */
export async function waitUntil(check: () => boolean, what: () => string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what()}`);
    await sleep(20);
  }
}

export { sleep };
