import type { GraphQLFormattedError } from 'graphql';

/** A GraphQL response (over HTTP or a socket) that carried errors. */
export class GraphQLResponseError extends Error {
  override readonly name = 'GraphQLResponseError';
  /** The errors as the server sent them; `extensions.code` says what went wrong. */
  readonly errors: readonly GraphQLFormattedError[];
  /** The HTTP status, for requests over HTTP. */
  readonly status: number | undefined;

  constructor(errors: readonly GraphQLFormattedError[], status?: number) {
    const text = errors.map((e) => `${e.message} (${String(e.extensions?.['code'] ?? 'no code')})`).join('; ');
    super(text || 'GraphQL error');
    this.errors = errors;
    this.status = status;
  }

  /** The `extensions.code` of the first error (`UNAUTHENTICATED`, `CURSOR_EXPIRED`, ...). */
  get code(): string | undefined {
    const code = this.errors[0]?.extensions?.['code'];
    return typeof code === 'string' ? code : undefined;
  }
}

/** The server answered something that is not a GraphQL response, or a stream failed for good. */
export class LivegateError extends Error {
  override readonly name = 'LivegateError';
  /** The HTTP status, when there was one. */
  readonly status: number | undefined;
  /** The error code the server gave (`UNAUTHENTICATED`, `CURSOR_EXPIRED`, ...), when it gave one. */
  readonly code: string | undefined;

  constructor(message: string, options: { status?: number; code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
    this.code = options.code;
  }
}
