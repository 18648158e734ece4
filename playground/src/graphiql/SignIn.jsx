// The "Sign in" side panel of the playground (a GraphiQL plugin), and the identity
// badge in the top corner that opens it.
//
// Signed out, the playground is an anonymous viewer of the default account: only
// collections with `read = "anon"` answer. Signing in (or pasting a token) makes
// every request carry the user's token, so owner-scoped collections and rooms can
// be explored.

import { Button, usePluginContext } from '@graphiql/react';
import { useState } from 'react';

import { signIn, signOut, signUp, signInWithToken } from '../shared/session.js';
import { useSession } from '../shared/useSession.js';

export const SIGN_IN_TITLE = 'Sign in';

function PersonIcon() {
  return (
    <svg height="1em" viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth="1.5" aria-hidden="true">
      <circle cx="12" cy="8" r="4" />
      <path d="M4 21c0-4.4 3.6-7 8-7s8 2.6 8 7" strokeLinecap="round" />
    </svg>
  );
}

function errorText(err) {
  return err && err.code ? `${err.message} (${err.code})` : String((err && err.message) || err);
}

function SignedOut() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [newAccount, setNewAccount] = useState('');
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  const act = (action) => async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <p className="lg-hint">
        You are <strong>anonymous</strong>: you see what anyone may see in the default account (collections
        with <code>read = "anon"</code>). Sign in to act as a user; owner-scoped collections and rooms need it.
      </p>
      <form className="lg-form" onSubmit={act(() => signIn(email, password))}>
        <label>
          Email
          <input type="email" name="email" autoComplete="username" value={email} onChange={(e) => setEmail(e.target.value)} required />
        </label>
        <label>
          Password
          <input type="password" name="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required minLength={8} />
        </label>
        <label>
          New account <span className="lg-optional">(sign-up only, optional: you become its admin)</span>
          <input type="text" name="newAccount" value={newAccount} onChange={(e) => setNewAccount(e.target.value)} placeholder="acme" />
        </label>
        <div className="lg-actions">
          <Button type="submit" disabled={busy}>Sign in</Button>
          <Button type="button" disabled={busy} onClick={(e) => { if (e.currentTarget.form.reportValidity()) act(() => signUp(email, password, newAccount.trim()))(e); }}>
            Sign up
          </Button>
        </div>
      </form>
      <form className="lg-form" onSubmit={act(() => signInWithToken(token))}>
        <label>
          Or paste an access token
          <textarea name="token" rows={3} value={token} onChange={(e) => setToken(e.target.value)} placeholder="eyJhbGciOi… (from `livegate token --email you@example.com`)" />
        </label>
        <div className="lg-actions">
          <Button type="submit" disabled={busy}>Use token</Button>
        </div>
      </form>
      {error && <p className="lg-error" role="alert">{error}</p>}
    </>
  );
}

function SignedIn({ session }) {
  const [copied, setCopied] = useState(false);
  const { user } = session;
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(session.accessToken);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  return (
    <>
      <dl className="lg-identity-details">
        <dt>Signed in as</dt>
        <dd className="lg-email">{user.email}</dd>
        <dt>Role</dt>
        <dd>{user.role}</dd>
        <dt>Account</dt>
        <dd><code>{user.accountId}</code></dd>
        {session.expiresAt && (
          <>
            <dt>Token expires</dt>
            <dd>{new Date(session.expiresAt).toLocaleString()}{session.refreshToken ? ' (refreshed automatically)' : ''}</dd>
          </>
        )}
      </dl>
      <p className="lg-hint">
        Queries and mutations send <code>Authorization: Bearer …</code>; subscriptions send{' '}
        <code>{'{ "token": … }'}</code> in <code>connection_init</code>. An <code>Authorization</code> header in
        the headers editor overrides it.
      </p>
      <div className="lg-actions">
        <Button type="button" onClick={() => signOut()}>Sign out</Button>
        <Button type="button" onClick={copy}>{copied ? 'Copied' : 'Copy token'}</Button>
      </div>
    </>
  );
}

function SignInPanel() {
  const session = useSession();
  return (
    <section className="lg-signin" aria-label="Sign in">
      <div className="graphiql-doc-explorer-title">{session ? 'Signed in' : 'Sign in'}</div>
      {session ? <SignedIn session={session} /> : <SignedOut />}
    </section>
  );
}

/** The GraphiQL plugin: a person icon in the sidebar opening the panel. */
export const signInPlugin = { title: SIGN_IN_TITLE, icon: PersonIcon, content: SignInPanel };

/** The top-corner badge: who the playground acts as; a click opens the panel. */
export function IdentityBadge() {
  const session = useSession();
  const plugins = usePluginContext();
  const open = () => {
    if (plugins && plugins.visiblePlugin && plugins.visiblePlugin.title === SIGN_IN_TITLE) return;
    // GraphiQL opens the side pane (and sizes it) in its sidebar button's handler,
    // not in setVisiblePlugin: press that button.
    const button = document.querySelector(`.graphiql-sidebar button[aria-label="Show ${SIGN_IN_TITLE}"]`);
    if (button) button.click();
    else if (plugins) plugins.setVisiblePlugin(SIGN_IN_TITLE);
  };
  return (
    <button
      type="button"
      className={`lg-badge${session ? ' lg-badge-in' : ''}`}
      title={session ? 'Requests carry this user’s token' : 'Requests are anonymous'}
      onClick={open}
    >
      <PersonIcon /> {session ? session.user.email : 'anonymous: sign in'}
    </button>
  );
}
