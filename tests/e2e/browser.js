// What the end-to-end tests share: Debian's Chromium launched headless with no
// background networking, and browser contexts that block (and record) every
// request off loopback.
//
// Needs /usr/bin/chromium (CHROMIUM_BIN to use another); `.ci/run` provides it.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** Where screenshots go (not committed). */
export const SCREENSHOTS = fileURLToPath(new URL('./screenshots/', import.meta.url));
export const STEP_TIMEOUT_MS = 20_000;

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
/** Without the background-networking flags Chromium calls Google hosts on its own. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

function isLoopback(url) {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
  return LOOPBACK.has(hostname);
}

/** Launches the browser (and makes sure the screenshots folder exists). */
export async function launchBrowser() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A browser context that blocks every request off loopback and records it in
 * `watch.leaks`, with what the page's Content-Security-Policy refused before it
 * reached the network; uncaught page errors go to `watch.errors`.
 */
export async function guardedContext(browser, { viewport = { width: 1440, height: 900 } } = {}) {
  const watch = { leaks: [], errors: [] };
  const context = await browser.newContext({ viewport, colorScheme: 'light' });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    watch.leaks.push(url);
    return route.abort('blockedbyclient');
  });
  context.on('page', (page) => {
    page.on('pageerror', (err) => watch.errors.push(`${page.url()}: ${err.message}`));
    page.on('websocket', (ws) => {
      if (!isLoopback(ws.url())) watch.leaks.push(ws.url());
    });
    page.on('console', (msg) => {
      if (msg.type() === 'error' && msg.text().includes('Content Security Policy')) watch.leaks.push(msg.text());
    });
  });
  return { context, watch };
}

/** Fails if a page of the context tried to leave the machine or threw. */
export function assertStayedHome(watch) {
  assert.deepEqual(watch.leaks, [], `the page tried to leave the machine:\n${watch.leaks.join('\n')}`);
  assert.deepEqual(watch.errors, [], `errors in the page:\n${watch.errors.join('\n')}`);
}

/** Polls `check` every 100 ms until it holds, for at most STEP_TIMEOUT_MS. */
export async function eventually(check, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
