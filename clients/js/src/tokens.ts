// Access tokens: where they come from, when they expire, and renewing them
// shortly before they do, so sockets and streams reconnect with a fresh one
// before the server closes them.

/**
 * A token, or a function that returns the current one (called on every
 * connection and request: a token your app stores after a sign-in is used from
 * then on).
 */
export type TokenSource = string | (() => string | null | undefined | Promise<string | null | undefined>);

/** The `exp` (and `iat`) of a JWT, in milliseconds; undefined if `token` is not a JWT with `exp`. */
export function jwtTimes(token: string): { exp: number; iat: number | undefined } | undefined {
  const part = token.split('.')[1];
  if (part === undefined || token.split('.').length !== 3) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (claims === null || typeof claims !== 'object') return undefined;
    const { exp, iat } = claims as { exp?: unknown; iat?: unknown };
    if (typeof exp !== 'number' || !Number.isFinite(exp)) return undefined;
    return { exp: exp * 1000, iat: typeof iat === 'number' && Number.isFinite(iat) ? iat * 1000 : undefined };
  } catch {
    return undefined;
  }
}

/** setTimeout's longest delay (about 24.8 days). */
const MAX_DELAY = 2 ** 31 - 1;

export interface TokenOptions {
  token: TokenSource | undefined;
  refresh: (() => Promise<string>) | undefined;
  /** How long before `exp` to renew; default: a tenth of the lifetime, between 1 s and 30 s. */
  refreshMarginMs: number | undefined;
  /** Where a failed background renewal is reported. */
  onError: (error: unknown) => void;
}

/** The token a client uses, renewed before it expires while something realtime is open. */
export class Tokens {
  private current: string | undefined;
  private loaded = false;
  /** What the token function returned last: a new value there replaces a renewed token. */
  private fromSource: string | undefined;
  /** When the current token was obtained (its lifetime counts from `iat`, else from this). */
  private obtainedAt = 0;
  private inflight: Promise<string | undefined> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private holders = 0;
  private readonly listeners = new Set<(token: string | undefined) => void>();

  constructor(private readonly options: TokenOptions) {}

  /** Whether a new token can be had (a `refresh` function, or a token function to call again). */
  get renewable(): boolean {
    return this.options.refresh !== undefined || typeof this.options.token === 'function';
  }

  /** The token to use now: the current one, renewed first if it is about to expire. */
  async get(): Promise<string | undefined> {
    if (this.inflight) return this.inflight;
    const source = this.options.token;
    if (!this.loaded || typeof source === 'function') {
      const read = (typeof source === 'function' ? await source() : source) ?? undefined;
      if (this.inflight) return this.inflight;
      // The app's token changed (a sign-in, a sign-out, its own renewal): use
      // it. Unchanged, a token `refresh()` gave since is the newer one.
      if (!this.loaded || read !== this.fromSource) {
        this.fromSource = read;
        return this.run(async () => read);
      }
    }
    if (this.current !== undefined && this.renewable && this.expiresSoon(this.current)) return this.renew();
    return this.current;
  }

  /**
   * Gets a new token (`refresh()`, else the token function again), whatever the
   * current one's expiry; concurrent calls share one renewal. Listeners hear of
   * the new token when it differs from the old.
   */
  renew(): Promise<string | undefined> {
    if (this.inflight) return this.inflight;
    const { refresh, token } = this.options;
    return this.run(async () => {
      if (refresh) return refresh();
      if (typeof token === 'function') {
        const read = (await token()) ?? undefined;
        this.fromSource = read;
        return read;
      }
      return this.current;
    });
  }

  /** Calls `listener` with each renewed token; returns the function that stops it. */
  onRenew(listener: (token: string | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Keeps the token renewed ahead of expiry while held (a socket or stream is
   * open); returns the release function.
   */
  hold(): () => void {
    this.holders += 1;
    if (this.holders === 1) this.schedule();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holders -= 1;
      if (this.holders === 0) this.clearTimer();
    };
  }

  /** Stops the renewal timer for good. */
  dispose(): void {
    this.holders = 0;
    this.clearTimer();
    this.listeners.clear();
  }

  private run(get: () => Promise<string | undefined>): Promise<string | undefined> {
    const first = !this.loaded;
    const previous = this.current;
    const p = (async () => {
      const token = await get();
      this.current = token;
      this.loaded = true;
      this.obtainedAt = Date.now();
      this.schedule();
      if (!first && token !== previous) {
        for (const listener of [...this.listeners]) listener(token);
      }
      return token;
    })();
    this.inflight = p;
    const clear = () => {
      if (this.inflight === p) this.inflight = undefined;
    };
    p.then(clear, clear);
    return p;
  }

  /** How long before expiry `token` is renewed, in ms. */
  private margin(times: { exp: number; iat: number | undefined }): number {
    if (this.options.refreshMarginMs !== undefined) return this.options.refreshMarginMs;
    const lifetime = Math.max(0, times.exp - (times.iat ?? this.obtainedAt));
    return Math.min(30_000, Math.max(1_000, lifetime / 10), lifetime / 2);
  }

  private expiresSoon(token: string): boolean {
    const times = jwtTimes(token);
    return times !== undefined && times.exp - this.margin(times) <= Date.now();
  }

  private schedule(): void {
    this.clearTimer();
    if (this.holders === 0 || !this.renewable || this.current === undefined) return;
    const times = jwtTimes(this.current);
    if (times === undefined) return;
    const delay = Math.min(MAX_DELAY, Math.max(0, times.exp - this.margin(times) - Date.now()));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.renew().catch((err: unknown) => {
        this.options.onError(err);
        // Try again a little later (a socket closed at expiry renews on its own too).
        if (this.timer === undefined && this.holders > 0) {
          this.timer = setTimeout(() => this.schedule(), 5_000);
          unref(this.timer);
        }
      });
    }, delay);
    unref(this.timer);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** Lets Node exit while only a timer is pending (no-op in browsers). */
export function unref(timer: unknown): void {
  if (timer && typeof timer === 'object' && 'unref' in timer && typeof timer.unref === 'function') timer.unref();
}
