// The playground page (GET /playground): GraphiQL wired to livegate's /graphql, with
// subscriptions over graphql-ws and a Sign in panel. Everything it needs is in this
// bundle; it makes no request except to the livegate that served it.

import 'graphiql/graphiql.css';
import './playground.css';

import { GraphiQL } from 'graphiql';
import { useMemo } from 'react';
import { createRoot } from 'react-dom/client';

import { graphqlHttpUrl, graphqlWsUrl } from '../shared/endpoints.js';
import { createLivegateFetcher } from './fetcher.js';
import { IdentityBadge, signInPlugin } from './SignIn.jsx';

const WELCOME = `# Welcome to the livegate playground.
#
# Queries and mutations: POST /graphql.
# Subscriptions: a WebSocket on the same URL
# (graphql-ws); their events appear live on
# the right.
#
# Docs (book icon): every collection of this
# app. Ctrl-Space: autocomplete. Sign in
# (person icon) to act as a user: owner-only
# collections and rooms need it.
#
# Try a subscription here, then a mutation
# in a second tab:
#   subscription { postChanged { action id } }

query Me {
  me { id email role accountId }
}
`;

/** Query, variables and operation name from the page URL: links can open a query. */
function fromUrl() {
  const params = new URLSearchParams(window.location.search);
  const get = (name) => params.get(name) ?? undefined;
  return { query: get('query'), variables: get('variables'), operationName: get('operationName') };
}

/** Keeps the URL in step with the editors, so the address bar is a shareable link. */
function setUrlParam(name, value) {
  const url = new URL(window.location.href);
  if (value) url.searchParams.set(name, value);
  else url.searchParams.delete(name);
  window.history.replaceState(null, '', url);
}

function Playground() {
  const fetcher = useMemo(() => createLivegateFetcher({ httpUrl: graphqlHttpUrl(), wsUrl: graphqlWsUrl() }), []);
  const initial = useMemo(fromUrl, []);
  const plugins = useMemo(() => [signInPlugin], []);
  return (
    <GraphiQL
      fetcher={fetcher}
      plugins={plugins}
      defaultQuery={WELCOME}
      query={initial.query}
      variables={initial.variables}
      operationName={initial.operationName}
      defaultEditorToolsVisibility={initial.variables ? 'variables' : false}
      onEditQuery={(query) => setUrlParam('query', query)}
      onEditVariables={(variables) => setUrlParam('variables', variables)}
      onEditOperationName={(name) => setUrlParam('operationName', name)}
    >
      <GraphiQL.Logo>
        <span className="lg-logo">
          livegate <IdentityBadge />
        </span>
      </GraphiQL.Logo>
    </GraphiQL>
  );
}

createRoot(document.getElementById('playground')).render(<Playground />);
