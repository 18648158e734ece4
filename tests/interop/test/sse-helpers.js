// Helpers for the SSE interop tests (sse.test.js): a raw fetch-based event
// stream reader (to send Last-Event-ID and cut a stream at a chosen moment), a
// recording fetch for graphql-sse's `fetchFn`, an npm `eventsource` client
// whose events land in a Feed, a TCP proxy whose connections a test can cut,
// and the server's realtime gauges from /metrics. Every wait has a deadline; a
// failure shows what arrived.

import { createHmac } from 'node:crypto';
import net from 'node:net';

import { EventSource } from 'eventsource';

import { TEST_JWT_SECRET } from './helpers.js';
import { Feed, WAIT_MS, sleep } from './realtime-helpers.js';

/** The server's origin (`http://127.0.0.1:PORT`), from its /graphql URL. */
export function originOf(graphqlUrl) {
  return new URL(graphqlUrl).origin;
}

/**
 * An incremental parser of `text/event-stream` (WHATWG HTML §9.2.6, for the
 * `\n` line ends this server writes; a trailing `\r` is dropped too). Calls
 * `onEvent({ event, data, id })` per dispatched event (`id` is the `id:` of
 * that block, or undefined) and `onComment(text)` per comment line. A block
 * with an `event:` but no `data:` (graphql-sse's distinct `complete`) is
 * dispatched too, as graphql-sse's own parser does.
 */
export function sseParser(onEvent, onComment = () => {}) {
  let buffer = '';
  let block = { event: '', data: [], id: undefined };
  const line = (text) => {
    if (text === '') {
      if (block.event || block.data.length) {
        onEvent({ event: block.event || 'message', data: block.data.join('\n'), id: block.id });
      }
      block = { event: '', data: [], id: undefined };
      return;
    }
    if (text.startsWith(':')) {
      onComment(text.slice(1));
      return;
    }
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') block.event = value;
    else if (field === 'data') block.data.push(value);
    else if (field === 'id') block.id = value;
  };
  return (chunk) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl !== -1; nl = buffer.indexOf('\n')) {
      line(buffer.slice(0, nl).replace(/\r$/, ''));
      buffer = buffer.slice(nl + 1);
    }
  };
}

/**
 * Opens an event stream with fetch and reads it into a Feed of parsed events
 * (`{ event, data, id }`, `data` parsed as JSON when it is JSON). Resolves, once
 * the response headers are in, to `{ status, headers, text, feed, abort, comments }`:
 * for a non-200 answer `text` is the body and `feed` is undefined; otherwise the
 * feed completes when the server ends the stream and errors if the connection
 * fails; `abort()` cuts it from the client side (the feed then completes, with
 * `feed.aborted` set).
 */
export async function openStream(url, { method = 'GET', headers = {}, body, name = `${method} ${url}` } = {}) {
  const controller = new AbortController();
  const res = await fetch(url, {
    method,
    headers: { accept: 'text/event-stream', ...headers },
    body,
    signal: controller.signal,
  });
  if (res.status !== 200) {
    return { status: res.status, headers: res.headers, text: await res.text() };
  }
  const feed = new Feed(name);
  feed.aborted = false;
  const comments = [];
  const parse = sseParser(
    (e) => {
      let data = e.data;
      try {
        data = JSON.parse(e.data);
      } catch {
        // not JSON: keep the text
      }
      feed.push({ ...e, data });
    },
    (c) => comments.push(c),
  );
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of res.body) parse(decoder.decode(chunk, { stream: true }));
    feed.end();
  })().catch((err) => {
    if (feed.aborted) feed.end();
    else feed.fail(err);
  });
  const abort = () => {
    feed.aborted = true;
    controller.abort();
  };
  return { status: res.status, headers: res.headers, feed, abort, comments };
}

/**
 * A fetch for graphql-sse's `fetchFn` (and the npm eventsource's `fetch`) that
 * logs each request and its status: `log` lines look like
 * `#3 DELETE /graphql/stream?operationId=... -> 200`, `requests` holds
 * `{ method, url, headers, status }`.
 */
export function recordingFetch() {
  const requests = [];
  const log = [];
  const fetchFn = async (input, init = {}) => {
    const n = requests.length + 1;
    const url = new URL(String(input instanceof Request ? input.url : input));
    const method = init.method ?? 'GET';
    const headers = Object.fromEntries(new Headers(init.headers ?? {}).entries());
    const body = typeof init.body === 'string' ? init.body : undefined;
    const request = { method, url: url.href, path: `${url.pathname}${url.search}`, headers, body, status: undefined };
    requests.push(request);
    try {
      const res = await fetch(input, init);
      request.status = res.status;
      log.push(`#${n} ${method} ${request.path} -> ${res.status}`);
      return res;
    } catch (err) {
      log.push(`#${n} ${method} ${request.path} -> ${err.name}: ${err.message}`);
      throw err;
    }
  };
  return { fetchFn, requests, log, describe: () => (log.length ? log.join('\n') : '(no requests)') };
}

/**
 * An npm `eventsource` EventSource on `url` whose `change` events go into a
 * Feed as `{ lastEventId, data, connection }` (`data` parsed; `connection`
 * counts the stream's `open` events, so 2 means after the first reconnect).
 * `headers` are added to every request through the package's `fetch` option.
 * Returns `{ es, feed, errors, opens, http, describe }`: `errors` are the error
 * events (`{ code, message, readyState }`), `http` the recordingFetch of its
 * requests. The caller closes `es`.
 */
export function eventSourceFeed(url, { headers = {}, name = `EventSource ${url}` } = {}) {
  const http = recordingFetch();
  const es = new EventSource(url, {
    fetch: (input, init) => http.fetchFn(input, { ...init, headers: { ...init.headers, ...headers } }),
  });
  const errors = [];
  let opens = 0;
  const describe = () =>
    `requests:\n${http.describe()}\nerror events: ${JSON.stringify(errors)}\nreadyState: ${es.readyState}`;
  const feed = new Feed(name, describe);
  es.addEventListener('open', () => {
    opens += 1;
    feed.wake();
  });
  es.addEventListener('change', (e) => {
    let data = e.data;
    try {
      data = JSON.parse(e.data);
    } catch {
      // not JSON: keep the text (the assertions will show it)
    }
    feed.push({ lastEventId: e.lastEventId, data, connection: opens });
  });
  es.addEventListener('error', (e) => {
    errors.push({ code: e.code, message: e.message, readyState: es.readyState });
    feed.wake();
  });
  return {
    es,
    feed,
    errors,
    http,
    get opens() {
      return opens;
    },
    describe,
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of `targetUrl`'s host and port, whose
 * connections a test can cut mid-stream (`cut()` destroys both sides of every
 * open connection, as a dropped network would). `url` is the proxy's origin;
 * `requests()` parses the request heads clients sent through it (method, path,
 * lower-cased headers, connection number); `close()` cuts everything and stops
 * listening. Only loopback, only sockets it opened.
 */
export async function cuttableProxy(targetUrl) {
  const target = new URL(targetUrl);
  const connections = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    const conn = { n: connections.length + 1, client, upstream, sent: '', cut: false };
    connections.push(conn);
    client.on('data', (chunk) => {
      conn.sent += chunk.toString('latin1');
    });
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const { port } = server.address();
  const requests = () =>
    connections.flatMap((conn) =>
      conn.sent
        .split('\r\n\r\n')
        .filter((head) => /^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/.test(head))
        .map((head) => {
          const [start, ...lines] = head.split('\r\n');
          const [method, path] = start.split(' ');
          const headers = {};
          for (const l of lines) {
            const i = l.indexOf(':');
            if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
          }
          return { connection: conn.n, method, path, headers };
        }),
    );
  const cut = () => {
    let n = 0;
    for (const conn of connections) {
      if (!conn.client.destroyed || !conn.upstream.destroyed) n += 1;
      conn.cut = true;
      conn.client.destroy();
      conn.upstream.destroy();
    }
    return n;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    requests,
    cut,
    /** Resolves once `n` requests went through; rejects after `ms`. */
    async waitForRequests(n, what, ms = WAIT_MS) {
      const deadline = Date.now() + ms;
      while (requests().length < n) {
        if (Date.now() > deadline) {
          throw new Error(`expected ${what} (${n} requests through the proxy) within ${ms / 1000} s; saw ${JSON.stringify(requests())}`);
        }
        await sleep(20);
      }
      return requests();
    },
    close: async () => {
      cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * The server's realtime gauges from GET /metrics: `{ sse, eventsource,
 * subscriptions }` (open graphql-sse streams, open /realtime streams, running
 * subscriptions), each 0 when the series is absent.
 */
export async function realtimeGauges(graphqlUrl) {
  const res = await fetch(`${originOf(graphqlUrl)}/metrics`);
  const text = await res.text();
  const value = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : 0;
  };
  return {
    sse: value(/^livegate_realtime_connections\{protocol="graphql-sse"\} (\S+)$/m),
    eventsource: value(/^livegate_realtime_connections\{protocol="eventsource"\} (\S+)$/m),
    subscriptions: value(/^livegate_realtime_subscriptions (\S+)$/m),
    text,
  };
}

/**
 * Polls realtimeGauges until `check(gauges)` holds; rejects after `ms` with the
 * last values.
 */
export async function waitForGauges(graphqlUrl, check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let gauges;
  for (;;) {
    gauges = await realtimeGauges(graphqlUrl);
    if (check(gauges)) return gauges;
    if (Date.now() > deadline) {
      const { text, ...values } = gauges;
      throw new Error(`expected ${what} within ${ms / 1000} s; gauges ${JSON.stringify(values)}`);
    }
    await sleep(50);
  }
}

/**
 * A promise that rejects when `work` rejects and otherwise never settles: race
 * it with a wait so a failing background writer fails the test at once, with
 * its own error.
 */
export function failFast(work) {
  return work.then(() => new Promise(() => {}));
}

/**
 * `token` (an HS256 access token the test server issued) re-signed with
 * TEST_JWT_SECRET and `exp` set to `exp` (seconds since the epoch): the same
 * user and session, expiring when a test wants.
 */
export function withExpiry(token, exp) {
  const [header, payload] = token.split('.');
  const claims = { ...JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')), exp };
  const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${body}.${createHmac('sha256', TEST_JWT_SECRET).update(body).digest('base64url')}`;
}
