// The chat room, over the demo's graphql-ws socket (shared with the posts). The
// pattern (README, "Rooms and presence"):
//
// - messages are STORED: sending is `createMessage` (the `messages` collection);
//   history is the `messages` query; live delivery is the `messageChanged`
//   subscription (CREATE only). A message is never relayed through the room, so
//   what you see live is exactly what a reload shows.
// - the ROOM (`room(name)`) is for what is not worth storing: the presence roster
//   (its `presence` events: sync, then join and leave) and the typing indicator
//   (`sendToRoom(kind: "typing")`, sent over the same socket so that it comes
//   from this page's member).

import { useEffect, useReducer, useRef, useState } from 'react';

import { freshAccessToken, request } from '../shared/session.js';
import { describeError, execute, subscribe } from './live.js';

const ROOM = 'demo';
/** Send at most one typing signal per this long while typing... */
const TYPING_EVERY_MS = 1500;
/** ...and show "is typing" for this long after the last one. */
const TYPING_SHOWN_MS = 3000;

const HISTORY = `query DemoChatHistory($room: String!) {
  messages(where: { room: { eq: $room } }, orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 50) {
    id ownerId text createdAt
  }
}`;
const NEW_MESSAGES = `subscription DemoChatMessages($room: String!) {
  messageChanged(where: { room: { eq: $room } }, actions: [CREATE]) {
    record { id ownerId text createdAt }
  }
}`;
const ROOM_EVENTS = `subscription DemoChatRoom($room: String!) {
  room(name: $room) { kind payload from { peerId userId email } }
}`;
const SEND = `mutation DemoChatSend($room: String!, $text: String!) {
  createMessage(input: { room: $room, text: $text }) { id }
}`;
const TYPING = `mutation DemoChatTyping($room: String!) {
  sendToRoom(room: $room, kind: "typing")
}`;

const initial = {
  messages: [], // sorted by id (UUID v7: creation order)
  members: {}, // peerId -> { peerId, userId, email }: the roster
  me: null, // this page's peerId (the member the sync was sent to)
  emails: {}, // userId -> email, remembered from the room to name message authors
  typing: {}, // peerId -> { email, until }
};

function remember(emails, member) {
  return member.userId && member.email ? { ...emails, [member.userId]: member.email } : emails;
}

function reducer(state, action) {
  switch (action.type) {
    case 'messages': {
      // History and live events overlap: merge by id.
      const byId = new Map(state.messages.map((m) => [m.id, m]));
      for (const m of action.messages) byId.set(m.id, m);
      const messages = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      // Whoever just sent a message has stopped typing.
      const senders = new Set(action.messages.map((m) => m.ownerId));
      const typing = Object.fromEntries(Object.entries(state.typing).filter(([, t]) => !senders.has(t.userId)));
      return { ...state, messages, typing };
    }
    case 'room': {
      const { kind, payload, from } = action.event;
      const emails = remember(state.emails, from);
      if (kind === 'presence' && payload.event === 'sync') {
        const members = Object.fromEntries(payload.members.map((m) => [m.peerId, m]));
        return { ...state, members, me: from.peerId, emails: payload.members.reduce(remember, emails), typing: {} };
      }
      if (kind === 'presence' && payload.event === 'join') {
        return { ...state, emails, members: { ...state.members, [payload.member.peerId]: payload.member } };
      }
      if (kind === 'presence' && payload.event === 'leave') {
        const { [payload.member.peerId]: _left, ...members } = state.members;
        const { [payload.member.peerId]: _typed, ...typing } = state.typing;
        return { ...state, emails, members, typing };
      }
      if (kind === 'typing' && from.peerId !== state.me) {
        const until = Date.now() + TYPING_SHOWN_MS;
        return { ...state, emails, typing: { ...state.typing, [from.peerId]: { userId: from.userId, email: from.email, until } } };
      }
      return { ...state, emails };
    }
    case 'expire': {
      const now = Date.now();
      return { ...state, typing: Object.fromEntries(Object.entries(state.typing).filter(([, t]) => t.until > now)) };
    }
    default:
      return state;
  }
}

/** The roster: one line per user (a user may be in the room from several tabs). */
function Roster({ members, user }) {
  const users = new Map();
  for (const m of Object.values(members)) users.set(m.userId || m.peerId, m.email || 'anonymous');
  const sorted = [...users.entries()].sort((a, b) => a[1].localeCompare(b[1]));
  return (
    <ul className="roster" aria-label="In the room">
      {sorted.map(([id, email]) => (
        <li key={id}>
          <span className="dot" aria-hidden="true" /> {email}
          {id === user.id && <span className="you"> (you)</span>}
        </li>
      ))}
    </ul>
  );
}

export function Chat({ user, client: live, status }) {
  const [state, dispatch] = useReducer(reducer, initial);
  const [error, setError] = useState(null);
  const [text, setText] = useState('');
  const lastTyping = useRef(0);
  const list = useRef(null);

  useEffect(() => {
    const failed = (err) => setError(describeError(err));

    async function loadHistory() {
      try {
        const data = await request(HISTORY, { room: ROOM }, await freshAccessToken());
        dispatch({ type: 'messages', messages: data.messages });
      } catch (err) {
        failed(err);
      }
    }

    // Messages first, then the room: livegate starts a socket's operations in order,
    // so when the room's sync arrives the message subscription is already live, and
    // the history loaded then leaves no gap (a message in both is merged by id).
    // A reconnect joins again, so it gets a new sync and reloads the history.
    const stopMessages = subscribe(live, NEW_MESSAGES, { room: ROOM }, (data) => {
      dispatch({ type: 'messages', messages: [data.messageChanged.record] });
    }, failed);
    const stopRoom = subscribe(live, ROOM_EVENTS, { room: ROOM }, (data) => {
      dispatch({ type: 'room', event: data.room });
      if (data.room.kind === 'presence' && data.room.payload.event === 'sync') {
        setError(null);
        loadHistory();
      }
    }, failed);

    return () => {
      stopMessages();
      stopRoom();
    };
  }, [live]);

  // Drop "is typing" once it is TYPING_SHOWN_MS old.
  useEffect(() => {
    const times = Object.values(state.typing).map((t) => t.until);
    if (times.length === 0) return undefined;
    const timer = setTimeout(() => dispatch({ type: 'expire' }), Math.min(...times) - Date.now() + 10);
    return () => clearTimeout(timer);
  }, [state.typing]);

  // Keep the newest message in view.
  useEffect(() => {
    if (list.current) list.current.scrollTop = list.current.scrollHeight;
  }, [state.messages.length]);

  function typed(value) {
    setText(value);
    const now = Date.now();
    if (value && now - lastTyping.current > TYPING_EVERY_MS) {
      lastTyping.current = now;
      execute(live, TYPING, { room: ROOM }).catch(() => {}); // best effort (may be RATE_LIMITED)
    }
  }

  async function send(event) {
    event.preventDefault();
    const message = text.trim();
    if (!message) return;
    try {
      await request(SEND, { room: ROOM, text: message }, await freshAccessToken());
      setText('');
      lastTyping.current = 0;
    } catch (err) {
      setError(describeError(err));
    }
  }

  const nameOf = (userId) => (userId === user.id ? 'you' : state.emails[userId] || 'someone who left');
  const typing = [...new Set(Object.values(state.typing).map((t) => t.email || 'someone'))];

  return (
    <section className="card chat" aria-labelledby="chat-title">
      <h2 id="chat-title">
        Chat: <code>{ROOM}</code>{' '}
        <span className={status === 'connected' ? 'badge live' : 'badge'}>{status === 'connected' ? 'live (graphql-ws)' : 'connecting…'}</span>
      </h2>
      <div className="chat-body">
        <div className="chat-main">
          <ol className="messages" aria-label="Messages" ref={list}>
            {state.messages.map((m) => (
              <li key={m.id} className={m.ownerId === user.id ? 'mine' : undefined}>
                <span className="who">{nameOf(m.ownerId)}</span>
                <span className="text">{m.text}</span>
                <time dateTime={m.createdAt}>{new Date(m.createdAt).toLocaleTimeString()}</time>
              </li>
            ))}
          </ol>
          <p className="typing" role="status">
            {typing.length > 0 ? `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…` : '\u00a0'}
          </p>
          <form className="composer" aria-label="Send a message" onSubmit={send}>
            <input aria-label="Message" placeholder="Say something" value={text} onChange={(e) => typed(e.target.value)} maxLength={4000} />
            <button type="submit" disabled={!text.trim()}>Send</button>
          </form>
          {error && <p className="error" role="alert">{error}</p>}
        </div>
        <aside aria-labelledby="roster-title">
          <h3 id="roster-title">In the room</h3>
          <Roster members={state.members} user={user} />
        </aside>
      </div>
    </section>
  );
}
