// The demo app (GET /playground/demo): a small live app on livegate's example
// schema (schema/app.toml), meant to be read and copied.
//
// - Sign in / sign up: email and password (../shared/session.js).
// - Posts.jsx: a list over HTTP, re-fetched when the `/realtime` EventSource feed
//   says posts changed; a form that creates posts.
// - Chat.jsx: a chat room over graphql-ws: stored messages (history + live
//   `messageChanged`), a typing indicator and a presence roster from `room(name)`.
//
// Everything comes from the livegate that served the page; it needs no network.

import './demo.css';

import { createRoot } from 'react-dom/client';

import { signOut } from '../shared/session.js';
import { useSession } from '../shared/useSession.js';
import { Chat } from './Chat.jsx';
import { Posts } from './Posts.jsx';
import { SignIn } from './SignIn.jsx';

function Demo() {
  const session = useSession();
  const user = session && session.user;
  return (
    <>
      <header className="top">
        <h1>livegate demo</h1>
        <nav>
          {user && (
            <>
              <span className="who-am-i" aria-label="Signed in as">{user.email}</span>
              <button type="button" onClick={() => signOut()}>Sign out</button>
            </>
          )}
          <a href="../playground">GraphiQL playground</a>
        </nav>
      </header>
      {user ? (
        // Keyed by user: signing in as someone else starts the live parts afresh.
        <main className="app" key={user.id}>
          <Posts user={user} />
          <Chat user={user} />
        </main>
      ) : (
        <main className="signed-out">
          <SignIn />
        </main>
      )}
    </>
  );
}

createRoot(document.getElementById('demo')).render(<Demo />);
