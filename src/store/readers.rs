//! SQLite's readers: a few threads of our own, each owning a connection to the
//! file, answer collection reads (lists, counts, rows by id, ref checks).
//!
//! For the reason the writer has a thread (see `store::writer`): through sqlx
//! every statement is a round trip to its connection's worker thread and its
//! rows are copied into sea-orm's generic form; here a read is one hop to a
//! reader and one back, with its statement prepared once per connection. In
//! WAL mode readers never wait for the writer: each statement reads the
//! database as of its start, which includes every write already answered
//! (a write is answered after its commit).
//!
//! Values are decoded as sqlx decodes them, refusing what it refuses
//! (`rows::row_from_lite`), and the
//! connections are set up as the pool's are, plus `query_only`: a reader
//! cannot write, whatever it is given.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use rusqlite::types::Value as Lite;
use sea_orm::{DbBackend, StatementBuilder};
use tokio::sync::oneshot;

use super::StoreError;
use super::writer::{bind, lite_err, open, rows_of};

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The handle on the reader threads; cheap to share.
pub(super) struct Readers {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Reads queued or running, at most [`QUEUED_PER_READER`] per reader.
    room: Arc<tokio::sync::Semaphore>,
}

/// Reads that may wait per reader: more wait for room (as they waited for a
/// pool connection before), at most [`WAIT`].
const QUEUED_PER_READER: usize = 16;

/// How long a read waits for room before it fails (the pool's acquire
/// timeout, which the reads had before).
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Readers {
    /// Opens `count` connections to `file` (which must exist), each on a
    /// thread of its own.
    pub(super) fn start(file: &Path, count: usize) -> Result<Readers, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let conn = open(file)
                .and_then(|c| c.pragma_update(None, "query_only", "ON").map(|()| c))
                .map_err(|e| e.to_string())?;
            let rx = rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("livegate-sqlite-reader-{n}"))
                .spawn(move || serve(conn, rx))
                .map_err(|e| e.to_string())?;
            threads.push(thread);
        }
        Ok(Readers {
            jobs: Mutex::new(Some(tx)),
            room: Arc::new(tokio::sync::Semaphore::new(
                threads.len() * QUEUED_PER_READER,
            )),
            threads: Mutex::new(threads),
        })
    }

    /// Runs `stmt` (a query) on a reader and returns its rows, each as its
    /// columns' values. At most [`QUEUED_PER_READER`] reads per reader are
    /// queued or running; the others wait for room (at most [`WAIT`]). A read
    /// whose request went away while it was queued is skipped.
    pub(super) async fn query(
        &self,
        stmt: &impl StatementBuilder,
    ) -> Result<Vec<Vec<Lite>>, StoreError> {
        let built = DbBackend::Sqlite.build(stmt);
        let values = bind(built.values.as_ref())?;
        let _room = match tokio::time::timeout(WAIT, self.room.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(closed()),
            Err(_) => {
                return Err(StoreError::Db(sea_orm::DbErr::Custom(
                    "no SQLite reader was free for 30 s".into(),
                )));
            }
        };
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            if !reply.is_closed() {
                let _ = reply.send(rows_of(conn, &built.sql, values));
            }
        });
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(closed());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Db(sea_orm::DbErr::Custom(
                "the read failed on a SQLite reader".into(),
            )))
        })
    }

    /// Stops taking reads, lets the threads answer those queued, and waits
    /// for them to close their connections.
    pub(super) async fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.room.close();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

fn closed() -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom("the store is closed".into()))
}

/// A reader thread: takes the next read (whichever reader is free first)
/// until every sender is gone. A read that panics fails alone: its waiter
/// hears that it failed, the thread goes on.
fn serve(conn: Connection, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn))).is_err() {
            tracing::error!("a read panicked on a SQLite reader");
        }
    }
    // Nothing to flush: a reader holds no transaction between reads.
    drop(conn.close().map_err(|(_, e)| lite_err(e)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Expr, ExprTrait, Query};

    /// Readers answer queries, refuse to write, and see each write that
    /// committed before the read began.
    #[tokio::test]
    async fn readers_read_and_cannot_write() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("r.db");
        let writer = Connection::open(&file).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL, s TEXT);",
            )
            .expect("table");
        let readers = Readers::start(&file, 2).expect("readers");
        for v in 0..10i64 {
            writer
                .execute("INSERT INTO t (v, s) VALUES (?, 'x')", [v])
                .expect("insert");
            let q = Query::select()
                .expr(Expr::col("v").count())
                .from("t")
                .and_where(Expr::col("s").eq("x"))
                .to_owned();
            let rows = readers.query(&q).await.expect("read");
            assert_eq!(rows, vec![vec![Lite::Integer(v + 1)]]);
        }
        let write = Query::insert()
            .into_table("t")
            .columns(["v"])
            .values_panic([1i64.into()])
            .to_owned();
        let refused = readers.query(&write).await.expect_err("query_only");
        assert!(refused.to_string().contains("readonly"), "{refused}");
        readers.stop().await;
        assert!(
            readers
                .query(&Query::select().expr(Expr::val(1)).to_owned())
                .await
                .is_err(),
            "closed"
        );
    }
}
