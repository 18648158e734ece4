#!/usr/bin/env node
// Runs the typed client against a throwaway livegate: starts $LIVEGATE_BIN (else
// the debug build under $CARGO_TARGET_DIR or ../../target) on 127.0.0.1 with an
// OS-chosen port, a fresh SQLite database and a random JWT secret, waits for its
// "livegate listening on" line, runs `tsx src/main.ts` with LIVEGATE_URL set, then
// stops the server (by its PID) and exits with the client's exit code.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLE = path.resolve(HERE, '..');
const REPO = path.resolve(EXAMPLE, '..', '..');
const READY = /livegate listening on (http:\/\/\S+)/;
const READY_TIMEOUT_MS = 30_000;

const bin =
  process.env.LIVEGATE_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(REPO, 'target'), 'debug', 'livegate');
const dir = mkdtempSync(path.join(tmpdir(), 'livegate-typed-client-'));
const args = [
  'serve',
  '--listen', '127.0.0.1:0',
  '--app', path.join(REPO, 'schema', 'app.toml'),
  '--database-url', `sqlite://${path.join(dir, 'live.db')}`,
  // The manifest `npm run codegen` wrote: the client sends hashes, and the server
  // runs these documents and nothing else, as in production.
  '--persisted-documents', path.join(EXAMPLE, 'src', 'gql', 'persisted-documents.json'),
  '--only-persisted',
];

// The temp folder is the server's working directory, so nothing it writes stays.
const server = spawn(bin, args, {
  cwd: dir,
  env: { ...process.env, LIVEGATE_JWT_SECRET: randomBytes(32).toString('hex') },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let stderr = '';
server.stderr.setEncoding('utf8');
server.stderr.on('data', (chunk) => {
  stderr = (stderr + chunk).slice(-32 * 1024);
});
const exited = once(server, 'exit').catch(() => {});
const running = () => server.exitCode === null && server.signalCode === null;

async function stop() {
  if (server.pid !== undefined && running()) {
    process.kill(server.pid, 'SIGTERM');
    const timer = setTimeout(() => running() && process.kill(server.pid, 'SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(dir, { recursive: true, force: true });
}

function ready() {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let found = false;
    const timer = setTimeout(() => reject(new Error(`not ready within ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS);
    server.stdout.setEncoding('utf8');
    server.stdout.on('data', (chunk) => {
      if (found) return; // keep draining so the pipe never fills
      stdout += chunk;
      const m = READY.exec(stdout);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin} (${err.message}); run \`cargo build\` or set LIVEGATE_BIN`));
    });
    server.once('close', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`exited (code ${code}, signal ${signal}) before listening`));
    });
  });
}

let code = 1;
try {
  const url = await ready();
  console.log(`[live] livegate serving ${url} (${bin})`);
  const client = spawn(path.join(EXAMPLE, 'node_modules', '.bin', 'tsx'), ['src/main.ts'], {
    cwd: EXAMPLE,
    env: { ...process.env, LIVEGATE_URL: url },
    stdio: 'inherit',
  });
  const [exitCode, signal] = await once(client, 'exit');
  code = exitCode ?? 1;
  if (code !== 0) console.error(`[live] the client failed (code ${exitCode}, signal ${signal})`);
} catch (err) {
  console.error(`[live] livegate: ${err.message}\n--- server stderr ---\n${stderr || '(empty)'}`);
}
if (code !== 0 && stderr) console.error(`--- server stderr ---\n${stderr}`);
await stop();
process.exit(code);
