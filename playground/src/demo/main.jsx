// The demo app (GET /playground/demo): a small live app on livegate's example
// schema (schema/app.toml), meant to be read and copied.
//
// - Sign in / sign up: email and password (../shared/session.js).
// - Posts.jsx: the latest posts as a live query (`query @live`), kept up to date
//   by livegate; a form that creates posts.
// - Chat.jsx: a chat room: stored messages (history + live `messageChanged`), a
//   typing indicator and a presence roster from `room(name)`.
// Both run over one graphql-ws socket (live.js), opened for the signed-in user.
//
// Everything comes from the livegate that served the page; it needs no network.

import './demo.css';

import { useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';

import { signOut } from '../shared/session.js';
import { useSession } from '../shared/useSession.js';
import { Chat } from './Chat.jsx';
import { createLiveClient } from './live.js';
import { Posts } from './Posts.jsx';
import { SignIn } from './SignIn.jsx';

/** The signed-in app: posts and chat over one graphql-ws socket. */
function LiveApp({ user }) {
  const [status, setStatus] = useState('connecting');
  const [client, setClient] = useState(null);
  useEffect(() => {
    const live = createLiveClient({ onStatus: setStatus });
    setClient(live);
    return () => live.dispose();
  }, []);
  return (
    <main className="app">
      {client && <Posts user={user} client={client} status={status} />}
      {client && <Chat user={user} client={client} status={status} />}
    </main>
  );
}

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
        <LiveApp key={user.id} user={user} />
      ) : (
        <main className="signed-out">
          <SignIn />
        </main>
      )}
    </>
  );
}

createRoot(document.getElementById('demo')).render(<Demo />);
