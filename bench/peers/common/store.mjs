// The SQLite store shared by both peers: the same tables, pragmas and statements, so the
// two peers do the same database work per request. The peer passes in its own
// `better-sqlite3` constructor (each peer has its own node_modules).
//
// Like livegate on SQLite: WAL, synchronous=NORMAL, a busy timeout, foreign keys on, and
// an event log row written in the same transaction as the change it records (its
// autoincrement id is the change's cursor).

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** livegate's default cap on `limit` (`--max-limit`). */
export const MAX_LIMIT = 1000;
/** `title` has `max_length = 200` in livegate's example app. */
export const TITLE_MAX_LENGTH = 200;

/** A bad argument value; each peer turns it into its own GraphQL error with this code. */
export class InputError extends Error {
  constructor(message) {
    super(message);
    this.code = 'BAD_USER_INPUT';
  }
}

const SCHEMA_SQL = `
CREATE TABLE posts (
  id         TEXT PRIMARY KEY,
  owner_id   TEXT,
  title      TEXT NOT NULL,
  body       TEXT,
  published  INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL
);
CREATE INDEX posts_created_at ON posts (created_at);
CREATE TABLE events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  collection TEXT NOT NULL,
  action     TEXT NOT NULL,
  row_id     TEXT NOT NULL,
  owner_id   TEXT,
  at         TEXT NOT NULL,
  record     TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
`;

function toPost(row) {
  return row
    ? {
        id: row.id,
        ownerId: row.owner_id,
        title: row.title,
        body: row.body,
        published: row.published !== 0,
        createdAt: row.created_at,
      }
    : null;
}

/**
 * Opens a fresh database: at `dbPath` (any file already there is deleted first), or in a
 * new temporary folder that `close()` removes.
 *
 * `events: false` (the mercurius peer's bare mode) writes no event row: createPost is the
 * post's INSERT alone, and its change has no cursor. Tables, pragmas and the post's
 * statement are the same either way.
 */
export function openStore(Database, dbPath = process.env.DB_PATH, { events = true } = {}) {
  let tempDir = null;
  if (dbPath) {
    for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(dbPath + suffix, { force: true });
  } else {
    tempDir = mkdtempSync(join(tmpdir(), 'livegate-peer-'));
    dbPath = join(tempDir, 'peer.db');
  }

  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 10000');
  db.pragma('foreign_keys = ON');
  db.exec(SCHEMA_SQL);

  const selectPosts = db.prepare('SELECT * FROM posts ORDER BY created_at DESC, rowid DESC LIMIT ?');
  const selectPost = db.prepare('SELECT * FROM posts WHERE id = ?');
  const countPosts = db.prepare('SELECT count(*) AS n FROM posts');
  const insertPost = db.prepare(
    'INSERT INTO posts (id, owner_id, title, body, published, created_at) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const insertEvent = db.prepare(
    'INSERT INTO events (collection, action, row_id, owner_id, at, record) VALUES (?, ?, ?, ?, ?, ?)',
  );

  const createTx = db.transaction((post) => {
    insertPost.run(post.id, post.ownerId, post.title, post.body, post.published ? 1 : 0, post.createdAt);
    const { lastInsertRowid } = insertEvent.run(
      'posts',
      'create',
      post.id,
      post.ownerId,
      post.createdAt,
      JSON.stringify(post),
    );
    return String(lastInsertRowid);
  });
  const insertPostOnly = (post) => {
    insertPost.run(post.id, post.ownerId, post.title, post.body, post.published ? 1 : 0, post.createdAt);
    return null;
  };
  const write = events ? createTx : insertPostOnly;

  let closed = false;
  return {
    path: dbPath,

    listPosts(limit = 50) {
      const n = Math.max(0, Math.min(Number.isInteger(limit) ? limit : 50, MAX_LIMIT));
      return selectPosts.all(n).map(toPost);
    },

    getPost(id) {
      return toPost(selectPost.get(String(id)));
    },

    countPosts() {
      return countPosts.get().n;
    },

    /**
     * Inserts the post and its event in one transaction; returns the PostChange to
     * publish (only after the commit, so a failed write publishes nothing). Without
     * events: the post's INSERT alone, and a change with `cursor: null`.
     */
    createPost(ownerId, input) {
      const title = input?.title;
      if (typeof title !== 'string') throw new InputError('title is required');
      if ([...title].length > TITLE_MAX_LENGTH) {
        throw new InputError(`title is longer than ${TITLE_MAX_LENGTH} characters`);
      }
      const post = {
        id: randomUUID(),
        ownerId,
        title,
        body: input.body ?? null,
        published: input.published ?? false,
        createdAt: new Date().toISOString(),
      };
      const cursor = write(post);
      return { action: 'CREATE', id: post.id, record: post, cursor, at: post.createdAt };
    },

    close() {
      if (closed) return;
      closed = true;
      try {
        db.close();
      } finally {
        if (tempDir) rmSync(tempDir, { recursive: true, force: true });
      }
    },
  };
}

/** The port to listen on: env PORT (0 picks a free one), default 4100. */
export function portFromEnv() {
  const raw = process.env.PORT;
  if (raw === undefined || raw === '') return 4100;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT must be an integer 0..65535, got ${JSON.stringify(raw)}`);
  }
  return port;
}
