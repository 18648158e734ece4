// The signed-in user's session: livegate's access token (valid for an hour) and
// the refresh token that gets a new one. Kept in localStorage so a reload stays
// signed in.

export type Session = {
  accessToken: string
  refreshToken: string
  expiresAt: string
  user: { id: string; email: string }
}

const KEY = 'livegate-session'
let session: Session | null = JSON.parse(localStorage.getItem(KEY) ?? 'null')
const listeners = new Set<() => void>()

export function currentSession(): Session | null {
  return session
}

export function setSession(next: Session | null): void {
  session = next
  if (next) localStorage.setItem(KEY, JSON.stringify(next))
  else localStorage.removeItem(KEY)
  listeners.forEach((listener) => listener())
}

export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

const REFRESH = `mutation Refresh($refreshToken: String!) {
  refreshSession(refreshToken: $refreshToken) { accessToken refreshToken expiresAt user { id email } }
}`

// An access token valid for at least another minute, refreshed first if needed;
// null when signed out. Used for HTTP requests and each WebSocket connection.
// Concurrent callers share one refresh: a refresh token works once, and a second
// use of it signs the session out everywhere.
let refreshing: Promise<string | null> | null = null

export async function accessToken(): Promise<string | null> {
  // Another tab may have refreshed (or signed out) meanwhile.
  session = JSON.parse(localStorage.getItem(KEY) ?? 'null')
  if (!session) return null
  if (Date.parse(session.expiresAt) - Date.now() > 60_000) return session.accessToken
  refreshing ??= refresh(session.refreshToken).finally(() => (refreshing = null))
  return refreshing
}

async function refresh(refreshToken: string): Promise<string | null> {
  const response = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: REFRESH, variables: { refreshToken } }),
  })
  const { data, errors } = await response.json()
  if (data?.refreshSession) setSession(data.refreshSession)
  // Signed out only when the server refuses the session, not on a network error.
  else if (errors?.[0]?.extensions?.code === 'UNAUTHENTICATED') setSession(null)
  else throw new Error('cannot refresh the session now')
  return session?.accessToken ?? null
}
