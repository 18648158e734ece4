// CORS (`--cors-origins`) as a browser enforces it: a page served from another
// origin (another port on loopback) calls livegate with a bearer token and JSON,
// which makes Chromium send a preflight first. A livegate that lists the page's
// origin answers it; one started without the flag is refused by the browser
// (the check is not vacuous).

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';

import { TEST_JWT_SECRET, signUp, startServer } from '../../interop/test/helpers.js';
import { assertStayedHome, guardedContext, launchBrowser } from '../browser.js';

const PAGE = `<!doctype html><meta charset="utf-8"><title>another origin</title>
<script>
  window.call = async (url, token) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
      body: JSON.stringify({ query: '{ postsCount }' }),
    });
    return res.json();
  };
</script>`;

let page;
let pageOrigin;
let allowed;
let closed;
let browser;

before(async () => {
  page = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  });
  await new Promise((resolve) => page.listen(0, '127.0.0.1', resolve));
  pageOrigin = `http://127.0.0.1:${page.address().port}`;
  allowed = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET, LIVEGATE_CORS_ORIGINS: `http://localhost:1,${pageOrigin}` } });
  closed = await startServer({ env: { LIVEGATE_JWT_SECRET: TEST_JWT_SECRET, LIVEGATE_CORS_ORIGINS: '' } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await allowed?.stop();
  await closed?.stop();
  await new Promise((resolve) => page?.close(resolve) ?? resolve());
});

test('a page on a listed origin calls livegate; without the flag the browser refuses it', { timeout: 60_000 }, async () => {
  const { context, watch } = await guardedContext(browser);
  const tab = await context.newPage();
  await tab.goto(`${pageOrigin}/`);
  const me = await signUp(allowed.url);
  const answer = await tab.evaluate(([url, token]) => window.call(url, token), [allowed.url, me.accessToken]);
  assert.deepEqual(answer, { data: { postsCount: 0 } });

  const other = await signUp(closed.url);
  const refused = await tab.evaluate(
    ([url, token]) => window.call(url, token).then(() => 'answered', (e) => `refused: ${e.message}`),
    [closed.url, other.accessToken],
  );
  assert.match(refused, /^refused: /, 'the browser let a page on another origin read a livegate that allows none');
  assertStayedHome(watch);
  await context.close();
});
