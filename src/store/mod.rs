//! The store: one sea-orm connection pool (SQLite by default, PostgreSQL by URL),
//! system-table migrations, collection-table reconciliation, and CRUD that writes
//! each change and its event-log row in one transaction.
//!
//! Statements are built with sea-query so the same code runs on both dialects;
//! table and column names come only from the [`Catalog`], never from a request.

mod accounts;
mod events;
mod filter;
mod rows;
mod sessions;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

use crate::catalog::Catalog;

pub use accounts::{Account, DEFAULT_ACCOUNT, User};
pub use events::{BUS_CAPACITY, LogBounds, Outbox};
pub use filter::{CmpOp, Filter, LikeKind, Order};
pub use rows::{Action, Change, Scope};
pub use sessions::RefreshToken;
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

/// Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    catalog: Arc<Catalog>,
    outbox: Arc<Outbox>,
    /// Largest record a write may leave, in bytes of its JSON.
    max_record_bytes: usize,
    /// Accounts by id and by slug (they never change once created).
    accounts: Arc<std::sync::RwLock<std::collections::HashMap<String, Account>>>,
}

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
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if !path.is_empty()
                && path != ":memory:"
                && let Some(dir) = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
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
        })
    }

    /// Applies pending system-table migrations.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Sets how many events a subscriber may fall behind (before any subscribe).
    pub fn with_bus_capacity(mut self, capacity: usize) -> Store {
        self.outbox = Arc::new(Outbox::new(capacity));
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

    /// Closes the pool (at shutdown).
    pub async fn close(self) -> Result<(), DbErr> {
        self.db.close().await
    }
}

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
