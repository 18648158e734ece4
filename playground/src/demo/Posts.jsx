// Posts: the list is a live query (`query @live`) over the demo's graphql-ws
// socket. livegate sends the whole list first, then a new one whenever a
// committed change alters it (it re-runs the query on each change to `posts`,
// as this user, and sends only a result that differs). A new post is not added
// to the list by hand either: the live query brings it, as it does for everyone.

import { useEffect, useState } from 'react';

import { freshAccessToken, request } from '../shared/session.js';
import { describeError } from './live.js';

const POSTS = `query DemoPosts @live {
  posts(orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 20) {
    id title body createdAt author { email }
  }
}`;

const CREATE_POST = `mutation DemoCreatePost($input: PostCreateInput!) {
  createPost(input: $input) { id }
}`;

/** How long to wait before asking again for a live query the server ended. */
const RESUBSCRIBE_MS = 2000;

/**
 * The latest posts, kept up to date by livegate over `client`, and whether
 * they are live. If the server ends the live query (it failed, or was stopped),
 * it is asked for again a moment later; a reconnecting socket re-subscribes by
 * itself (graphql-ws), and the first result after it is the whole list.
 */
function useLivePosts(client) {
  const [posts, setPosts] = useState(null);
  const [ended, setEnded] = useState(false);
  const [error, setError] = useState(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let again = null;
    const end = () => {
      setEnded(true);
      again = setTimeout(() => setAttempt((n) => n + 1), RESUBSCRIBE_MS);
    };
    setEnded(false);
    const stop = client.subscribe(
      { query: POSTS },
      {
        next: (result) => {
          if (result.errors) {
            setError(describeError(result.errors));
          } else {
            setPosts(result.data.posts);
            setError(null);
          }
        },
        error: (err) => {
          setError(describeError(err));
          end();
        },
        complete: end,
      },
    );
    return () => {
      clearTimeout(again);
      stop();
    };
  }, [client, attempt]);

  return { posts, ended, error };
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

export function Posts({ user, client, status }) {
  const { posts, ended, error } = useLivePosts(client);
  const live = status === 'connected' && posts !== null && !ended;
  return (
    <section className="card posts" aria-labelledby="posts-title">
      <h2 id="posts-title">
        Posts <span className={live ? 'badge live' : 'badge'}>{live ? 'live query' : 'connecting…'}</span>
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
