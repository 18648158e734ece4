//! The log follower: each instance learns of committed events by reading
//! `livegate_events` (its own writes and every other instance's) and publishes
//! them on its bus in seq order. Writers only insert and commit.
//!
//! **Order without a global lock.** On PostgreSQL a writer takes its seq from a
//! sequence before it commits, so concurrent writers (tasks, or instances) make
//! their events visible out of seq order: seq 11 may be readable while seq 10 is
//! still committing. Publishing 11 then would make every subscriber (and every
//! cursor) skip 10 for good (the trap behind Hasura's skipped rows). So the
//! follower publishes only a gap-free prefix: at a missing seq it stops and waits
//! until the missing seq either appears or provably never will.
//!
//! The proof: the transaction holding a missing seq below a visible event took
//! that seq before the visible event took its own (a sequence hands out values
//! in order, one at a time: `CACHE 1`, PostgreSQL's default for a serial), so
//! before the snapshot that showed the gap; and it had an xid by then, because
//! every write changes (or locks) its collection's row before it inserts its
//! event. When the follower first sees a gap it has a fresh xid handed out (the
//! *fence*, a transaction of its own): every transaction that may hold the
//! missing seq has a smaller xid. (A snapshot's own `xmax` would not do: it is
//! one past the newest *completed* xid, and a transaction with a larger xid may
//! well be running.) Once a snapshot's `xmin` reaches the fence, every one of
//! them has ended; the log is then read again, and a seq still missing there
//! was rolled back (or lost to a crash) and is skipped for good. While it
//! waits, the follower only probes (the smallest seq after the published one,
//! and `xmin`), it does not re-read rows.
//!
//! An advisory lock per account would have served one account's subscribers but
//! not the order of the log as a whole, which cursors are; and the fence costs
//! nothing while there is no gap. The price: a gap holds delivery back while any
//! transaction that held an xid when the gap was seen is open, on any database
//! of the PostgreSQL server (xids are server-wide), so a session idle inside a
//! write transaction delays events behind a rolled-back write (never loses them).
//!
//! SQLite has one writer at a time (immediate transactions) and one serving
//! process (see `Store::claim_database_file`): seqs commit in order and never
//! leave a gap that could still fill. That holds with two writers in the
//! process, the writer thread (collection writes, see `store::writer`) and the
//! pool (the rest): SQLite's write lock orders them, and a change registers
//! for publishing only after its commit.
//!
//! **Wake-up.** A commit on this instance hands its change to the follower and
//! wakes it: a change whose seq is the next one is published from memory, with
//! no read (on SQLite, and on one PostgreSQL instance, that is nearly every
//! change). On PostgreSQL the commit also sends a `NOTIFY` (after the commit,
//! coalesced: at most one in flight) that wakes every other instance's follower
//! through its `LISTEN` connection. A notification is a hint, never the data:
//! the follower reads the log after every notification, whenever its own
//! changes wait behind a missing seq, whenever the `LISTEN` connection
//! (re)connects (a lost connection drops notifications: that costs latency, not
//! events), and at least every [`POLL`] in any case. Were a writer's memory
//! lost (its request dropped, its instance killed), the log still has the
//! event: only the shortcut is gone.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, Order as SqlOrder, Query};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::events::read_event;
use super::{Store, StoreError};

/// The longest the follower goes without reading the log.
pub const POLL: Duration = Duration::from_secs(1);

/// Events read per query.
const BATCH: u64 = 1000;

/// The `LISTEN`/`NOTIFY` channel of new events.
const CHANNEL: &str = "livegate_events";

/// The `LISTEN`/`NOTIFY` channel of revoked sessions (the payload is the id).
pub(super) const REVOCATIONS: &str = "livegate_revocations";

/// The longest start-up waits for transactions that may still commit events
/// below the newest one.
const START_WAIT: Duration = Duration::from_secs(10);

/// What a read of the log found.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// A full batch: read again at once.
    More,
    /// Everything committed is published.
    UpToDate,
    /// A missing seq may still commit: read again soon.
    Gap,
}

/// A missing seq the follower waits for (PostgreSQL).
#[derive(Debug, Clone, Copy)]
struct Gap {
    /// The published seq when the gap was seen: the seq after it is missing.
    after: i64,
    /// An xid handed out after the gap was seen: whoever may hold the missing
    /// seq has a smaller one.
    fence: i64,
    /// Whether every transaction below the fence has ended (then a read that
    /// still lacks the seq skips it).
    settled: bool,
}

const XMIN_SQL: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl Store {
    /// Starts the bus at the newest event in the log, which an earlier run or
    /// another instance wrote: call once, before serving. On PostgreSQL it first
    /// waits (up to 10 s) until every transaction that may still commit an
    /// older seq has ended, so that nothing is published out of order later.
    pub async fn start_following(&self) -> Result<(), StoreError> {
        let newest = self.log_bounds().await?.newest;
        if self.backend() == DbBackend::Postgres {
            // Whoever may still commit a seq below `newest` had an xid before
            // it was read, so below the fence.
            let fence = self.fence().await?;
            let began = tokio::time::Instant::now();
            while self.xmin().await? < fence {
                if began.elapsed() > START_WAIT {
                    tracing::warn!(
                        "a transaction open since before start-up is still open after 10 s; \
                         an event it commits below the newest one will not be published live \
                         here (resumes read it from the log)"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.outbox.set_published(newest);
        Ok(())
    }

    /// Follows the log for as long as it runs (abort it to stop): publishes
    /// every committed event in seq order, woken by commits, notifications and
    /// the poll. Errors are logged and retried; `/readyz` reports them.
    pub async fn follow(self) {
        let postgres = self.backend() == DbBackend::Postgres;
        let _helpers = if postgres {
            Some(Helpers(vec![
                tokio::spawn(self.clone().listen()),
                tokio::spawn(self.clone().announce()),
                tokio::spawn(self.clone().announce_system_events()),
            ]))
        } else {
            // One process serves the file and revokes in it: all is heard.
            self.outbox.listening.store(true, Ordering::SeqCst);
            self.outbox.sessions.hear(true);
            None
        };
        let mut gap: Option<Gap> = None;
        let mut gap_wait = Duration::from_millis(1);
        let mut failed_wait = Duration::from_millis(50);
        let mut last_read = tokio::time::Instant::now();
        loop {
            // This instance's own commits, while they continue the log.
            let waiting = self.publish_pending();
            // A gap that its own commits filled is over.
            if gap.is_some_and(|g| g.after != self.published_seq()) {
                gap = None;
            }
            let must_read = gap.is_some()
                || waiting
                || self.outbox.stale.swap(false, Ordering::SeqCst)
                || last_read.elapsed() >= POLL;
            if !must_read {
                self.wait(POLL.saturating_sub(last_read.elapsed())).await;
                continue;
            }
            last_read = tokio::time::Instant::now();
            match self.read_log(&mut gap).await {
                Ok(read) => {
                    self.outbox.reading.store(true, Ordering::SeqCst);
                    failed_wait = Duration::from_millis(50);
                    self.drop_published_pending();
                    match read {
                        Read::More => {
                            gap_wait = Duration::from_millis(1);
                            self.outbox.stale.store(true, Ordering::SeqCst);
                        }
                        Read::UpToDate => gap_wait = Duration::from_millis(1),
                        Read::Gap => {
                            // A rolled-back seq sends no notification: look again
                            // soon, less often the longer it lasts.
                            self.wait(gap_wait).await;
                            gap_wait = (gap_wait * 2).min(Duration::from_millis(100));
                        }
                    }
                }
                Err(e) => {
                    if self.outbox.reading.swap(false, Ordering::SeqCst) {
                        tracing::warn!(error = %e, "cannot read the event log; retrying");
                    }
                    self.outbox.stale.store(true, Ordering::SeqCst);
                    tokio::time::sleep(failed_wait).await;
                    failed_wait = (failed_wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Publishes this instance's committed changes that continue the published
    /// log without a gap: each is committed and the seq before it is
    /// published, so nothing can still commit below it. Says whether changes
    /// are left waiting behind a missing seq (which the log must settle).
    fn publish_pending(&self) -> bool {
        let mut pending = self
            .outbox
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            let next = self.published_seq() + 1;
            match pending.first() {
                Some(seq) if seq < next => {
                    pending.pop_first();
                }
                Some(seq) if seq == next => {
                    if let Some(change) = pending.pop_first() {
                        self.outbox.publish(change);
                    }
                }
                Some(_) => return true,
                None => return false,
            }
        }
    }

    /// Forgets held changes the log published.
    fn drop_published_pending(&self) {
        let published = self.published_seq();
        let mut pending = self
            .outbox
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while pending.first().is_some_and(|seq| seq <= published) {
            pending.pop_first();
        }
    }

    /// Until woken or `at_most` passed.
    async fn wait(&self, at_most: Duration) {
        // A wake-up during the read left a permit: this returns at once.
        let _ = tokio::time::timeout(at_most, self.outbox.committed.notified()).await;
    }

    /// Publishes the gap-free prefix of the events after the published seq.
    async fn read_log(&self, gap: &mut Option<Gap>) -> Result<Read, StoreError> {
        let postgres = self.backend() == DbBackend::Postgres;
        if let Some(g) = gap.as_mut()
            && !g.settled
        {
            // Waiting: a probe, not a read, until the seq came or cannot.
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "SELECT (SELECT min(seq) FROM livegate_events WHERE seq > $1) AS next, \
                     {XMIN_SQL} AS xmin"
                ),
                [g.after.into()],
            );
            let r = self
                .db
                .query_one_raw(stmt)
                .await?
                .ok_or_else(|| StoreError::Corrupt("the gap probe returned nothing".into()))?;
            let next: Option<i64> = r.try_get("", "next")?;
            g.settled = r.try_get::<i64>("", "xmin")? >= g.fence;
            if !g.settled && next != Some(g.after + 1) {
                return Ok(Read::Gap);
            }
        }
        let after = self.published_seq();
        let q = Query::select()
            .columns(["seq", "collection", "action", "at", "record", "previous"])
            .from("livegate_events")
            .and_where(Expr::col("seq").gt(after))
            .order_by("seq", SqlOrder::Asc)
            .limit(BATCH)
            .to_owned();
        let rows = self.db.query_all(&q).await?;
        for r in &rows {
            let change = read_event(r)?;
            let published = self.published_seq();
            // SQLite commits in seq order: a missing seq there never comes.
            if postgres && change.seq > published + 1 {
                match gap {
                    Some(g) if g.after == published && g.settled => {
                        tracing::debug!(
                            from = published + 1,
                            to = change.seq - 1,
                            "skipping seqs that were never committed"
                        );
                    }
                    Some(g) if g.after == published => return Ok(Read::Gap),
                    _ => {
                        *gap = Some(Gap {
                            after: published,
                            fence: self.fence().await?,
                            settled: false,
                        });
                        return Ok(Read::Gap);
                    }
                }
            }
            *gap = None;
            self.outbox.publish(change);
        }
        Ok(if rows.len() as u64 == BATCH {
            Read::More
        } else {
            Read::UpToDate
        })
    }

    /// A fresh xid, handed out now (its transaction commits at once).
    async fn fence(&self) -> Result<i64, StoreError> {
        let stmt = Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_current_xact_id()::text::bigint AS fence",
        );
        let r = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the fence query returned nothing".into()))?;
        Ok(r.try_get("", "fence")?)
    }

    /// The oldest xid still running, or the next one when none is (PostgreSQL).
    async fn xmin(&self) -> Result<i64, StoreError> {
        let stmt =
            Statement::from_string(DbBackend::Postgres, format!("SELECT {XMIN_SQL} AS xmin"));
        let r = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the horizon query returned nothing".into()))?;
        Ok(r.try_get("", "xmin")?)
    }

    /// Holds a `LISTEN` connection (PostgreSQL) and wakes the follower on every
    /// notification and on every (re)connection; reconnects with backoff.
    async fn listen(self) {
        use sea_orm::sqlx::postgres::PgListener;
        /// Should the listener stop (aborted, or a panic), nothing it no
        /// longer hears may be trusted.
        struct Deaf(std::sync::Arc<super::Outbox>);
        impl Drop for Deaf {
            fn drop(&mut self) {
                self.0.listening.store(false, Ordering::SeqCst);
                self.0.sessions.hear(false);
            }
        }
        let _deaf = Deaf(self.outbox.clone());
        let pool = self.db.get_postgres_connection_pool().clone();
        let mut backoff = Duration::from_millis(100);
        let mut lost: Option<chrono::DateTime<chrono::Utc>> = None;
        loop {
            let connected = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen_all([
                    CHANNEL,
                    REVOCATIONS,
                    super::rooms::ROOMS,
                    super::system::SYSTEM,
                ])
                .await?;
                Ok::<_, sea_orm::sqlx::Error>(l)
            }
            .await;
            match connected {
                Ok(mut listener) => {
                    backoff = Duration::from_millis(100);
                    self.outbox.listening.store(true, Ordering::SeqCst);
                    // Whatever was announced while no one listened: read the
                    // log now, and have every connection re-check its session.
                    self.outbox.stale.store(true, Ordering::SeqCst);
                    self.outbox.committed.notify_one();
                    if let Some(since) = lost.take() {
                        self.replay_revocations(since).await;
                        self.outbox.rooms_stale.store(true, Ordering::SeqCst);
                        self.outbox.room_wake.notify_one();
                    }
                    // Revocations are heard again, those missed told.
                    self.outbox.sessions.hear(true);
                    let why = loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) if n.channel() == REVOCATIONS => {
                                self.outbox.tell_revoked(n.payload().to_string());
                            }
                            Ok(Some(n)) if n.channel() == super::system::SYSTEM => {
                                self.outbox.system.heard(n.payload());
                            }
                            Ok(Some(n)) if n.channel() == super::rooms::ROOMS => {
                                match serde_json::from_str::<(String, String)>(n.payload()) {
                                    Ok(key) => self.wake_room(key),
                                    Err(_) => {
                                        self.outbox.rooms_stale.store(true, Ordering::SeqCst);
                                        self.outbox.room_wake.notify_one();
                                    }
                                }
                            }
                            Ok(Some(_)) => {
                                self.outbox.stale.store(true, Ordering::SeqCst);
                                self.outbox.committed.notify_one();
                            }
                            Ok(None) => break "connection lost".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    };
                    lost = Some(chrono::Utc::now());
                    self.outbox.listening.store(false, Ordering::SeqCst);
                    // Revocations go unheard until the replay: trust nothing remembered.
                    self.outbox.sessions.hear(false);
                    self.outbox.stale.store(true, Ordering::SeqCst);
                    self.outbox.committed.notify_one();
                    tracing::warn!(cause = %why, "lost the LISTEN connection for new events; reconnecting");
                }
                Err(e) => {
                    lost.get_or_insert_with(chrono::Utc::now);
                    tracing::warn!(error = %e, "cannot LISTEN for new events; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// After a lost `LISTEN` connection: the sessions revoked since shortly
    /// before it was lost (clocks of instances differ a little), told to this
    /// instance's connections; if there are too many to tell one by one, or
    /// they cannot be read, every connection re-checks its own.
    async fn replay_revocations(&self, lost_at: chrono::DateTime<chrono::Utc>) {
        let since = lost_at - chrono::Duration::seconds(60);
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM livegate_sessions WHERE revoked_at >= $1 LIMIT $2",
            [
                since.into(),
                ((super::REVOCATIONS_BUFFER / 2) as i64 + 1).into(),
            ],
        );
        let ids: Option<Vec<String>> = match self.db.query_all_raw(stmt).await {
            Ok(rows) => rows
                .iter()
                .map(|r| r.try_get::<String>("", "id").ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sessions revoked while not listening");
                None
            }
        };
        match ids {
            Some(ids) if ids.len() <= super::REVOCATIONS_BUFFER / 2 => {
                for id in ids {
                    self.outbox.tell_revoked(id);
                }
            }
            _ => {
                self.outbox.tell_revoked(super::ANY_SESSION.to_string());
            }
        }
    }

    /// Sends one `NOTIFY` per burst of this instance's commits (PostgreSQL):
    /// after the commit (a `NOTIFY` inside a write transaction takes a global
    /// lock at commit), and never more than one in flight.
    async fn announce(self) {
        loop {
            self.outbox.to_announce.notified().await;
            if let Err(e) = self
                .db
                .execute_unprepared(&format!("NOTIFY {CHANNEL}"))
                .await
            {
                // The other instances' poll still finds the events.
                tracing::debug!(error = %e, "could not NOTIFY the other instances");
            }
        }
    }
}

/// Aborts the follower's helper tasks when the follower ends.
struct Helpers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
