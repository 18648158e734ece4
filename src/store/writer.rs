//! SQLite's writer: one thread of our own owns a plain SQLite connection and
//! runs every collection write (create, update, delete, each with its event
//! row), taking all the writes waiting into one transaction: group commit.
//!
//! **Why a thread.** Through sqlx every statement is a round trip to the
//! connection's worker thread and back (four per write: begin, row, event,
//! commit), and a profile of the crud benchmark found those context switches,
//! not SQLite, to be the largest cost of a write. Here a write is one hop
//! there and one back, its statements are prepared once, and up to
//! [`BATCH`] writes share one `BEGIN IMMEDIATE ... COMMIT`.
//!
//! **Each write on its own.** Every write runs inside a savepoint of its own:
//! one that fails (a constraint or trigger of the database, an access rule
//! that vetoes an update, a row deleted meanwhile) is rolled back to its
//! savepoint, and its neighbours commit as if it had never been sent. A write
//! is answered only once its batch's `COMMIT` returned; should the commit fail,
//! every write of the batch is told so (and none of them is published).
//! The exceptions are failures that end the whole transaction, not just the
//! statement: a trigger's `RAISE(ROLLBACK)`, an `ON CONFLICT ROLLBACK`, a full
//! disk or an I/O error. Then the writes of the batch that had already run are
//! told they failed (nothing of them is kept or published), and those that had
//! not run yet go into the next batch.
//!
//! **Order.** SQLite has one writer at a time and this process the only one
//! serving the file, so seqs commit in order. The thread shares the process's
//! write turn ([`Writer::turn`]) with the few writes still made through sqlx
//! (sessions, accounts, pruning, reconciling tables), a fair lock taken around each
//! batch and each of those transactions: without it a sqlx writer, polling
//! SQLite's busy handler, could wait out its timeout behind a busy thread.
//!
//! **Encoding.** A value is stored exactly as sqlx stores it (text for times
//! in RFC 3339 and JSON, integers for booleans), so that reads through the
//! pool and writes here agree; `tests` below holds the two side by side.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use rusqlite::types::Value as Lite;
use rusqlite::{Connection, OpenFlags};
use sea_orm::sea_query::Value;
use sea_orm::{DbBackend, StatementBuilder};
use tokio::sync::oneshot;

use super::StoreError;
use super::events::Outbox;
use super::rows::Change;
use crate::metrics::WriteMetrics;

/// Writes taken into one transaction at most: enough to share a commit among
/// every request a busy server has in flight, few enough that the first of
/// them does not wait long for the last.
pub(super) const BATCH: usize = 64;

/// A write as the thread runs it (see [`Writer::write`]).
trait Job: Send {
    /// Runs the write's statements (inside its savepoint).
    fn run(self: Box<Self>, conn: &Connection) -> Step;
    /// Answers without running: the batch could not begin.
    fn refuse(self: Box<Self>, why: String);
}

/// What a write did, to be settled once its batch commits.
struct Step {
    /// Whether its statements stay (else they roll back to its savepoint).
    keep: bool,
    /// Its change for the follower, with the bytes it counts for.
    logged: Option<(Change, usize)>,
    /// Answers the request: with `None` once the batch committed, or with the
    /// reason the commit failed.
    answer: Box<dyn FnOnce(Option<String>) + Send>,
}

/// A write and who waits for it.
struct Waiting<F, T, E> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Waiting<F, T, E>
where
    F: FnOnce(&Connection) -> Result<Staged<T>, E> + Send,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Step {
        let Waiting { work, reply } = *self;
        // A panic is this write's failure alone: its waiter hears that the
        // write failed (its sender is dropped), the others go on.
        match std::panic::catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(Ok(staged)) => Step {
                keep: true,
                logged: staged.logged,
                answer: Box::new(move |failed| {
                    let _ = reply.send(match failed {
                        None => Ok(staged.value),
                        Some(why) => Err(commit_failed(why).into()),
                    });
                }),
            },
            Ok(Err(e)) => Step {
                keep: false,
                logged: None,
                answer: Box::new(move |_| {
                    let _ = reply.send(Err(e));
                }),
            },
            Err(_) => {
                tracing::error!("a write panicked on the SQLite writer; it was rolled back");
                Step {
                    keep: false,
                    logged: None,
                    answer: Box::new(|_| {}),
                }
            }
        }
    }

    fn refuse(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(commit_failed(why).into()));
    }
}

fn commit_failed(why: String) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(why))
}

/// What a write on the thread returns: its result, and the change it logged
/// (published once the batch commits).
pub(super) struct Staged<T> {
    pub value: T,
    pub logged: Option<(Change, usize)>,
}

impl Staged<Option<Change>> {
    /// A write that found nothing to change: no row, no event.
    pub fn nothing() -> Self {
        Staged {
            value: None,
            logged: None,
        }
    }

    /// A write that logged `change` (taking `bytes` of the follower's memory).
    pub fn changed(change: Change, bytes: usize) -> Self {
        Staged {
            value: Some(change.clone()),
            logged: Some((change, bytes)),
        }
    }
}

/// The handle on the writer thread; cheap to share.
pub(super) struct Writer {
    jobs: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    /// The writer thread, then the checkpointer.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Writer {
    /// Opens `file` (which must exist: the pool created and migrated it) and
    /// starts the thread. Changes it commits are handed to `outbox`.
    pub(super) fn start(
        file: &Path,
        outbox: Arc<Outbox>,
        metrics: WriteMetrics,
    ) -> Result<Writer, String> {
        let conn = open(file).map_err(|e| e.to_string())?;
        let checkpoints = open(file).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let (nudge, nudged) = mpsc::channel();
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let thread_turn = turn.clone();
        let checkpointer = std::thread::Builder::new()
            .name("livegate-sqlite-checkpoint".into())
            .spawn(move || checkpoint(checkpoints, nudged))
            .map_err(|e| e.to_string())?;
        let thread = std::thread::Builder::new()
            .name("livegate-sqlite-writer".into())
            .spawn(move || run(conn, rx, thread_turn, outbox, metrics, nudge))
            .map_err(|e| e.to_string())?;
        Ok(Writer {
            jobs: std::sync::Mutex::new(Some(tx)),
            threads: std::sync::Mutex::new(vec![thread, checkpointer]),
            turn,
        })
    }

    /// Runs `work` on the thread in the next batch, inside a savepoint of its
    /// own, and waits until that batch commits. An `Err` from `work` rolls
    /// back its statements and nobody else's. Writes are bounded by
    /// [`super::WRITES_IN_FLIGHT`] upstream, so the queue needs no bound here.
    pub(super) async fn write<T, E>(
        &self,
        work: impl FnOnce(&Connection) -> Result<Staged<T>, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Waiting { work, reply });
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(
                StoreError::Db(sea_orm::DbErr::Custom("the store is closed".into())).into(),
            );
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Db(sea_orm::DbErr::Custom(
                "the write failed on the writer".into(),
            ))
            .into())
        })
    }

    /// The process's turn to write to the SQLite file, for a write made
    /// through the pool: held from before its `BEGIN` to after its `COMMIT`.
    pub(super) async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// Stops taking writes, lets the thread finish those queued, and waits
    /// for it (and then the checkpointer) to close their connections.
    pub(super) async fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A connection of our own to the file (the writer's, the checkpointer's,
/// each reader's), set up as the pool's are (see `Store::connect`).
pub(super) fn open(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "case_sensitive_like", "ON")?;
    // Checkpoints are the checkpointer's, off the writes' path (see below).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // The writer's few statements per collection; a reader's one per shape
    // of filter and order in use (others are prepared again when evicted).
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The thread: batch after batch until every sender is gone.
fn run(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    outbox: Arc<Outbox>,
    metrics: WriteMetrics,
    nudge: mpsc::Sender<()>,
) {
    let mut commits = 0u32;
    // Writes a broken batch never ran: they go first in the next one.
    let mut carried: Vec<Box<dyn Job>> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            match jobs.recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let _turn = turn.blocking_lock();
        // Never begin inside a transaction a failed rollback left open.
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "the SQLite writer could not roll back");
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "the SQLite writer could not begin a transaction");
            for job in batch {
                job.refuse(format!("could not begin a write: {e}"));
            }
            continue;
        }
        let mut steps = Vec::with_capacity(batch.len());
        let mut broken = None;
        let mut jobs_left = batch.into_iter();
        for job in jobs_left.by_ref() {
            if let Err(e) = conn.execute_batch("SAVEPOINT w") {
                broken = Some(e.to_string());
                job.refuse(format!("could not start a write: {e}"));
                break;
            }
            let step = job.run(&conn);
            let end = if step.keep {
                "RELEASE w"
            } else {
                "ROLLBACK TO w; RELEASE w"
            };
            steps.push(step);
            if let Err(e) = conn.execute_batch(end) {
                // The transaction is in no state to trust: none of it stays.
                broken = Some(e.to_string());
                break;
            }
        }
        carried.extend(jobs_left);
        let failed = match broken {
            Some(why) => Some(why),
            None => conn.execute_batch("COMMIT").err().map(|e| e.to_string()),
        };
        // A failed COMMIT (or a broken batch) may leave the transaction open.
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "the SQLite writer could not roll back");
        }
        if let Some(why) = &failed {
            tracing::error!(error = %why, "a batch of SQLite writes failed to commit");
        } else {
            let logged: Vec<_> = steps.iter_mut().filter_map(|s| s.logged.take()).collect();
            // A batch that changed nothing (every write refused) wakes nobody.
            if !logged.is_empty() {
                metrics.commits.inc();
                metrics.writes.inc_by(logged.len() as u64);
                outbox.committed(logged.into_iter());
            }
            commits += 1;
            if commits >= CHECKPOINT_EVERY {
                commits = 0;
                let _ = nudge.send(());
            }
        }
        drop(_turn);
        for step in steps {
            (step.answer)(failed.clone());
        }
    }
    tracing::debug!("the SQLite writer stopped");
}

/// Commits after which the checkpointer is nudged (it also runs every
/// [`CHECKPOINT_PERIOD`]).
const CHECKPOINT_EVERY: u32 = 128;
const CHECKPOINT_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The checkpointer: copies the write-ahead log back into the database file,
/// on a connection of its own, so that no write (nor the request waiting for
/// it) pays for a checkpoint, as it would with SQLite's automatic ones, run
/// by whichever connection commits past 1,000 pages (the pool's connections
/// keep those, as a fallback; the checkpointer keeps the log below that). A
/// `PASSIVE` checkpoint never waits for readers or the writer: it copies what
/// it can and leaves the rest to the next turn. With `synchronous = NORMAL`
/// a checkpoint is also where the log reaches the disk (see the README).
fn checkpoint(conn: Connection, nudged: mpsc::Receiver<()>) {
    // Until the writer thread is gone (its nudges with it).
    while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = nudged.recv_timeout(CHECKPOINT_PERIOD)
    {
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => tracing::trace!(log, copied, "checkpoint"),
            Err(e) => tracing::warn!(error = %e, "a SQLite checkpoint failed"),
        }
    }
}

/// Runs `stmt` (built for SQLite) with its values, returning the rows changed.
pub(super) fn execute(
    conn: &Connection,
    stmt: &impl StatementBuilder,
) -> Result<usize, StoreError> {
    let built = DbBackend::Sqlite.build(stmt);
    let values = bind(built.values.as_ref())?;
    let mut prepared = conn.prepare_cached(&built.sql).map_err(lite_err)?;
    prepared
        .execute(rusqlite::params_from_iter(values))
        .map_err(lite_err)
}

/// A SQLite error as the store reports it (the cause goes to the log).
pub(super) fn lite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(e.to_string()))
}

/// Statement values as SQLite values, encoded as sqlx encodes them.
pub(super) fn bind(values: Option<&sea_orm::sea_query::Values>) -> Result<Vec<Lite>, StoreError> {
    values
        .map(|v| v.0.iter().map(lite_value).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// One value as sqlx-sqlite stores it.
fn lite_value(v: &Value) -> Result<Lite, StoreError> {
    let int = |i: Option<i64>| i.map_or(Lite::Null, Lite::Integer);
    Ok(match v {
        Value::Bool(b) => int(b.map(i64::from)),
        Value::TinyInt(i) => int(i.map(i64::from)),
        Value::SmallInt(i) => int(i.map(i64::from)),
        Value::Int(i) => int(i.map(i64::from)),
        Value::BigInt(i) => int(*i),
        Value::TinyUnsigned(i) => int(i.map(i64::from)),
        Value::SmallUnsigned(i) => int(i.map(i64::from)),
        Value::Unsigned(i) => int(i.map(i64::from)),
        // Limits and offsets; SQLite's integers stop at i64::MAX.
        Value::BigUnsigned(i) => match i.map(i64::try_from) {
            None => Lite::Null,
            Some(Ok(i)) => Lite::Integer(i),
            Some(Err(_)) => return Err(StoreError::Corrupt(format!("{v:?} is out of range"))),
        },
        Value::Float(f) => f.map_or(Lite::Null, |f| Lite::Real(f.into())),
        Value::Double(f) => f.map_or(Lite::Null, Lite::Real),
        Value::String(s) => s.clone().map_or(Lite::Null, Lite::Text),
        Value::Char(c) => c.map_or(Lite::Null, |c| Lite::Text(c.to_string())),
        Value::Bytes(b) => b.clone().map_or(Lite::Null, Lite::Blob),
        Value::Json(j) => j.as_ref().map_or(Lite::Null, |j| Lite::Text(j.to_string())),
        Value::ChronoDateTimeUtc(d) => d.map_or(Lite::Null, |d| {
            Lite::Text(d.to_rfc3339_opts(SecondsFormat::AutoSi, false))
        }),
        other => {
            return Err(StoreError::Corrupt(format!(
                "the SQLite writer cannot store {other:?}"
            )));
        }
    })
}

/// Runs `stmt` and returns its rows, each as its columns' values.
pub(super) fn query_rows(
    conn: &Connection,
    stmt: &impl StatementBuilder,
) -> Result<Vec<Vec<Lite>>, StoreError> {
    let built = DbBackend::Sqlite.build(stmt);
    let values = bind(built.values.as_ref())?;
    rows_of(conn, &built.sql, values)
}

/// Runs `sql` with `values` and returns its rows, each as its columns' values.
pub(super) fn rows_of(
    conn: &Connection,
    sql: &str,
    values: Vec<Lite>,
) -> Result<Vec<Vec<Lite>>, StoreError> {
    let mut prepared = conn.prepare_cached(sql).map_err(lite_err)?;
    let columns = prepared.column_count();
    let mut rows = prepared
        .query(rusqlite::params_from_iter(values))
        .map_err(lite_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(lite_err)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(row.get::<_, Lite>(i).map_err(lite_err)?);
        }
        out.push(values);
    }
    Ok(out)
}

/// A value as text: only text (or NULL), as sqlx decodes a `String`.
pub(super) fn lite_text(value: Lite) -> Result<Option<String>, StoreError> {
    match value {
        Lite::Null => Ok(None),
        Lite::Text(t) => Ok(Some(t)),
        _ => Err(StoreError::Corrupt("a stored value is not text".into())),
    }
}

/// A value as a time, read the way sqlx reads one (RFC 3339 and SQLite's own
/// text forms, Unix seconds, Julian days).
pub(super) fn lite_time(value: &Lite) -> Result<Option<DateTime<Utc>>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("a stored time cannot be read: {what}"));
    let time = match value {
        Lite::Null => return Ok(None),
        Lite::Text(text) => time_from_text(text).ok_or_else(|| bad(text))?,
        Lite::Integer(secs) => Utc
            .timestamp_opt(*secs, 0)
            .single()
            .ok_or_else(|| bad("seconds out of range"))?,
        Lite::Real(days) => {
            let secs = (days - 2_440_587.5) * 86_400.0;
            if !secs.is_finite() {
                return Err(bad("Julian day out of range"));
            }
            Utc.timestamp_opt(secs.trunc() as i64, (secs.fract().abs() * 1e9) as u32)
                .single()
                .ok_or_else(|| bad("Julian day out of range"))?
        }
        Lite::Blob(_) => return Err(bad("a blob")),
    };
    Ok(Some(time))
}

fn time_from_text(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|format| {
        DateTime::<FixedOffset>::parse_from_str(text, format)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, format)
                    .ok()
                    .map(|t| t.and_utc())
            })
    })
}

/// The file of a `sqlite:` URL, as SQLite will open it (percent-decoded),
/// and whether the writer may serve it: `None` for a database in memory;
/// not writable here when opened read-only or immutable, or through another
/// VFS (those are written, if at all, through the pool).
pub(super) fn sqlite_file(url: &str) -> Option<(PathBuf, bool)> {
    use std::str::FromStr;
    // The options as sqlx reads them (it has no getters for the mode).
    url.strip_prefix("sqlite:")?;
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    // In memory, a temporary database, or a URI filename (which SQLite
    // reads in ways a plain path would not match).
    if database == ":memory:" || database.is_empty() || database.starts_with("file:") {
        return None;
    }
    let mut writable = true;
    for (key, value) in form_urlencoded::parse(params.as_bytes()) {
        match (&*key, &*value) {
            ("mode", "memory") => return None,
            ("mode", "rw" | "rwc") | ("cache", _) | ("immutable", "false" | "0") => {}
            _ => writable = false,
        }
    }
    let opts = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some((opts.get_filename().to_path_buf(), writable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Database, Statement};
    use serde_json::json;

    /// Every kind of value a collection stores, bound through sqlx (as the
    /// pool writes) and here, lands in SQLite as the same type and bytes.
    #[tokio::test]
    async fn values_are_stored_as_sqlx_stores_them() {
        let pool = Database::connect("sqlite::memory:").await.expect("sqlite");
        let lite = Connection::open_in_memory().expect("sqlite");
        let time = Utc
            .with_ymd_and_hms(2026, 12, 7, 16, 29, 9)
            .single()
            .expect("time")
            + chrono::Duration::nanoseconds(123_456_789);
        let values: Vec<Value> = vec![
            "héllo".into(),
            None::<String>.into(),
            42i64.into(),
            (-7i64).into(),
            None::<i64>.into(),
            2.5f64.into(),
            None::<f64>.into(),
            true.into(),
            false.into(),
            None::<bool>.into(),
            time.into(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("time")
                .into(),
            None::<DateTime<Utc>>.into(),
            json!({"a": [1, 2.5, "x"], "b": null}).into(),
            20u64.into(),
            None::<u64>.into(),
            None::<serde_json::Value>.into(),
        ];
        for v in values {
            let sql = "SELECT typeof(?) AS t, quote(?) AS q";
            let stmt =
                Statement::from_sql_and_values(DbBackend::Sqlite, sql, [v.clone(), v.clone()]);
            let row = pool.query_one_raw(stmt).await.expect("query").expect("row");
            let pooled: (String, String) = (
                row.try_get("", "t").expect("t"),
                row.try_get("", "q").expect("q"),
            );
            let bound = lite_value(&v).expect("bindable");
            let direct: (String, String) = lite
                .query_row(sql, [&bound, &bound], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query");
            assert_eq!(pooled, direct, "{v:?}");
        }
    }

    /// Times as sqlx writes them read back to the same instant here.
    #[test]
    fn times_read_back() {
        let time = Utc
            .with_ymd_and_hms(2026, 12, 7, 16, 29, 9)
            .single()
            .expect("time")
            + chrono::Duration::nanoseconds(123_456_789);
        for stored in [
            Lite::Text(time.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
            Lite::Text("2026-12-07 16:29:09.123456789".into()),
            Lite::Text("2026-12-07T16:29:09.123456789Z".into()),
        ] {
            assert_eq!(
                lite_time(&stored).expect("a time"),
                Some(time),
                "{stored:?}"
            );
        }
        let secs = lite_time(&Lite::Integer(1_796_660_949)).expect("a time");
        assert_eq!(secs.map(|t| t.timestamp()), Some(1_796_660_949));
        assert_eq!(lite_time(&Lite::Null).expect("null"), None);
        assert!(lite_time(&Lite::Text("noon".into())).is_err());
    }

    #[test]
    fn only_plain_files_get_a_writer() {
        let file = |p: &str, w: bool| Some((PathBuf::from(p), w));
        assert_eq!(
            sqlite_file("sqlite://data/a%20b.db"),
            file("data/a b.db", true)
        );
        assert_eq!(
            sqlite_file("sqlite:data/x.db?mode=rwc"),
            file("data/x.db", true)
        );
        assert_eq!(sqlite_file("sqlite://x.db?mode=ro"), file("x.db", false));
        assert_eq!(
            sqlite_file("sqlite://x.db?immutable=1"),
            file("x.db", false)
        );
        assert_eq!(
            sqlite_file("sqlite://x.db?vfs=unix-none"),
            file("x.db", false)
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(
            sqlite_file("sqlite://x.db?bogus=1"),
            None,
            "sqlx refuses it"
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
        assert_eq!(sqlite_file("sqlite://"), None);
        assert_eq!(sqlite_file("sqlite:file::memory:?cache=shared"), None);
    }

    /// A write that fails, and one that panics, between two that succeed in
    /// one batch: both neighbours commit and are answered, the failures are rolled back.
    #[tokio::test]
    async fn a_failing_write_leaves_its_neighbours_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("w.db");
        Connection::open(&file)
            .and_then(|c| c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)"))
            .expect("table");
        let outbox = Arc::new(Outbox::new(16));
        let writer =
            Arc::new(Writer::start(&file, outbox, WriteMetrics::default()).expect("writer"));
        // Hold the turn so that all four queue up and run as one batch.
        let turn = writer.turn().await;
        let insert = |v: Option<i64>, panic: bool| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?)", [v])
                            .map_err(lite_err)?;
                        assert!(!panic, "a write panicked");
                        Ok::<_, StoreError>(Staged {
                            value: v,
                            logged: None,
                        })
                    })
                    .await
            })
        };
        // The thread takes this one and waits for the turn; the four queue
        // behind it, and make the next batch.
        let plug = insert(Some(0), false);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let first = insert(Some(1), false);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let bad = insert(None, false);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let panics = insert(Some(3), true);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let last = insert(Some(4), false);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(turn);
        assert_eq!(plug.await.expect("task").expect("committed"), Some(0));
        assert_eq!(first.await.expect("task").expect("committed"), Some(1));
        assert!(bad.await.expect("task").is_err(), "NOT NULL refused it");
        assert!(panics.await.expect("task").is_err(), "its panic failed it");
        assert_eq!(last.await.expect("task").expect("committed"), Some(4));
        writer.stop().await;
        let stored: Vec<i64> = Connection::open(&file)
            .and_then(|c| {
                c.prepare("SELECT v FROM t ORDER BY v")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("read");
        assert_eq!(stored, vec![0, 1, 4]);
    }

    /// A write that ends the whole transaction (a trigger's `RAISE(ROLLBACK)`)
    /// fails those of its batch that ran before it (nothing of them stays),
    /// and those after it run in the next batch and commit.
    #[tokio::test]
    async fn a_write_that_ends_the_transaction_carries_the_rest_over() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("r.db");
        Connection::open(&file)
            .and_then(|c| {
                c.execute_batch(
                    "CREATE TABLE t (v INTEGER NOT NULL);
                     CREATE TRIGGER r BEFORE INSERT ON t WHEN NEW.v = 99
                     BEGIN SELECT RAISE(ROLLBACK, 'no'); END;",
                )
            })
            .expect("table");
        let writer = Arc::new(
            Writer::start(&file, Arc::new(Outbox::new(16)), WriteMetrics::default())
                .expect("writer"),
        );
        let turn = writer.turn().await;
        let insert = |v: i64| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t (v) VALUES (?)", [v])
                            .map_err(lite_err)?;
                        Ok::<_, StoreError>(Staged {
                            value: v,
                            logged: None,
                        })
                    })
                    .await
            })
        };
        let plug = insert(0);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = insert(1);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let ender = insert(99);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let after = insert(4);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(turn);
        assert_eq!(plug.await.expect("task").expect("committed"), 0);
        assert!(
            before.await.expect("task").is_err(),
            "its transaction ended"
        );
        assert!(ender.await.expect("task").is_err());
        assert_eq!(after.await.expect("task").expect("committed"), 4);
        writer.stop().await;
        let stored: Vec<i64> = Connection::open(&file)
            .and_then(|c| {
                c.prepare("SELECT v FROM t ORDER BY v")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("read");
        assert_eq!(stored, vec![0, 4]);
    }

    /// Writes reach the database file itself (not only its write-ahead log)
    /// through the checkpointer, without any write checkpointing.
    #[tokio::test]
    async fn the_checkpointer_moves_the_log_into_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.db");
        Connection::open(&file)
            .and_then(|c| {
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            })
            .expect("table");
        let writer = Writer::start(&file, Arc::new(Outbox::new(16)), WriteMetrics::default())
            .expect("writer");
        for v in 0..200i64 {
            writer
                .write(move |conn| {
                    conn.execute("INSERT INTO t (v) VALUES (?)", [v])
                        .map_err(lite_err)?;
                    Ok::<_, StoreError>(Staged {
                        value: (),
                        logged: None,
                    })
                })
                .await
                .expect("write");
        }
        // `immutable` reads the file alone, never the log.
        let in_file = || {
            let uri = format!("file:{}?immutable=1", file.display());
            Connection::open_with_flags(
                uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
            .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
            .expect("read the file")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while in_file() < 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(in_file(), 200);
        writer.stop().await;
    }
}
