// Shared helpers for the interop suite: start a real livegate binary on a
// loopback port, and talk GraphQL to it over HTTP with the global fetch.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** tests/interop, whatever the current directory is. */
const INTEROP_DIR = fileURLToPath(new URL('..', import.meta.url));
/** The repository root. */
const REPO_DIR = path.resolve(INTEROP_DIR, '..', '..');

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
/** How much of the server's stderr to keep for error messages. */
const STDERR_KEEP = 64 * 1024;
const READY_LINE = /livegate listening on (http:\/\/\S+)/;

/**
 * An HS256 signing secret for test servers (LIVEGATE_JWT_SECRET): long enough
 * to be accepted, so the server never generates a secret file of its own.
 */
export const TEST_JWT_SECRET = 'livegate-interop-test-secret-not-for-production-use-0123456789';

/** Servers started and not yet stopped, killed if this process exits first. */
const live = new Set();
process.on('exit', () => {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** The binary under test: $LIVEGATE_BIN, else ../../target/debug/livegate (from tests/interop). */
export function livegateBin() {
  return path.resolve(INTEROP_DIR, process.env.LIVEGATE_BIN || '../../target/debug/livegate');
}

/**
 * Starts a livegate server on 127.0.0.1 with an OS-chosen port.
 *
 * - `app`: the app file (default: the repository's schema/app.toml).
 * - `databaseUrl`: the database; default $LIVEGATE_TEST_DATABASE_URL (a postgres
 *   URL, used as given, so it may hold rows from earlier runs), else a fresh
 *   SQLite file in a temp folder removed on stop.
 * - `env`: variables added to (or overriding) this process's environment for the
 *   server, e.g. `{ LIVEGATE_JWT_SECRET: TEST_JWT_SECRET }`.
 *
 * Resolves once the server prints its "listening on" line, to `{ url, stop }`:
 * `url` is the /graphql endpoint it printed, `stop()` ends that child (by its PID)
 * and waits for it to exit. Rejects, with the server's stderr, if the server exits
 * or is not ready within 30 s.
 */
export async function startServer(options = {}) {
  if (process.env.LIVEGATE_TEST_BALANCED === '1') return startBalanced(options);
  return startOne(options);
}

/**
 * With LIVEGATE_TEST_BALANCED=1 (and a PostgreSQL LIVEGATE_TEST_DATABASE_URL):
 * two livegate instances on the database, behind HAProxy (tests/interop/haproxy.cfg,
 * round robin, health-checked on /readyz). Resolves like `startOne`, with the
 * balancer's /graphql URL.
 */
async function startBalanced(options) {
  // Instances of one service share their JWT settings (or each would make a
  // secret of its own, and a token from one would be refused by the other).
  options = { ...options, env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET, ...(options.env || {}) } };
  const dbUrl = options.databaseUrl || process.env.LIVEGATE_TEST_DATABASE_URL;
  if (!dbUrl || !dbUrl.startsWith('postgres')) {
    throw new Error('LIVEGATE_TEST_BALANCED=1 needs a PostgreSQL LIVEGATE_TEST_DATABASE_URL');
  }
  const a = await startOne({ ...options, databaseUrl: dbUrl });
  const b = await startOne({ ...options, databaseUrl: dbUrl }).catch(async (e) => {
    await a.stop();
    throw e;
  });
  const port = await freePort();
  const portOf = (url) => new URL(url).port;
  const lb = spawn(process.env.HAPROXY || 'haproxy', ['-f', path.join(INTEROP_DIR, 'haproxy.cfg'), '-db'], {
    env: { ...process.env, LB_PORT: String(port), A_PORT: portOf(a.url), B_PORT: portOf(b.url) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let lbErr = '';
  lb.stderr.setEncoding('utf8');
  lb.stderr.on('data', (c) => {
    lbErr = (lbErr + c).slice(-STDERR_KEEP);
  });
  if (lb.pid !== undefined) live.add(lb.pid);
  const lbExited = once(lb, 'exit')
    .catch(() => {})
    .finally(() => live.delete(lb.pid));
  const url = `http://127.0.0.1:${port}/graphql`;
  const stop = async () => {
    if (lb.exitCode === null && lb.signalCode === null) {
      lb.kill('SIGTERM');
      await lbExited;
    }
    await Promise.all([a.stop(), b.stop()]);
  };
  // Ready once the balancer answers /readyz twice (round robin: once per instance,
  // unless a health check already took one out; the instances were ready before).
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const up = await Promise.all(
      [0, 1].map(() =>
        fetch(`http://127.0.0.1:${port}/readyz`)
          .then((r) => r.status === 200)
          .catch(() => false),
      ),
    );
    if (up.every(Boolean)) break;
    if (Date.now() > deadline || lb.exitCode !== null) {
      await stop();
      throw new Error(`HAProxy was not ready within ${READY_TIMEOUT_MS / 1000} s: ${lbErr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, stop, stderr: () => `${a.stderr()}\n--- second instance ---\n${b.stderr()}\n--- haproxy ---\n${lbErr}` };
}

/** A loopback port nobody listens on (for the balancer). */
async function freePort() {
  const { createServer } = await import('node:net');
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Starts one livegate server (see `startServer`). */
async function startOne({ app, databaseUrl, env = {} } = {}) {
  const bin = livegateBin();
  const dir = mkdtempSync(path.join(tmpdir(), 'livegate-interop-'));
  const dbUrl = databaseUrl || process.env.LIVEGATE_TEST_DATABASE_URL || `sqlite://${path.join(dir, 'test.db')}`;
  const appFile = path.resolve(REPO_DIR, app || 'schema/app.toml');
  const args = ['--listen', '127.0.0.1:0', '--app', appFile, '--database-url', dbUrl];

  // The temp folder is the working directory, so anything the server writes
  // next to itself (a generated secret, a data folder) goes away with it.
  const child = spawn(bin, args, {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-STDERR_KEEP);
  });
  if (child.pid !== undefined) live.add(child.pid);
  const exited = once(child, 'exit')
    .catch(() => {})
    .finally(() => live.delete(child.pid));
  const running = () => child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  let cleaned = false;
  const cleanup = () => {
    if (!cleaned) {
      cleaned = true;
      rmSync(dir, { recursive: true, force: true });
    }
  };

  const describe = () =>
    `${bin} ${args.join(' ')}\n--- server stderr ---\n${stderr || '(empty)'}\n--- end of stderr ---`;

  let url;
  try {
    url = await new Promise((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(() => {
        reject(new Error(`livegate was not ready within ${READY_TIMEOUT_MS / 1000} s: ${describe()}`));
      }, READY_TIMEOUT_MS);
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        if (url !== undefined) return; // keep draining so the pipe never fills
        stdout += chunk;
        const m = READY_LINE.exec(stdout);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start livegate (${err.message}); build it with \`cargo build\` or set LIVEGATE_BIN: ${describe()}`));
      });
      // 'close' comes after 'exit' once stdout and stderr are drained, so the
      // message carries the server's last words.
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`livegate exited (code ${code}, signal ${signal}) before listening: ${describe()}`));
      });
    });
  } catch (err) {
    if (running()) {
      process.kill(child.pid, 'SIGKILL');
      await exited;
    }
    cleanup();
    throw err;
  }

  const stop = async () => {
    if (running()) {
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (running()) process.kill(child.pid, 'SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    cleanup();
  };

  return { url, stop, stderr: () => stderr };
}

/**
 * POSTs a GraphQL request as JSON and resolves to
 * `{ status, headers, text, body }` (`body` is the parsed JSON, or undefined).
 * Accepts application/graphql-response+json unless `headers` says otherwise.
 */
export async function gql(url, query, variables, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json;q=0.9',
      ...headers,
    },
    body: JSON.stringify(variables === undefined ? { query } : { query, variables }),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, text, body };
}

/**
 * A short random lowercase-hex suffix, so emails and account slugs are unique
 * per run (a postgres database from LIVEGATE_TEST_DATABASE_URL is shared by
 * runs, and emails and slugs are unique there).
 */
export function uniqueSuffix() {
  return randomBytes(6).toString('hex');
}

/** The `Authorization` header for an access token. */
export function bearer(token) {
  return { authorization: `Bearer ${token}` };
}

/** The fields of a `Session` the tests read. */
export const SESSION_FIELDS = 'accessToken refreshToken expiresAt user { id email role accountId }';

/** A password that satisfies the server's policy (8+ characters, not the email). */
export const TEST_PASSWORD = 'correct horse battery staple';

/**
 * Signs up a fresh user through the real API (`signUp`) and resolves to its
 * `Session` (`{ accessToken, refreshToken, expiresAt, user }`) plus the
 * `email` and `password` used. Throws, with the response, unless it succeeded.
 *
 * - `email`: default `interop-<random>@example.com`.
 * - `password`: default TEST_PASSWORD.
 * - `newAccount`: a slug for a new account whose ADMIN the user becomes.
 */
export async function signUp(url, { email, password = TEST_PASSWORD, newAccount } = {}) {
  const address = email ?? `interop-${uniqueSuffix()}@example.com`;
  const res = await gql(
    url,
    `mutation ($email: String!, $password: String!, $newAccount: String) {
      signUp(email: $email, password: $password, newAccount: $newAccount) { ${SESSION_FIELDS} }
    }`,
    { email: address, password, newAccount: newAccount ?? null },
  );
  const session = res.body?.data?.signUp;
  if (res.status !== 200 || res.body?.errors !== undefined || !session?.accessToken) {
    throw new Error(`expected signUp of ${JSON.stringify(address)} to return a session, got HTTP ${res.status}: ${res.text}`);
  }
  return { ...session, email: address, password };
}
