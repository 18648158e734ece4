// The livegate client: queries and mutations over HTTP, subscriptions over
// graphql-ws that resume from their last cursor, the /realtime feed, rooms,
// and one access token renewed ahead of expiry for all of them.
import type { GraphQLFormattedError } from 'graphql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';

import { documentText, prepareSubscription, type Document } from './document.js';
import { GraphQLResponseError, LivegateError } from './errors.js';
import { Tokens, unref, type TokenSource } from './tokens.js';
import { readEventStream } from './sse.js';

export type { TokenSource } from './tokens.js';

/** What `createClient` takes. */
export interface ClientOptions {
  /** The GraphQL endpoint over HTTP, e.g. `http://localhost:4000/graphql`. */
  url: string;
  /** The WebSocket endpoint; default: `url` with `http` changed to `ws`. */
  wsUrl?: string;
  /** The EventSource feed; default: `url` with its last `/graphql` changed to `/realtime`. */
  realtimeUrl?: string;
  /**
   * The access token, or a function returning the current one (called when the
   * client first needs a token, and again to renew when no `refresh` is given).
   * Omit for anonymous access.
   */
  token?: TokenSource;
  /**
   * Returns a new access token, e.g. with the `refreshSession` mutation. Called
   * shortly before a JWT's `exp`, and when the server refuses an expired token.
   */
  refresh?: () => Promise<string>;
  /** How long before `exp` to renew, in ms; default a tenth of the token's lifetime, from 1 s to 30 s. */
  refreshMarginMs?: number;
  /** The account (id or slug) anonymous viewers browse; default: the server's default account. */
  account?: string;
  /** A WebSocket class, for runtimes without a global one (Node 20: `ws`). */
  webSocketImpl?: unknown;
  /** A fetch function; default: the global `fetch`. */
  fetchImpl?: typeof fetch;
  /** Interval of the client's pings over the socket, in ms; a ping not answered within this time too drops the socket (it then reconnects). Default 15000; 0 turns pings off. */
  keepAlive?: number;
  /** How long a connection may take to be acknowledged before the client gives up on it and retries, in ms (default 10000; 0: no limit). */
  connectTimeoutMs?: number;
  /** The longest wait between two reconnection attempts, in ms (default 10000). */
  maxRetryDelayMs?: number;
  /** Errors nobody else hears of (a failed background token renewal). Default: console.error. */
  onError?: (error: unknown) => void;
}

/** A GraphQL result as the server sends it; `data` is typed by the document. */
export interface Result<TData> {
  data?: TData | null | undefined;
  errors?: readonly GraphQLFormattedError[] | undefined;
  extensions?: unknown;
}

/** What a subscription's callbacks get; like graphql-ws's sink. */
export interface Sink<TData> {
  /** Each result, in order; `data` is typed by the document. */
  next?: (result: Result<TData>) => void;
  /** The subscription failed for good: a `GraphQLResponseError`, a `LivegateError`, or the error as thrown. */
  error?: (error: unknown) => void;
  /** The server ended the subscription. */
  complete?: () => void;
}

export interface SubscribeOptions {
  /**
   * Resume from the last cursor on reconnect. Default: when the root field takes
   * `after` (`changes`, `<type>Changed`, or any field the document passes `after`).
   */
  resume?: boolean;
}

/** An unsubscribe function that also tells the subscription's last cursor. */
export interface Unsubscribe {
  (): void;
  /** The cursor of the last event delivered (or the `after` it started from). */
  readonly cursor: string | undefined;
}

/** One hint from the `/realtime` feed. */
export interface LiveChange {
  /** The collection key, as in the app file. */
  collection: string;
  action: 'create' | 'update' | 'delete';
  /** The event's cursor (its SSE id). */
  cursor: string;
}

export interface LiveOptions {
  /** Start after this cursor (replays what came later first). */
  after?: string;
  /** A refusal (bad collection, expired cursor, bad credentials): the feed stops. */
  onError?: (error: unknown) => void;
  /** Each time the stream is (re)opened. */
  onOpen?: () => void;
}

/** A member of a room. */
export interface RoomMember {
  peerId: string;
  userId: string | null;
  email: string | null;
}

/** An event in a room. */
export interface RoomEvent<TPayload = unknown> {
  room: string;
  kind: string;
  payload: TPayload;
  from: RoomMember;
  at: string;
}

/** A `presence` event's payload. */
export type Presence =
  | { event: 'sync'; members: RoomMember[] }
  | { event: 'join'; member: RoomMember }
  | { event: 'leave'; member: RoomMember };

export interface RoomOptions {
  /** Handlers by message `kind` (`presence` is reserved). */
  on?: Record<string, (payload: any, event: RoomEvent) => void>;
  /** Messages of a kind without a handler in `on`. */
  onMessage?: (event: RoomEvent) => void;
  /** Each presence event, with the roster after it. */
  onPresence?: (presence: Presence, members: RoomMember[]) => void;
  /** The roster, each time it changes. */
  onMembers?: (members: RoomMember[]) => void;
  /** The membership failed for good (e.g. FORBIDDEN). */
  onError?: (error: unknown) => void;
}

/** A joined room. */
export interface Room {
  readonly name: string;
  /** Relays `{kind, payload}` to every member (you included), from your membership. */
  send(kind: string, payload?: unknown): Promise<boolean>;
  /** The roster, as of the last presence event. */
  members(): RoomMember[];
  /** Your own membership (known once the first roster arrived). */
  self(): RoomMember | undefined;
  /** Resolves with the roster once joined. */
  readonly joined: Promise<RoomMember[]>;
  /** Leaves the room. */
  leave(): void;
}

export interface RequestOptions {
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

/** A livegate client. */
export interface LivegateClient {
  /** A query or mutation over HTTP; resolves to `data`, rejects with a `GraphQLResponseError` on errors. */
  request<TData = Record<string, any>, TVariables = Record<string, unknown>>(
    document: Document<TData, TVariables>,
    variables?: TVariables,
    options?: RequestOptions,
  ): Promise<TData>;
  /** A subscription over graphql-ws, resumed from its last cursor on every reconnect. */
  subscribe<TData = Record<string, any>, TVariables = Record<string, unknown>>(
    document: Document<TData, TVariables>,
    variables: TVariables | undefined,
    sink: Sink<TData>,
    options?: SubscribeOptions,
  ): Unsubscribe;
  /** The `/realtime` EventSource feed of one or more collections; returns the function that stops it. */
  live(collections: string | readonly string[], onChange: (change: LiveChange) => void, options?: LiveOptions): () => void;
  /** Joins a room. */
  room(name: string, options?: RoomOptions): Room;
  /** The current access token (renewed first if it is about to expire). */
  token(): Promise<string | undefined>;
  /** Closes the socket and every stream; the client is unusable afterwards. */
  dispose(): void;
}

/** Close code the client uses to reconnect with a renewed token. */
const RENEW_CLOSE = 4000;
/** The client's own close when it could not get a token: retried with backoff. */
const TOKEN_UNAVAILABLE_CLOSE = 4001;
/** Close code the server uses for an expired or revoked token. */
const FORBIDDEN_CLOSE = 4403;

const ROOM_SUBSCRIPTION = `subscription LivegateRoom($name: String!) {
  room(name: $name) { room kind payload at from { peerId userId email } }
}`;
const SEND_TO_ROOM = `mutation LivegateSendToRoom($room: String!, $kind: String!, $payload: JSON) {
  sendToRoom(room: $room, kind: $kind, payload: $payload)
}`;

/** A failure to get a token for a connection: not retried. */
class TokenError extends LivegateError {}

/** Creates a client. */
export function createClient(options: ClientOptions): LivegateClient {
  const httpUrl = options.url;
  const wsUrl = options.wsUrl ?? httpUrl.replace(/^http/, 'ws');
  const realtimeUrl = options.realtimeUrl ?? defaultRealtimeUrl(httpUrl);
  const report = options.onError ?? ((err: unknown) => console.error('livegate client:', err));
  const fetchImpl: typeof fetch = options.fetchImpl ?? ((input, init) => fetch(input, init));
  const maxDelay = options.maxRetryDelayMs ?? 10_000;
  const keepAlive = options.keepAlive ?? 15_000;
  const connectTimeout = options.connectTimeoutMs ?? 10_000;
  const tokens = new Tokens({
    token: options.token,
    refresh: options.refresh,
    refreshMarginMs: options.refreshMarginMs,
    onError: report,
  });
  let disposed = false;
  const stoppers = new Set<() => void>();

  // --- the socket -----------------------------------------------------------

  /** The socket that is connected (acknowledged), and the token it was opened with. */
  let socket: { ws: WebSocketLike; token: string | undefined } | undefined;
  let opening: WebSocketLike | undefined;
  let lastClose: number | undefined;
  let forbiddenInARow = 0;
  /** Reconnect at once (the client closed the socket itself, or must renew). */
  let immediate = false;
  let pongTimer: ReturnType<typeof setTimeout> | undefined;

  /** The socket constructed last (connecting, or connected). */
  let newest: WebSocketLike | undefined;
  /**
   * The WebSocket class, made to give up on a connection that is not acknowledged
   * within `connectTimeoutMs` (a handshake lost in a network that went quiet).
   */
  const base = (options.webSocketImpl ?? (globalThis as { WebSocket?: unknown }).WebSocket) as
    | (new (url: string, protocols?: string | string[]) => WebSocketLike)
    | undefined;
  const webSocketImpl =
    base &&
    class extends base {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        newest = this;
        if (connectTimeout > 0) {
          const timer = setTimeout(() => {
            if (socket?.ws !== this && this.readyState < 2) dropDeadSocket(this);
          }, connectTimeout);
          unref(timer);
          acked.set(this, () => clearTimeout(timer));
        }
      }
    };
  const acked = new WeakMap<WebSocketLike, () => void>();

  let wsClient: WsClient | undefined;
  /** The graphql-ws client, made on first use (so HTTP-only use needs no WebSocket). */
  const ws = (): WsClient => (wsClient ??= createWsClient({
    url: wsUrl,
    ...(webSocketImpl === undefined ? {} : { webSocketImpl }),
    lazy: true,
    retryAttempts: Infinity,
    keepAlive,
    connectionParams: async () => {
      let token: string | undefined;
      const socketNow = opening;
      try {
        if (lastClose === FORBIDDEN_CLOSE) {
          forbiddenInARow += 1;
          if (!tokens.renewable) throw new TokenError('the server refused the access token (4403) and there is no refresh() to get a new one', { code: 'FORBIDDEN' });
          if (forbiddenInARow > 3) throw new TokenError('the server refused every renewed access token (4403)', { code: 'FORBIDDEN' });
          token = await renewForSocket();
        } else {
          token = await getForSocket();
        }
      } catch (err) {
        if (err instanceof TokenError && err.code === 'FORBIDDEN') throw err;
        // No token right now (the refresh call failed: offline, the auth
        // server down). Throwing here would end every subscription for good
        // (graphql-ws takes it as fatal): report it, close this socket with a
        // code that is retried, with backoff, and try again.
        report(err);
        immediate = false;
        socketNow?.close(TOKEN_UNAVAILABLE_CLOSE, 'no access token yet');
        return {};
      }
      if (opening) pendingToken.set(opening, token);
      const params: Record<string, unknown> = {};
      if (token !== undefined) params['token'] = token;
      if (options.account !== undefined) params['account'] = options.account;
      return params;
    },
    retryWait: async (retries) => {
      if (immediate) {
        immediate = false;
        return;
      }
      const base = retries === 0 ? 200 : Math.min(maxDelay, 500 * 2 ** (retries - 1));
      await sleep(base * (0.5 + Math.random() / 2));
    },
    // Close events are retried (fatal codes aside, graphql-ws throws those
    // first), the client's own 4499 "Terminated" included; so are the socket's
    // error events (refused connection, DNS), which are not Errors. Errors
    // thrown in the client (a token that cannot be had, a bad response) are not.
    shouldRetry: (err) => isCloseEvent(err) || !(err instanceof Error),
    on: {
      opened: (s) => {
        opening = s as WebSocketLike;
      },
      connected: (s) => {
        const w = s as WebSocketLike;
        acked.get(w)?.();
        socket = { ws: w, token: pendingToken.get(w) };
        opening = undefined;
        lastClose = undefined;
        forbiddenInARow = 0;
      },
      closed: (event) => {
        socket = undefined;
        opening = undefined;
        clearPongTimer();
        const code = (event as { code?: unknown } | undefined)?.code;
        lastClose = typeof code === 'number' ? code : undefined;
        if (lastClose === RENEW_CLOSE || (lastClose === FORBIDDEN_CLOSE && forbiddenInARow === 0)) immediate = true;
      },
      ping: (received) => {
        if (received || keepAlive <= 0) return;
        clearPongTimer();
        const pinged = socket?.ws;
        pongTimer = setTimeout(() => {
          if (pinged && socket?.ws === pinged) dropDeadSocket(pinged);
        }, keepAlive);
        unref(pongTimer);
      },
      pong: (received) => {
        if (received) clearPongTimer();
      },
    },
  }));
  const pendingToken = new WeakMap<WebSocketLike, string | undefined>();

  function clearPongTimer() {
    if (pongTimer !== undefined) clearTimeout(pongTimer);
    pongTimer = undefined;
  }

  /**
   * A socket that stopped answering: forget it and reconnect. Its handlers go
   * first, so nothing it might still deliver reaches a resumed subscription.
   */
  function dropDeadSocket(dead: WebSocketLike) {
    dead.onmessage = null;
    if (dead === newest) {
      immediate = true;
      wsClient?.terminate();
    }
    if (typeof dead.terminate === 'function') dead.terminate();
    else dead.close();
  }

  async function getForSocket() {
    try {
      return await tokens.get();
    } catch (err) {
      throw new TokenError('cannot get an access token', { cause: err });
    }
  }
  async function renewForSocket() {
    try {
      return await tokens.renew();
    } catch (err) {
      throw new TokenError('cannot renew the access token', { cause: err });
    }
  }

  // A renewed token: reopen the socket with it. The close is a clean one, so
  // every event the server sent before it is delivered first; then each
  // subscription resubscribes from its last cursor.
  tokens.onRenew((token) => {
    if (socket && socket.token !== token && socket.ws.readyState === 1) {
      immediate = true;
      socket.ws.close(RENEW_CLOSE, 'token renewed');
    }
  });

  // --- HTTP -----------------------------------------------------------------

  async function request<TData, TVariables>(
    document: Document<TData, TVariables>,
    variables?: TVariables,
    init: RequestOptions = {},
  ): Promise<TData> {
    const query = documentText(document as Document<unknown, unknown>);
    for (let attempt = 0; ; attempt += 1) {
      const token = attempt === 0 ? await tokens.get() : await tokens.renew();
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json;q=0.9',
        ...(init.headers ?? {}),
      };
      if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
      if (options.account !== undefined) headers['x-account'] = options.account;
      const res = await fetchImpl(httpUrl, {
        method: 'POST',
        headers,
        body: JSON.stringify(variables === undefined ? { query } : { query, variables }),
        ...(init.signal ? { signal: init.signal } : {}),
      });
      const text = await res.text();
      let body: Result<TData> | undefined;
      try {
        body = JSON.parse(text) as Result<TData>;
      } catch {
        throw new LivegateError(`HTTP ${res.status}: not a GraphQL response: ${text.slice(0, 200)}`, { status: res.status });
      }
      const errors = body.errors ?? [];
      if (errors.length > 0) {
        const unauthenticated = res.status === 401 || errors.some((e) => e.extensions?.['code'] === 'UNAUTHENTICATED');
        if (unauthenticated && token !== undefined && tokens.renewable && attempt === 0) continue;
        throw new GraphQLResponseError(errors, res.status);
      }
      if (body.data === undefined || body.data === null) {
        throw new LivegateError(`HTTP ${res.status} without data`, { status: res.status });
      }
      return body.data;
    }
  }

  // --- subscriptions --------------------------------------------------------

  function subscribe<TData, TVariables>(
    document: Document<TData, TVariables>,
    variables: TVariables | undefined,
    sink: Sink<TData>,
    subOptions: SubscribeOptions = {},
  ): Unsubscribe {
    if (disposed) throw new LivegateError('this client was disposed');
    const prepared = prepareSubscription(document as Document<unknown, unknown>, subOptions.resume);
    const vars: Record<string, unknown> = { ...((variables ?? {}) as Record<string, unknown>) };
    const resume = prepared.resume;
    let cursor: string | undefined;
    if (resume) {
      const given = resume.callerVariable ? vars[resume.afterVariable] : resume.literalAfter;
      cursor = typeof given === 'string' ? given : undefined;
    }
    // graphql-ws serializes the payload each time it (re)subscribes, so this
    // getter sends the cursor of the last event delivered, whenever that is.
    const payload = {
      query: prepared.query,
      ...(prepared.operationName === undefined ? {} : { operationName: prepared.operationName }),
      get variables(): Record<string, unknown> {
        return resume ? { ...vars, [resume.afterVariable]: cursor ?? null } : vars;
      },
    };
    const release = tokens.hold();
    let ended = false;
    const end = () => {
      if (ended) return false;
      ended = true;
      release();
      stoppers.delete(stop);
      return true;
    };
    let dispose: (() => void) | undefined;
    const start = () => {
      if (ended) return;
      dispose = ws().subscribe<TData>(payload, {
        next: (result) => {
          if (ended) return;
          let delivered = result as Result<TData>;
          if (resume) {
            const root = (result.data as Record<string, unknown> | null | undefined)?.[resume.rootKey];
            if (root !== null && typeof root === 'object') {
              const value = (root as Record<string, unknown>)[resume.cursorKey];
              if (typeof value === 'string') cursor = value;
              if (resume.cursorAdded) {
                const { [resume.cursorKey]: _added, ...rest } = root as Record<string, unknown>;
                delivered = { ...result, data: { ...(result.data as object), [resume.rootKey]: rest } as TData };
              }
            }
          }
          sink.next?.(delivered);
        },
        error: (err) => {
          if (end()) sink.error?.(normalizeError(err));
        },
        complete: () => {
          if (end()) sink.complete?.();
        },
      });
    };
    const stop = () => {
      end();
      dispose?.();
    };
    if (resume && cursor === undefined) {
      // Where the feeds stand before subscribing: a connection lost before the
      // first event then resumes from here, and nothing written meanwhile is
      // lost. A server without `Query.cursor` starts live, as before.
      once<{ cursor?: unknown }>('{ cursor }', {}, (cancel) => {
        dispose = cancel;
      }).then(
        (data) => {
          if (cursor === undefined && typeof data.cursor === 'string') cursor = data.cursor;
          start();
        },
        () => start(),
      );
    } else {
      start();
    }
    stoppers.add(stop);
    return Object.defineProperty(stop, 'cursor', { get: () => cursor, enumerable: true }) as Unsubscribe;
  }

  /** One result of an operation over the socket (a mutation, here). */
  function once<TData>(
    query: string,
    variables: Record<string, unknown>,
    cancelWith?: (cancel: () => void) => void,
  ): Promise<TData> {
    return new Promise<TData>((resolve, reject) => {
      let result: Result<TData> | undefined;
      const cancel = ws().subscribe<TData>(
        { query, variables },
        {
          next: (r) => {
            result = r;
          },
          error: (err) => reject(normalizeError(err)),
          complete: () => {
            if (result?.errors?.length) reject(new GraphQLResponseError(result.errors));
            else if (result?.data == null) reject(new LivegateError('the operation ended without a result'));
            else resolve(result.data);
          },
        },
      );
      cancelWith?.(cancel);
    });
  }

  // --- /realtime ------------------------------------------------------------

  function live(
    collections: string | readonly string[],
    onChange: (change: LiveChange) => void,
    liveOptions: LiveOptions = {},
  ): () => void {
    if (disposed) throw new LivegateError('this client was disposed');
    const list = typeof collections === 'string' ? [collections] : [...collections];
    let lastId = liveOptions.after;
    let stopped = false;
    let controller: AbortController | undefined;
    let usedToken: string | undefined;
    let renewing = false;
    const release = tokens.hold();
    const unlisten = tokens.onRenew((token) => {
      if (controller && usedToken !== token) {
        renewing = true;
        controller.abort();
      }
    });
    const fail = (err: unknown) => {
      stop();
      (liveOptions.onError ?? report)(err);
    };

    (async () => {
      let attempt = 0;
      let forceRenew = false;
      let authFailures = 0;
      if (lastId === undefined) {
        // Where the feeds stand before the first connection: a stream lost
        // before its first event then resumes from here, missing nothing.
        try {
          const data = await request<{ cursor?: unknown }, Record<string, never>>('{ cursor }');
          if (lastId === undefined && typeof data.cursor === 'string') lastId = data.cursor;
        } catch {
          // A server without `Query.cursor`, or offline: start live.
        }
      }
      while (!stopped) {
        controller = new AbortController();
        renewing = false;
        let wait = true;
        try {
          let token: string | undefined;
          try {
            token = forceRenew ? await tokens.renew() : await tokens.get();
          } catch (err) {
            fail(new LivegateError('cannot get an access token', { cause: err }));
            return;
          }
          forceRenew = false;
          usedToken = token;
          if (stopped) break;
          const url = new URL(realtimeUrl);
          url.searchParams.set('collections', list.join(','));
          if (options.account !== undefined) url.searchParams.set('account', options.account);
          const headers: Record<string, string> = { accept: 'text/event-stream' };
          // In a header, not the URL (which proxies and error trackers log).
          if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
          if (lastId !== undefined) headers['last-event-id'] = lastId;
          const res = await fetchImpl(url, { headers, signal: controller.signal, cache: 'no-store' });
          if (res.status === 401 && token !== undefined && tokens.renewable && authFailures < 2) {
            authFailures += 1;
            forceRenew = true;
            wait = false;
            await res.body?.cancel();
            continue;
          }
          if (!res.ok || res.body === null) {
            const text = await res.text().catch(() => '');
            const code = errorCode(text);
            const err = new LivegateError(`/realtime answered HTTP ${res.status}${code ? ` ${code}` : ''}: ${text.slice(0, 200)}`, {
              status: res.status,
              ...(code ? { code } : {}),
            });
            // 4xx is a refusal an EventSource does not retry (429 aside); 5xx is retried.
            if (res.status >= 400 && res.status < 500 && res.status !== 429) {
              fail(err);
              return;
            }
            throw err;
          }
          const type = res.headers.get('content-type') ?? '';
          if (!type.startsWith('text/event-stream')) {
            await res.body.cancel().catch(() => {});
            fail(new LivegateError(`/realtime answered ${type || 'no content type'}, not an event stream: is the URL right?`, { status: res.status }));
            return;
          }
          authFailures = 0;
          liveOptions.onOpen?.();
          const openedAt = Date.now();
          let delivered = false;
          await readEventStream(res.body, lastId, (event) => {
            if (stopped) return;
            delivered = true;
            lastId = event.id;
            if (event.event !== 'change' || event.id === undefined) return;
            let parsed: { collection?: unknown; action?: unknown };
            try {
              parsed = JSON.parse(event.data) as typeof parsed;
            } catch {
              return;
            }
            try {
              onChange({
                collection: String(parsed.collection),
                action: parsed.action as LiveChange['action'],
                cursor: event.id,
              });
            } catch (err) {
              report(err);
            }
          });
          // The server ended the stream (an expired token, a slow reader, a
          // restart): resume at once, unless it keeps ending at once with
          // nothing in it, which backs off like a failure.
          if (delivered || Date.now() - openedAt > 5_000) {
            attempt = 0;
            wait = false;
          }
        } catch (err) {
          if (stopped) break;
          if (renewing) wait = false;
        }
        if (stopped) break;
        if (wait) {
          const base = Math.min(maxDelay, 500 * 2 ** attempt);
          attempt += 1;
          await sleep(base * (0.5 + Math.random() / 2));
        }
      }
    })().catch(fail);

    const stop = () => {
      if (stopped) return;
      stopped = true;
      controller?.abort();
      release();
      unlisten();
      stoppers.delete(stop);
    };
    stoppers.add(stop);
    return stop;
  }

  // --- rooms ----------------------------------------------------------------

  function room(name: string, roomOptions: RoomOptions = {}): Room {
    let roster: RoomMember[] = [];
    let me: RoomMember | undefined;
    let resolveJoined!: (members: RoomMember[]) => void;
    let rejectJoined!: (err: unknown) => void;
    const joined = new Promise<RoomMember[]>((resolve, reject) => {
      resolveJoined = resolve;
      rejectJoined = reject;
    });
    joined.catch(() => {});
    const changed = (presence: Presence) => {
      roomOptions.onPresence?.(presence, [...roster]);
      roomOptions.onMembers?.([...roster]);
    };
    const unsubscribe = subscribe<{ room: RoomEvent }, { name: string }>(
      ROOM_SUBSCRIPTION,
      { name },
      {
        next: (result) => {
          if (result.errors?.length) {
            const err = new GraphQLResponseError(result.errors);
            rejectJoined(err);
            roomOptions.onError?.(err);
            return;
          }
          const event = result.data?.room;
          if (!event) return;
          if (event.kind === 'presence') {
            const presence = event.payload as Presence;
            if (presence.event === 'sync') {
              roster = [...presence.members];
              me = event.from;
              resolveJoined([...roster]);
            } else if (presence.event === 'join') {
              roster = [...roster.filter((m) => m.peerId !== presence.member.peerId), presence.member];
            } else if (presence.event === 'leave') {
              roster = roster.filter((m) => m.peerId !== presence.member.peerId);
            }
            changed(presence);
            return;
          }
          const handler = roomOptions.on?.[event.kind];
          if (handler) handler(event.payload, event);
          else roomOptions.onMessage?.(event);
        },
        error: (err) => {
          rejectJoined(err);
          (roomOptions.onError ?? report)(err);
        },
      },
      { resume: false },
    );
    return {
      name,
      joined,
      members: () => [...roster],
      self: () => me,
      send: async (kind, payload) => {
        const data = await once<{ sendToRoom: boolean }>(SEND_TO_ROOM, { room: name, kind, payload: payload ?? null });
        return data.sendToRoom;
      },
      leave: () => {
        unsubscribe();
        roster = [];
      },
    };
  }

  return {
    request,
    subscribe,
    live,
    room,
    token: () => tokens.get(),
    dispose: () => {
      if (disposed) return;
      disposed = true;
      for (const stop of [...stoppers]) stop();
      tokens.dispose();
      clearPongTimer();
      // graphql-ws rejects dispose() when a reconnection was under way: nothing to report.
      if (wsClient) Promise.resolve(wsClient.dispose()).catch(() => {});
    },
  };
}

/** The parts of a WebSocket the client touches. */
interface WebSocketLike {
  readyState: number;
  onmessage: unknown;
  close(code?: number, reason?: string): void;
  terminate?: () => void;
}

function isCloseEvent(value: unknown): value is { code: number; reason: unknown } {
  return typeof value === 'object' && value !== null && typeof (value as { code?: unknown }).code === 'number' && 'reason' in value;
}

function defaultRealtimeUrl(httpUrl: string): string {
  const url = new URL(httpUrl);
  url.pathname = /\/graphql\/?$/.test(url.pathname) ? url.pathname.replace(/\/graphql\/?$/, '/realtime') : '/realtime';
  url.search = '';
  return url.toString();
}

function errorCode(text: string): string | undefined {
  try {
    const body = JSON.parse(text) as { errors?: GraphQLFormattedError[]; code?: unknown; extensions?: { code?: unknown } };
    const code = body.errors?.[0]?.extensions?.['code'] ?? body.extensions?.code ?? body.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

/** What a subscription's `error` gets: GraphQL errors, a close event, or an Error, made an Error. */
function normalizeError(err: unknown): unknown {
  if (Array.isArray(err)) return new GraphQLResponseError(err as GraphQLFormattedError[]);
  if (isCloseEvent(err)) {
    const { code, reason } = err;
    return new LivegateError(`the socket closed: ${code} ${String(reason ?? '')}`.trim(), { code: String(code) });
  }
  if (err instanceof Error) return err;
  return new LivegateError('the socket failed', { cause: err });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
