// Sign in or sign up with email and password. The session (shared with the
// GraphiQL page, kept in localStorage) is managed by ../shared/session.js.

import { useState } from 'react';

import { signIn, signUp } from '../shared/session.js';
import { describeError } from './live.js';

export function SignIn() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  async function run(action) {
    setBusy(true);
    setError(null);
    try {
      await action(email, password); // on success the session changes and the app re-renders
    } catch (err) {
      setError(describeError(err));
      setBusy(false);
    }
  }

  return (
    <form
      className="card sign-in"
      aria-label="Sign in"
      onSubmit={(e) => {
        e.preventDefault();
        run(signIn);
      }}
    >
      <h2>Sign in</h2>
      <p className="hint">New here? Type an email and a password (8 characters or more) and press Sign up.</p>
      <label>
        Email
        <input type="email" autoComplete="username" value={email} onChange={(e) => setEmail(e.target.value)} required />
      </label>
      <label>
        Password
        <input type="password" autoComplete="current-password" minLength={8} value={password} onChange={(e) => setPassword(e.target.value)} required />
      </label>
      <div className="actions">
        <button type="submit" disabled={busy}>Sign in</button>
        <button
          type="button"
          disabled={busy}
          onClick={(e) => {
            if (e.currentTarget.form.reportValidity()) run(signUp);
          }}
        >
          Sign up
        </button>
      </div>
      {error && <p className="error" role="alert">{error}</p>}
    </form>
  );
}
