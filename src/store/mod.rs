//! The store: one sea-orm connection pool (SQLite by default, PostgreSQL by URL),
//! system-table migrations, collection-table reconciliation, and CRUD that writes
//! each change and its event-log row in one transaction. On a SQLite file this
//! process serves, collection writes go to a writer thread (`writer`) and
//! collection reads to reader threads (`readers`), each with a connection of
//! its own; the pool serves the rest.
//!
//! Statements are built with sea-query so the same code runs on both dialects;
//! table and column names come only from the [`Catalog`], never from a request.

mod accounts;
mod deliveries;
mod events;
mod filter;
mod follow;
mod readers;
mod rooms;
mod rows;
mod sessions;
mod system;
mod tables;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

use crate::catalog::Catalog;

pub use accounts::{Account, DEFAULT_ACCOUNT, User};
pub use deliveries::{Claimed, Delivery, DeliveryStatus, Outcome, Redelivered, now_ms};
pub use events::{ANY_SESSION, BUS_CAPACITY, LogBounds, Outbox, REVOCATIONS_BUFFER};
pub use filter::{CmpOp, Filter, LikeKind, Order};
pub use follow::POLL;
pub use rooms::{ROOM_EVENTS_KEPT, RoomKey, RoomRow};
pub use rows::{Action, Change, Scope};
pub use sessions::RefreshToken;
pub use system::{EmitOnDrop, SYSTEM_BUFFER, SystemEvent};
pub use tables::ReconcileError;

/// A store failure. Database detail stays in the log; clients see only the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    /// A create or update would leave a record larger than the store takes.
    #[error("the record would be {size} bytes as JSON, more than the {limit} bytes allowed")]
    TooLarge { size: usize, limit: usize },
}

/// Default of the largest record, in bytes of its JSON (`--max-record-bytes`):
/// 1 MiB takes long texts, while every frame, queue and log row that carries a
/// record stays bounded.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Cheap to clone; all clones share one pool (and its SQLite threads).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    catalog: Arc<Catalog>,
    outbox: Arc<Outbox>,
    /// Largest record a write may leave, in bytes of its JSON.
    max_record_bytes: usize,
    /// Accounts by id and by slug (they never change once created).
    accounts: Arc<std::sync::RwLock<std::collections::HashMap<String, Account>>>,
    /// The lock on a SQLite database file this process serves (see
    /// [`Store::claim_database_file`]); released at [`Store::close`], or when
    /// the process ends.
    claim: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    /// Writes running to their end on tasks of their own (see
    /// [`Store::write_permit`]).
    writes: Arc<tokio::sync::Semaphore>,
    /// SQLite's writer thread, once this process claimed the file (see
    /// `store::writer`); `None` on PostgreSQL and databases in memory.
    writer: Option<Arc<writer::Writer>>,
    /// SQLite's reader threads, started with the writer (see `store::readers`).
    readers: Option<Arc<readers::Readers>>,
    /// Counts collection writes and their commits.
    write_metrics: crate::metrics::WriteMetrics,
}

/// Writes that may run at once, their requests gone or not: well above what
/// the pool serves (so a busy server never waits here), and a bound on what
/// clients that send a write and disconnect, over and over, can leave behind.
pub const WRITES_IN_FLIGHT: usize = 256;

/// A database URL that cannot be used, said so that a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "unsupported database URL scheme in \"{0}\": use sqlite://PATH or postgres://USER@HOST/DB"
    )]
    Scheme(String),
    #[error("cannot create the database folder {0}: {1}")]
    Folder(String, std::io::Error),
    #[error("cannot connect to the database at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error(
        "another livegate process is serving the SQLite database {0}: SQLite serves one \
         instance (events are published in process); stop the other one, or run every \
         instance on PostgreSQL (--database-url postgres://...)"
    )]
    InUse(String),
    #[error("cannot lock the SQLite database {0}: {1}")]
    Lock(String, std::io::Error),
}

impl Store {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`).
    /// SQLite files (and their folder) are created on first use, in WAL mode with a
    /// busy timeout, behind a real pool.
    pub async fn connect(url: &str, catalog: Arc<Catalog>) -> Result<Store, ConnectError> {
        let redacted = redact(url);
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            if let Some((path, _)) = writer::sqlite_file(url)
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ConnectError::Folder(dir.display().to_string(), e))?;
            }
            // sqlx gives each SQLite connection its own worker thread: more of them
            // than cores only adds context switches (WAL readers still overlap).
            let cores = std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1) as u32;
            opts.max_connections((cores * 2).clamp(2, 8))
                .min_connections(1);
            opts.map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // LIKE is case-sensitive on PostgreSQL; make SQLite agree so that
                    // `contains`/`startsWith`/`endsWith` mean the same on both.
                    .pragma("case_sensitive_like", "ON")
            });
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            probe_postgres(url, &redacted).await?;
            opts.max_connections(16).min_connections(1);
        } else {
            return Err(ConnectError::Scheme(redacted));
        }
        let db = Database::connect(opts)
            .await
            .map_err(|e| ConnectError::Connect {
                url: redacted,
                cause: e.to_string(),
            })?;
        Ok(Store {
            db,
            catalog,
            outbox: Arc::new(Outbox::new(BUS_CAPACITY)),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            accounts: Arc::default(),
            claim: Arc::default(),
            writes: Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT)),
            writer: None,
            readers: None,
            write_metrics: Default::default(),
        })
    }

    /// Claims the SQLite database file for this process, or says that another
    /// process serves it: events reach subscribers through this process's
    /// memory (the follower is woken in process, and SQLite has no `NOTIFY`),
    /// so two servers on one file would each miss the other's writes. Only
    /// `serve` claims: `livegate token` and `migrate` may run beside a server.
    /// With the claim, collection writes go to this process's writer thread
    /// (see `store::writer`). A no-op on PostgreSQL and in-memory databases.
    pub fn claim_database_file(mut self, url: &str) -> Result<Store, ConnectError> {
        let Some((path, writable)) = writer::sqlite_file(url) else {
            return Ok(self);
        };
        let shown = path.display().to_string();
        // The file itself, whatever the path says (a symlink, `./`, `..`):
        // two paths to one database must meet at one lock.
        let real = std::fs::canonicalize(&path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| shown.clone());
        let lock_path = format!("{real}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ConnectError::Lock(lock_path.clone(), e))?;
        match file.try_lock() {
            Ok(()) => self.claim = Arc::new(std::sync::Mutex::new(Some(file))),
            Err(std::fs::TryLockError::WouldBlock) => return Err(ConnectError::InUse(shown)),
            Err(std::fs::TryLockError::Error(e)) => return Err(ConnectError::Lock(lock_path, e)),
        }
        if writable {
            let started =
                writer::Writer::start(&path, self.outbox.clone(), self.write_metrics.clone())
                    .map_err(|cause| ConnectError::Connect { url: shown, cause })?;
            self.writer = Some(Arc::new(started));
            // As many as the cores: a reader is busy only while SQLite runs.
            let count = std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
                .clamp(1, 4);
            let readers =
                readers::Readers::start(&path, count).map_err(|cause| ConnectError::Connect {
                    url: path.display().to_string(),
                    cause,
                })?;
            self.readers = Some(Arc::new(readers));
        }
        Ok(self)
    }

    /// This process's turn to write to its SQLite file, held by a write made
    /// through the pool from before its `BEGIN` to after its `COMMIT` (see
    /// `store::writer`); `None` where there is no writer thread to share with.
    pub(super) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.writer {
            Some(w) => Some(w.turn().await),
            None => None,
        }
    }

    /// A turn to run a write to its end on a task of its own, waited for by
    /// the request (so a request that goes while it waits starts nothing).
    pub async fn write_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.writes.clone().acquire_owned().await.ok()
    }

    /// Applies pending system-table migrations.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Runs start-up work (migrations, table reconciliation) while holding a
    /// PostgreSQL advisory lock, so that instances starting together take turns
    /// instead of racing to create the same tables. The lock lives on a
    /// connection of its own that is closed afterwards (which releases it even
    /// if the work fails). On SQLite it just runs the work.
    pub async fn exclusively<T>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        if self.backend() != DbBackend::Postgres {
            return work.await;
        }
        use sea_orm::sqlx::{Connection, Executor};
        let pool = self.db.get_postgres_connection_pool();
        let mut conn = pool.acquire().await?.detach();
        conn.execute(sea_orm::sqlx::query("SELECT pg_advisory_lock($1)").bind(STARTUP_LOCK))
            .await?;
        let result = work.await;
        conn.close().await.ok();
        result
    }

    /// Sets how many events a subscriber may fall behind (before any subscribe).
    pub fn with_bus_capacity(mut self, capacity: usize) -> Store {
        // The writer hands its changes to the outbox it started with.
        assert!(
            self.writer.is_none(),
            "set the bus capacity before claiming the database file"
        );
        self.outbox = Arc::new(Outbox::new(capacity));
        self
    }

    /// Counts collection writes and their commits into `metrics`.
    pub fn with_write_metrics(mut self, metrics: crate::metrics::WriteMetrics) -> Store {
        assert!(
            self.writer.is_none(),
            "set the write metrics before claiming the database file"
        );
        self.write_metrics = metrics;
        self
    }

    /// Sets the largest record a create or update may leave, in bytes of the
    /// row's JSON as stored in the event log and published.
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Store {
        self.max_record_bytes = bytes;
        self
    }

    /// The largest record a write may leave, in bytes of its JSON.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Which SQL dialect this store speaks.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The catalog the tables follow.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// Closes the pool and gives up the claim on a SQLite file (at shutdown),
    /// so that a new server may start on it at once.
    pub async fn close(self) -> Result<(), DbErr> {
        // Its queued writes finish (and its connection closes) first.
        if let Some(w) = &self.writer {
            w.stop().await;
        }
        if let Some(r) = &self.readers {
            r.stop().await;
        }
        let closed = self.db.close().await;
        self.claim.lock().unwrap_or_else(|e| e.into_inner()).take();
        closed
    }
}

/// The advisory lock key of start-up work (any fixed number; "lg" + "start").
const STARTUP_LOCK: i64 = 0x6c67_7374_6172_7401;

/// One direct connection before the pool: a pool retries until its acquire timeout
/// and then reports only that it timed out, where a person needs the cause now
/// ("connection refused", "password authentication failed", "database does not exist").
async fn probe_postgres(url: &str, redacted: &str) -> Result<(), ConnectError> {
    use sea_orm::sqlx::Connection;
    let fail = |cause: String| ConnectError::Connect {
        url: redacted.to_string(),
        cause,
    };
    match tokio::time::timeout(
        Duration::from_secs(10),
        sea_orm::sqlx::PgConnection::connect(url),
    )
    .await
    {
        Ok(Ok(conn)) => {
            conn.close().await.ok();
            Ok(())
        }
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("no answer within 10 seconds".into())),
    }
}

/// A URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or_default();
        let masked = if userinfo.contains(':') {
            format!("{user}:***")
        } else {
            user.to_string()
        };
        return format!("{scheme}://{masked}@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
