// The demo app (/playground/demo) in a real browser, as two users: two browser
// contexts (two separate sessions) of Debian's headless Chromium, driven by
// Playwright. Each signs up through the demo's form; then
//   - a post written by one appears in the other's list, a live query
//     (`query @live`) that livegate keeps up to date (the demo never polls nor
//     re-fetches);
//   - both see each other in the chat room's roster (presence over graphql-ws);
//   - a chat message goes each way (stored with createMessage, delivered live by
//     messageChanged), and the typing indicator shows the other typing;
//   - when one closes the page the other's roster drops them, and a reload shows
//     the conversation from the stored history; signing out and in again works.
// Every request off loopback is blocked and fails the test, as do page errors and
// anything the page's Content-Security-Policy refuses.
//
// Needs LIVEGATE_BIN (or ../../target/debug/livegate) built after the last
// `npm run build` of playground/ (the binary embeds playground/dist), and
// /usr/bin/chromium (CHROMIUM_BIN to use another); `.ci/run` provides both.
//
// Screenshots go to tests/e2e/screenshots/demo-*.png (not committed;
// docs/demo.png is a copy of demo-chat.png).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { TEST_JWT_SECRET, startServer, uniqueSuffix } from '../../interop/test/helpers.js';
import { SCREENSHOTS, STEP_TIMEOUT_MS, assertStayedHome, guardedContext, launchBrowser } from '../browser.js';

const PASSWORD = 'correct horse battery';
/** A fresh SQLite database per run can use plain names; a shared PostgreSQL one cannot. */
const TAG = process.env.LIVEGATE_TEST_DATABASE_URL ? `-${uniqueSuffix()}` : '';

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

const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `demo-${name}.png`) });
const visible = (locator) => locator.waitFor({ timeout: STEP_TIMEOUT_MS });
const gone = (locator) => locator.waitFor({ state: 'detached', timeout: STEP_TIMEOUT_MS });

/**
 * One person: a guarded browser context with the demo open, and what its page
 * asked livegate for (`traffic.eventSources`, `traffic.webSockets`, how many
 * times it fetched the post list over HTTP and asked for it live over a socket).
 */
async function person() {
  const { context, watch } = await guardedContext(browser, { viewport: { width: 1280, height: 640 } });
  const page = await context.newPage();
  const traffic = { eventSources: [], webSockets: [], postFetches: 0, liveQueries: 0 };
  page.on('request', (req) => {
    if (req.resourceType() === 'eventsource') traffic.eventSources.push(req.url());
    if (req.method() === 'POST' && (req.postData() || '').includes('query DemoPosts')) traffic.postFetches += 1;
  });
  page.on('websocket', (ws) => {
    traffic.webSockets.push(ws.url());
    ws.on('framesent', ({ payload }) => {
      if (String(payload).includes('query DemoPosts @live')) traffic.liveQueries += 1;
    });
  });
  const response = await page.goto(server.url.replace(/\/graphql$/, '/playground/demo'));
  assert.equal(
    response.status(),
    200,
    'livegate does not serve /playground/demo: build the binary after `npm run build` in playground/ (it embeds playground/dist)',
  );
  return { context, watch, page, traffic };
}

/** Signs up through the demo's form and waits for the signed-in app. */
async function signUp(page, email) {
  const form = page.getByRole('form', { name: 'Sign in' });
  await form.getByLabel('Email').fill(email);
  await form.getByLabel('Password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Sign up' }).click();
  await visible(page.locator('.who-am-i', { hasText: email }));
}

async function writePost(page, title, body) {
  const form = page.getByRole('form', { name: 'New post' });
  await form.getByLabel('Title').fill(title);
  await form.getByLabel('Body').fill(body);
  await form.getByRole('button', { name: 'Publish' }).click();
}

async function say(page, text) {
  await page.getByRole('textbox', { name: 'Message', exact: true }).pressSequentially(text, { delay: 20 });
  await page.getByRole('button', { name: 'Send' }).click();
}

const post = (page, title) => page.getByRole('list', { name: 'Latest posts' }).getByRole('listitem').filter({ hasText: title });
const inRoster = (page, email) => page.getByRole('list', { name: 'In the room' }).getByRole('listitem').filter({ hasText: email });
const message = (page, text) => page.getByRole('list', { name: 'Messages' }).getByRole('listitem').filter({ hasText: text });
const typing = (page, email) => page.getByRole('status').filter({ hasText: `${email} is typing` });

test('two users: posts appear live, chat, typing and presence', { timeout: 180_000 }, async () => {
  const ada = { email: `ada${TAG}@example.com`, ...(await person()) };
  const ben = { email: `ben${TAG}@example.com`, ...(await person()) };

  // 1. Each signs up through the demo's own form.
  await shot(ada.page, 'sign-in');
  await signUp(ada.page, ada.email);
  await signUp(ben.page, ben.email);

  // 2. Both are in the room, and see each other there (presence: sync, then join).
  for (const viewer of [ada, ben]) {
    for (const member of [ada, ben]) await visible(inRoster(viewer.page, member.email));
  }

  // 3. A post by Ada appears in Ben's list, and one by Ben in Ada's. The list is a
  // live query: livegate sends the new list, Ben's page never fetches it.
  await visible(ben.page.locator('.posts .badge.live'));
  await writePost(ada.page, 'Hello from Ada', 'Written in one browser, read in the other.');
  await visible(post(ben.page, 'Hello from Ada'));
  assert.equal(ben.traffic.postFetches, 0, 'Ben’s list came from the live query, not a fetch');
  await writePost(ben.page, 'Ben was here', 'Same here, the other way round.');
  await visible(post(ada.page, 'Ben was here'));
  await visible(post(ben.page, 'Ben was here'));

  // 4. Chat, both ways.
  await say(ada.page, 'Hi Ben, can you see this?');
  await visible(message(ben.page, 'Hi Ben, can you see this?'));
  await say(ben.page, 'Loud and clear, Ada.');
  await visible(message(ada.page, 'Loud and clear, Ada.'));
  await visible(message(ada.page, 'Hi Ben, can you see this?'));

  // 5. Ben types (without sending): Ada sees it, and it fades a few seconds later.
  await gone(typing(ada.page, ben.email)); // his reply arrived: not typing any more
  await ben.page.getByRole('textbox', { name: 'Message', exact: true }).pressSequentially('Typing some', { delay: 30 });
  await visible(typing(ada.page, ben.email));
  await shot(ada.page, 'chat');
  await shot(ben.page, 'chat-other');
  await gone(typing(ada.page, ben.email));

  // What went over the wire: the posts' live query and the chat over one
  // WebSocket, no EventSource, no fetch of the list.
  for (const { traffic } of [ada, ben]) {
    assert.deepEqual(traffic.eventSources, []);
    assert.deepEqual(traffic.webSockets.map((url) => new URL(url).pathname), ['/graphql']);
    assert.equal(traffic.postFetches, 0);
    assert.ok(traffic.liveQueries > 0, 'the list was asked for as a live query over the socket');
  }

  // 6. Ben closes the page: he leaves the room, and Ada's roster drops him.
  assertStayedHome(ben.watch);
  await ben.page.close();
  await gone(inRoster(ada.page, ben.email));
  await visible(inRoster(ada.page, ada.email));
  await shot(ada.page, 'after-leave');

  // 7. A reload keeps Ada signed in and shows the conversation from the stored history.
  await ada.page.reload();
  await visible(message(ada.page, 'Loud and clear, Ada.'));
  await visible(message(ada.page, 'Hi Ben, can you see this?'));
  await visible(post(ada.page, 'Ben was here'));

  // 8. Signing out ends the live parts; signing in (not up) brings them back.
  await ada.page.getByRole('button', { name: 'Sign out' }).click();
  const form = ada.page.getByRole('form', { name: 'Sign in' });
  await form.getByLabel('Email').fill(ada.email);
  await form.getByLabel('Password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await visible(inRoster(ada.page, ada.email));
  await visible(message(ada.page, 'Loud and clear, Ada.'));

  assertStayedHome(ada.watch);
  await ada.context.close();
  await ben.context.close();
});
