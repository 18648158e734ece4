import { gql, type TypedDocumentNode } from '@apollo/client'
import { useMutation, useQuery } from '@apollo/client/react'
import { useEffect, useState, useSyncExternalStore } from 'react'
import { currentSession, onSessionChange, setSession, type Session } from './session'

type Post = { id: string; title: string; createdAt: string; author: { email: string } | null }

const POSTS: TypedDocumentNode<{ posts: Post[]; postsCount: number }> = gql`
  query Posts {
    posts(orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 20) {
      id
      title
      createdAt
      author { email }
    }
    postsCount
  }
`

type PostChange = { action: 'CREATE' | 'UPDATE' | 'DELETE'; id: string; cursor: string; record: Post | null }

const POST_CHANGED: TypedDocumentNode<{ postChanged: PostChange }> = gql`
  subscription PostChanged {
    postChanged {
      action
      id
      cursor
      record { id title createdAt author { email } }
    }
  }
`

const CREATE_POST: TypedDocumentNode<{ createPost: Post }, { title: string; author: string }> = gql`
  mutation CreatePost($title: String!, $author: ID!) {
    createPost(input: { title: $title, authorId: $author }) { id title createdAt author { email } }
  }
`

const SIGN_UP: TypedDocumentNode<{ signUp: Session }, { email: string; password: string }> = gql`
  mutation SignUp($email: String!, $password: String!) {
    signUp(email: $email, password: $password) { accessToken refreshToken expiresAt user { id email } }
  }
`

const SIGN_IN: TypedDocumentNode<{ signIn: Session }, { email: string; password: string }> = gql`
  mutation SignIn($email: String!, $password: String!) {
    signIn(email: $email, password: $password) { accessToken refreshToken expiresAt user { id email } }
  }
`

const SIGN_OUT: TypedDocumentNode<{ signOut: boolean }, { refreshToken: string }> = gql`
  mutation SignOut($refreshToken: String!) { signOut(refreshToken: $refreshToken) }
`

function useSession() {
  return useSyncExternalStore(onSessionChange, currentSession)
}

export default function App() {
  const session = useSession()
  const [signOut] = useMutation(SIGN_OUT)
  return (
    <main style={{ maxWidth: 640, margin: '2rem auto', fontFamily: 'system-ui, sans-serif' }}>
      <h1>Posts</h1>
      {session ? (
        <>
          <p>
            Signed in as {session.user.email}{' '}
            <button onClick={async () => {
              // Ends the session on the server too: its refresh token stops working.
              await signOut({ variables: { refreshToken: session.refreshToken } }).catch(() => {})
              setSession(null)
            }}>Sign out</button>
          </p>
          <NewPost />
        </>
      ) : (
        <SignIn />
      )}
      <PostList />
    </main>
  )
}

function SignIn() {
  const [email, setEmail] = useState('')
  const [password, setPassword] = useState('')
  const [signUp, signingUp] = useMutation(SIGN_UP)
  const [signIn, signingIn] = useMutation(SIGN_IN)
  const error = signingUp.error ?? signingIn.error
  const variables = { email, password }
  return (
    <form onSubmit={async (e) => {
      e.preventDefault()
      const { data } = await signIn({ variables }).catch(() => ({ data: undefined }))
      if (data) setSession(data.signIn)
    }}>
      <input placeholder="email" value={email} onChange={(e) => setEmail(e.target.value)} />
      <input placeholder="password (8+ characters)" type="password" value={password}
        onChange={(e) => setPassword(e.target.value)} />
      <button type="submit">Sign in</button>
      <button type="button" onClick={async () => {
        const { data } = await signUp({ variables }).catch(() => ({ data: undefined }))
        if (data) setSession(data.signUp)
      }}>Sign up</button>
      {error && <p role="alert">{error.message}</p>}
    </form>
  )
}

function NewPost() {
  const [title, setTitle] = useState('')
  const [createPost, { loading, error }] = useMutation(CREATE_POST)
  const author = useSession()?.user.id ?? ''
  return (
    <form onSubmit={async (e) => {
      e.preventDefault()
      await createPost({ variables: { title, author } }).catch(() => {})
      setTitle('')
    }}>
      <input placeholder="A new post's title" value={title} onChange={(e) => setTitle(e.target.value)} />
      <button type="submit" disabled={loading || !title}>Post</button>
      {error && <p role="alert">{error.message}</p>}
    </form>
  )
}

function PostList() {
  const { data, loading, error, subscribeToMore } = useQuery(POSTS)

  // Keep the list live: every committed create, update or delete of a post
  // arrives over the WebSocket and is merged into the query's cached result.
  useEffect(
    () =>
      subscribeToMore({
        document: POST_CHANGED,
        updateQuery: (_, { complete, previousData, subscriptionData }) => {
          if (!complete) return
          const change = subscriptionData.data.postChanged
          if (change.action === 'UPDATE') return // the cache updates the post by its id
          const others = previousData.posts.filter((post) => post.id !== change.id)
          if (change.action === 'DELETE' || !change.record) {
            return { posts: others, postsCount: previousData.postsCount - 1 }
          }
          return { posts: [change.record, ...others].slice(0, 20), postsCount: previousData.postsCount + 1 }
        },
      }),
    [subscribeToMore],
  )

  if (loading) return <p>Loading…</p>
  if (error) return <p role="alert">{error.message}</p>
  return (
    <>
      <p>{data?.postsCount ?? 0} posts</p>
      <ul>
        {data?.posts.map((post) => (
          <li key={post.id}>
            <strong>{post.title}</strong> by {post.author?.email ?? 'someone'},{' '}
            {new Date(post.createdAt).toLocaleTimeString()}
          </li>
        ))}
      </ul>
    </>
  )
}
