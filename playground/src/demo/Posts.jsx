// Posts: the list is plain GraphQL over HTTP, kept fresh by the `/realtime`
// EventSource feed. The feed carries hints ("posts changed"), never rows: on each
// one the list is fetched again. A new post is not added to the list by hand
// either: its own change event brings it, as it does for everyone else.

import { useEffect, useState } from 'react';

import { realtimeUrl } from '../shared/endpoints.js';
import { freshAccessToken, request } from '../shared/session.js';
import { describeError } from './live.js';

const POSTS = `query DemoPosts {
  posts(orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 20) {
    id title body createdAt author { email }
  }
}`;

const CREATE_POST = `mutation DemoCreatePost($input: PostCreateInput!) {
  createPost(input: $input) { id }
}`;

/** How long to wait before reopening a feed the server refused (e.g. an expired token). */
const REOPEN_MS = 2000;

/** The latest posts, re-fetched whenever the feed says posts changed. */
function useLivePosts() {
  const [posts, setPosts] = useState(null);
  const [live, setLive] = useState(false);
  const [error, setError] = useState(null);

  useEffect(() => {
    let stopped = false;
    let feed = null;
    let reopen = null;

    // One fetch at a time: changes that arrive meanwhile cause one more fetch.
    let fetching = false;
    let again = false;
    async function refetch() {
      if (fetching) {
        again = true;
        return;
      }
      fetching = true;
      try {
        do {
          again = false;
          const data = await request(POSTS, {}, await freshAccessToken());
          if (!stopped) {
            setPosts(data.posts);
            setError(null);
          }
        } while (again && !stopped);
      } catch (err) {
        if (!stopped) setError(describeError(err));
      } finally {
        fetching = false;
      }
    }

    async function listen() {
      const token = await freshAccessToken();
      if (stopped) return;
      // Browsers cannot set headers on an EventSource: the token goes in the URL.
      const url = new URL(realtimeUrl());
      url.searchParams.set('collections', 'posts');
      if (token) url.searchParams.set('access_token', token);
      feed = new EventSource(url);
      // Fetch once the feed is open, so no change between the fetch and the feed is
      // missed; and again after a reconnect.
      feed.addEventListener('open', () => {
        setLive(true);
        refetch();
      });
      feed.addEventListener('change', () => refetch()); // data: {"collection":"posts","action":"create"}
      feed.addEventListener('error', () => {
        setLive(false);
        // After a dropped connection the EventSource reconnects by itself (sending
        // Last-Event-ID, so missed changes are replayed). It gives up only when
        // refused (401 when the token expired): then reopen it with a fresh token.
        if (feed.readyState === EventSource.CLOSED) {
          feed.close();
          reopen = setTimeout(listen, REOPEN_MS);
        }
      });
    }

    listen();
    return () => {
      stopped = true;
      clearTimeout(reopen);
      if (feed) feed.close();
    };
  }, []);

  return { posts, live, error };
}

function NewPost({ user }) {
  const [title, setTitle] = useState('');
  const [body, setBody] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const input = { title, body: body || null, published: true, authorId: user.id };
      await request(CREATE_POST, { input }, await freshAccessToken());
      setTitle('');
      setBody('');
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="new-post" aria-label="New post" onSubmit={submit}>
      <label>
        Title
        <input value={title} onChange={(e) => setTitle(e.target.value)} maxLength={200} required />
      </label>
      <label>
        Body
        <textarea value={body} onChange={(e) => setBody(e.target.value)} rows={3} />
      </label>
      <div className="actions">
        <button type="submit" disabled={busy}>Publish</button>
      </div>
      {error && <p className="error" role="alert">{error}</p>}
    </form>
  );
}

export function Posts({ user }) {
  const { posts, live, error } = useLivePosts();
  return (
    <section className="card posts" aria-labelledby="posts-title">
      <h2 id="posts-title">
        Posts <span className={live ? 'badge live' : 'badge'}>{live ? 'live (SSE)' : 'connecting…'}</span>
      </h2>
      <NewPost user={user} />
      {error && <p className="error" role="alert">{error}</p>}
      {posts && posts.length === 0 && <p className="hint">No posts yet: write the first one.</p>}
      <ul className="post-list" aria-label="Latest posts">
        {(posts || []).map((post) => (
          <li key={post.id}>
            <h3>{post.title}</h3>
            {post.body && <p>{post.body}</p>}
            <p className="meta">
              {post.author ? post.author.email : 'someone'} · <time dateTime={post.createdAt}>{new Date(post.createdAt).toLocaleString()}</time>
            </p>
          </li>
        ))}
      </ul>
    </section>
  );
}
