// JWT checks shared by both peers. The peers pass in their own `jsonwebtoken` module so
// that this file imports nothing outside Node itself (each peer has its own node_modules).

export const DEFAULT_JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123';

/** Returns `verify(token) -> { id } | null`: HS256 only, `sub` is the user id. */
export function makeVerifier(jwt, secret = process.env.JWT_SECRET || DEFAULT_JWT_SECRET) {
  return function verify(token) {
    if (typeof token !== 'string' || token === '') return null;
    try {
      const claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
      if (typeof claims !== 'object' || typeof claims.sub !== 'string' || claims.sub === '') return null;
      return { id: claims.sub };
    } catch {
      return null;
    }
  };
}

/** The token of an `Authorization: Bearer <jwt>` header, or null. */
export function bearerToken(header) {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m ? m[1] : null;
}

/** The token of a graphql-ws `connection_init` payload: `{ token }` (or `{ Authorization: "Bearer ..." }`). */
export function initToken(payload) {
  if (!payload || typeof payload !== 'object') return null;
  if (typeof payload.token === 'string') return payload.token;
  return bearerToken(payload.Authorization ?? payload.authorization);
}

/** The body of a 401 answer, shaped like livegate's (`extensions.code` UNAUTHENTICATED). */
export const UNAUTHENTICATED_BODY = JSON.stringify({
  errors: [{ message: 'Unauthenticated: a valid Bearer token is required', extensions: { code: 'UNAUTHENTICATED' } }],
});
