// Where livegate's GraphQL endpoint is, seen from the page that is running.
//
// Derived from `location`, never hard-coded: the same build works on any host and
// port, under a path prefix behind a reverse proxy, and over https (wss for the
// WebSocket). A page at `<base>/playground` or `<base>/playground/<name>` talks to
// `<base>/graphql` (and `<base>/realtime`).

/** The URL of the page's `/playground` root, with a trailing slash. */
function playgroundRoot(loc = window.location) {
  const path = loc.pathname;
  const at = path.lastIndexOf('/playground');
  const root = at >= 0 ? path.slice(0, at + '/playground'.length) : path.replace(/\/[^/]*$/, '');
  return new URL(`${root}/`, loc.href);
}

/** `http(s)://host[:port][/prefix]/graphql`: queries and mutations (GraphQL over HTTP). */
export function graphqlHttpUrl(loc = window.location) {
  return new URL('../graphql', playgroundRoot(loc)).href;
}

/** `ws(s)://host[:port][/prefix]/graphql`: subscriptions (graphql-transport-ws). */
export function graphqlWsUrl(loc = window.location) {
  const url = new URL(graphqlHttpUrl(loc));
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** `http(s)://host[:port][/prefix]/realtime`: the plain EventSource change feed. */
export function realtimeUrl(loc = window.location) {
  return new URL('../realtime', playgroundRoot(loc)).href;
}
