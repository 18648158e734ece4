// Two small typed transports over a TypedDocumentNode: `request` for queries and
// mutations over HTTP (fetch), `subscribe` for subscriptions over graphql-ws.
// The document fixes both the variables a call must pass and the shape of the
// data it gets back, so no call site names a type by hand.
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print, type DocumentNode, type GraphQLFormattedError } from 'graphql';
import type { Client, SubscribePayload } from 'graphql-ws';

type Variables = Record<string, unknown>;

/** A GraphQL response that carried errors. */
export class GraphQLResponseError extends Error {
  constructor(
    readonly operation: string,
    readonly errors: readonly GraphQLFormattedError[],
  ) {
    const codes = errors.map((e) => `${e.message} (${String(e.extensions?.['code'] ?? 'no code')})`);
    super(`${operation}: ${codes.join('; ')}`);
  }
}

/** The hash codegen gave `doc` (`persistedDocuments: true`), if any. */
function persistedHash(doc: DocumentNode): string | undefined {
  const meta = (doc as { __meta__?: { hash?: unknown } }).__meta__;
  return typeof meta?.hash === 'string' ? meta.hash : undefined;
}

/**
 * What names `doc` in a request: its hash when codegen persisted it (the server
 * then needs the manifest, `--persisted-documents`), else its text.
 */
function documentOf(doc: DocumentNode): { query: string } | { documentId: string } {
  const hash = persistedHash(doc);
  return hash === undefined ? { query: print(doc) } : { documentId: hash };
}

function operationName(doc: DocumentNode): string {
  for (const def of doc.definitions) {
    if (def.kind === 'OperationDefinition') return def.name?.value ?? 'anonymous operation';
  }
  return 'document without an operation';
}

/** Runs a query or mutation over HTTP (GraphQL over HTTP, POST with JSON). */
export async function request<TData, TVariables extends Variables>(
  url: string,
  doc: TypedDocumentNode<TData, TVariables>,
  variables: TVariables,
  token?: string,
): Promise<TData> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify({ ...documentOf(doc), variables }),
  });
  const body = (await res.json()) as { data?: TData | null; errors?: GraphQLFormattedError[] };
  if (body.errors !== undefined && body.errors.length > 0) {
    throw new GraphQLResponseError(operationName(doc), body.errors);
  }
  if (body.data === undefined || body.data === null) {
    throw new Error(`${operationName(doc)}: HTTP ${res.status} without data`);
  }
  return body.data;
}

/**
 * Subscribes over graphql-ws; `onData` gets each event's typed data, `onError`
 * a GraphQL error or a closed socket. Returns the function that unsubscribes.
 */
export function subscribe<TData, TVariables extends Variables>(
  client: Client,
  doc: TypedDocumentNode<TData, TVariables>,
  variables: TVariables,
  onData: (data: TData) => void,
  onError: (error: unknown) => void,
): () => void {
  const name = operationName(doc);
  // graphql-ws insists on a `query` string: with a persisted document, an empty
  // one beside its `documentId` (livegate takes the id's text).
  const payload = { query: '', ...documentOf(doc), variables } as SubscribePayload;
  return client.subscribe<TData>(
    payload,
    {
      next: (result) => {
        if (result.errors !== undefined && result.errors.length > 0) {
          onError(new GraphQLResponseError(name, result.errors));
        } else if (result.data !== undefined && result.data !== null) {
          onData(result.data);
        }
      },
      error: onError,
      complete: () => {},
    },
  );
}
