// The playground in a real browser: Debian's Chromium, headless, driven by
// Playwright. It signs up through the playground's panel, runs a query, starts a
// subscription, runs a mutation in a second playground tab and sees the event
// arrive live in the first. Every request that is not to the loopback livegate is
// blocked and fails the test, and so does anything the page's Content-Security-
// Policy refuses: the page must work with no network.
//
// Needs LIVEGATE_BIN (or ../../target/debug/livegate) and /usr/bin/chromium
// (CHROMIUM_BIN to use another); `.ci/run` provides both. The browser and the
// request guard are in ../browser.js, shared with demo.test.js.
//
// Screenshots go to tests/e2e/screenshots/ (not committed; docs/playground.png is
// a copy of playground-subscription.png).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { TEST_JWT_SECRET, startServer } from '../../interop/test/helpers.js';
import { SCREENSHOTS, STEP_TIMEOUT_MS, assertStayedHome, eventually, guardedContext as guarded, launchBrowser } from '../browser.js';

let server;
let browser;

before(async () => {
  server = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A context of the shared browser that blocks and records requests off loopback (../browser.js). */
function guardedContext() {
  return guarded(browser);
}

/** The playground URL with `query` in it (the playground opens a tab with it). */
function playgroundUrl(query) {
  const url = new URL(server.url.replace(/\/graphql$/, '/playground'));
  if (query) url.searchParams.set('query', query);
  return url.href;
}

/** Opens the playground and waits until GraphiQL has loaded the schema. */
async function open(page, query) {
  await page.goto(playgroundUrl(query));
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor({ timeout: STEP_TIMEOUT_MS });
  // The docs button turns from a spinner into the explorer once the schema is in.
  await page.waitForFunction(() => document.querySelector('.graphiql-container') && !document.querySelector('.graphiql-spinner'), null, {
    timeout: STEP_TIMEOUT_MS,
  });
}

/** Waits until the response pane contains every one of `needles`. */
async function responseContains(page, ...needles) {
  try {
    await page.waitForFunction(
      (wanted) => {
        const cm = document.querySelector('.graphiql-response .CodeMirror');
        const text = cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '';
        return wanted.every((n) => text.includes(n));
      },
      needles,
      { timeout: STEP_TIMEOUT_MS },
    );
  } catch (err) {
    const text = await page.evaluate(() => document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue());
    throw new Error(`the response pane never showed ${JSON.stringify(needles)}; it shows: ${text}`, { cause: err });
  }
}

/** Clicks GraphiQL's run button (a real click, as a person would). */
async function run(page) {
  await page.locator('.graphiql-execute-button').click();
}

/** The number of live subscriptions livegate reports on /metrics. */
async function liveSubscriptions() {
  const text = await (await fetch(server.url.replace(/\/graphql$/, '/metrics'))).text();
  const line = text.split('\n').find((l) => l.startsWith('livegate_realtime_subscriptions'));
  return line ? Number(line.trim().split(/\s+/).pop()) : 0;
}

test('sign up, query, subscribe, see a mutation arrive live, and a live query update', { timeout: 180_000 }, async () => {
  const { context, watch } = await guardedContext();
  const email = `e2e-${Date.now()}@example.com`;
  const password = 'correct horse battery';

  // 1. Sign up through the playground's own panel.
  const page = await context.newPage();
  await open(page, 'query Me {\n  me { email role }\n  notes { id title }\n}\n');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-start.png') });
  await page.locator('.lg-badge').click();
  const panel = page.locator('.lg-signin');
  await panel.getByLabel('Email').fill(email);
  await panel.getByLabel('Password').fill(password);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-sign-in.png') });
  await panel.getByRole('button', { name: 'Sign up' }).click();
  await page.locator('.lg-badge', { hasText: email }).waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-signed-in.png') });

  // 2. A query, over HTTP, as that user: `me` answers with the email.
  await run(page);
  await responseContains(page, `"email": "${email}"`, '"role": "USER"', '"notes": []');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-query.png') });

  // 3. A subscription to an owner-only collection, over graphql-ws as that user.
  await open(page, 'subscription OwnNotes {\n  noteChanged {\n    action\n    id\n    record { title ownerId }\n  }\n}\n');
  await run(page);
  await eventually(async () => (await liveSubscriptions()) >= 1, 'the subscription to reach livegate');

  // 4. A mutation in a second playground tab (same browser: same session).
  const second = await context.newPage();
  await open(second, 'mutation AddNote {\n  createNote(input: { title: "Written in another tab" }) { id title }\n}\n');
  await run(second);
  await responseContains(second, '"title": "Written in another tab"');
  await second.screenshot({ path: path.join(SCREENSHOTS, 'playground-mutation.png') });

  // 5. The event arrives live in the first tab.
  await page.bringToFront();
  await responseContains(page, '"action": "CREATE"', '"title": "Written in another tab"');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-subscription.png') });

  // 6. A live query: its result in the pane is replaced when a mutation changes it.
  await open(page, 'query CountNotes @live {\n  notesCount\n}\n');
  await run(page);
  await responseContains(page, '"notesCount": 1', '"revision": 1');
  await second.bringToFront();
  await open(second, 'mutation AddAnother {\n  createNote(input: { title: "And another" }) { id }\n}\n');
  await run(second);
  await responseContains(second, '"createNote"');
  await page.bringToFront();
  await responseContains(page, '"notesCount": 2', '"revision": 2');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-live-query.png') });

  assertStayedHome(watch);
  await context.close();
});

test('the docs explorer lists the app’s collections, offline', { timeout: 60_000 }, async () => {
  const { context, watch } = await guardedContext();
  const page = await context.newPage();
  await open(page);
  await page.getByRole('button', { name: /Show Documentation Explorer/i }).click();
  await page.locator('.graphiql-doc-explorer').getByText('Query', { exact: true }).click();
  await page.locator('.graphiql-doc-explorer').getByText('posts', { exact: true }).first().waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.screenshot({ path: path.join(SCREENSHOTS, 'playground-docs.png') });
  assertStayedHome(watch);
  await context.close();
});

test('the guard itself: a request off the machine is caught', { timeout: 60_000 }, async () => {
  // Proof that the checks above are not vacuous: the same guard, a page that tries.
  const { context, watch } = await guardedContext();
  const page = await context.newPage();
  await open(page);
  await page.evaluate(() => fetch('https://example.com/x').catch(() => {}));
  await eventually(async () => watch.leaks.length > 0, 'the guard to see the attempt');
  assert.throws(() => assertStayedHome(watch), /tried to leave the machine/);
  await context.close();
});
