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
//! until the missing seq either appears or provably never will. The proof is the
//! commit-visibility horizon: the transaction holding a missing seq below a
//! visible event took it before that event was committed, and it had an xid by
//! then (every write changes its collection's row before it inserts its event),
//! so its xid is below the `xmax` of the snapshot that first showed the gap. Once
//! a later snapshot's `xmin` reaches that `xmax`, every such transaction has
//! ended; a seq still missing in that snapshot was rolled back (or lost to a
//! crash) and is skipped. An advisory lock per account would have served one
//! account's subscribers but not the order of the log as a whole, which cursors
//! are; and the horizon costs nothing while there is no gap. The price: a gap
//! holds delivery back while any transaction older than it is open, so an idle
//! session inside a transaction on the same database delays events behind a
//! rolled-back write (never loses them).
//!
//! SQLite has one writer at a time (immediate transactions) and one serving
//! process (see `Store::claim_database_file`): seqs commit in order and never
//! leave a gap that could still fill.
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

/// A PostgreSQL snapshot's horizon: every xid below `xmin` has ended; every xid
/// at or above `xmax` had not started.
#[derive(Debug, Clone, Copy)]
struct Horizon {
    xmin: i64,
    xmax: i64,
}

const HORIZON_SQL: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, \
     pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax";

impl Store {
    /// Starts the bus at the newest event in the log, which an earlier run or
    /// another instance wrote: call once, before serving. On PostgreSQL it first
    /// waits (up to 10 s) until every transaction that may still commit an
    /// older seq has ended, so that nothing is published out of order later.
    pub async fn start_following(&self) -> Result<(), StoreError> {
        let newest = self.log_bounds().await?.newest;
        if self.backend() == DbBackend::Postgres {
            let start = self.horizon().await?;
            let began = tokio::time::Instant::now();
            while self.horizon().await?.xmin < start.xmax {
                if began.elapsed() > START_WAIT {
                    tracing::warn!(
                        "a transaction open since before start-up is still open after 10 s; \
                         events it commits below the newest one will not be published live \
                         (resumes and the log have them)"
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
            ]))
        } else {
            self.outbox.listening.store(true, Ordering::SeqCst);
            None
        };
        let mut gap: Option<i64> = None;
        let mut gap_wait = Duration::from_millis(1);
        let mut failed_wait = Duration::from_millis(50);
        let mut last_read = tokio::time::Instant::now();
        loop {
            // This instance's own commits, while they continue the log.
            let waiting = self.publish_pending();
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
            match pending.first_key_value() {
                Some((&seq, _)) if seq < next => {
                    pending.pop_first();
                }
                Some((&seq, _)) if seq == next => {
                    if let Some((_, change)) = pending.pop_first() {
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
        while pending
            .first_key_value()
            .is_some_and(|(&seq, _)| seq <= published)
        {
            pending.pop_first();
        }
    }

    /// Until woken or `at_most` passed.
    async fn wait(&self, at_most: Duration) {
        // A wake-up during the read left a permit: this returns at once.
        let _ = tokio::time::timeout(at_most, self.outbox.committed.notified()).await;
    }

    /// Publishes the gap-free prefix of the events after the published seq.
    async fn read_log(&self, gap: &mut Option<i64>) -> Result<Read, StoreError> {
        let after = self.published_seq();
        let (rows, horizon) = if self.backend() == DbBackend::Postgres {
            let sql = format!(
                "SELECT s.xmin, s.xmax, e.seq, e.collection, e.action, e.at, e.record, e.previous \
                 FROM (SELECT {HORIZON_SQL}) s LEFT JOIN LATERAL \
                 (SELECT seq, collection, action, at, record, previous FROM livegate_events \
                  WHERE seq > $1 ORDER BY seq LIMIT $2) e ON true ORDER BY e.seq"
            );
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [after.into(), (BATCH as i64).into()],
            );
            let rows = self.db.query_all_raw(stmt).await?;
            let horizon = match rows.first() {
                Some(r) => Horizon {
                    xmin: r.try_get("", "xmin")?,
                    xmax: r.try_get("", "xmax")?,
                },
                None => {
                    return Err(StoreError::Corrupt(
                        "the horizon query returned nothing".into(),
                    ));
                }
            };
            (rows, Some(horizon))
        } else {
            let q = Query::select()
                .columns(["seq", "collection", "action", "at", "record", "previous"])
                .from("livegate_events")
                .and_where(Expr::col("seq").gt(after))
                .order_by("seq", SqlOrder::Asc)
                .limit(BATCH)
                .to_owned();
            (self.db.query_all(&q).await?, None)
        };
        let mut read = 0u64;
        for r in &rows {
            if r.try_get::<Option<i64>>("", "seq")?.is_none() {
                continue; // PostgreSQL's row for the horizon alone: no events.
            }
            read += 1;
            let change = read_event(r)?;
            if change.seq > self.published_seq() + 1
                && let Some(h) = horizon
            {
                match *gap {
                    // First sight of the gap: whoever holds the missing seqs
                    // has an xid below this snapshot's xmax.
                    None => {
                        *gap = Some(h.xmax);
                        return Ok(Read::Gap);
                    }
                    // All of them ended, and this snapshot lacks the seqs:
                    // rolled back, never to come. Go on past them.
                    Some(bound) if h.xmin >= bound => {}
                    Some(_) => return Ok(Read::Gap),
                }
            }
            *gap = None;
            self.outbox.publish(change);
        }
        Ok(if read == BATCH {
            Read::More
        } else {
            Read::UpToDate
        })
    }

    /// A snapshot's horizon, now (PostgreSQL).
    async fn horizon(&self) -> Result<Horizon, StoreError> {
        let stmt = Statement::from_string(DbBackend::Postgres, format!("SELECT {HORIZON_SQL}"));
        let r = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the horizon query returned nothing".into()))?;
        Ok(Horizon {
            xmin: r.try_get("", "xmin")?,
            xmax: r.try_get("", "xmax")?,
        })
    }

    /// Holds a `LISTEN` connection (PostgreSQL) and wakes the follower on every
    /// notification and on every (re)connection; reconnects with backoff.
    async fn listen(self) {
        use sea_orm::sqlx::postgres::PgListener;
        let pool = self.db.get_postgres_connection_pool().clone();
        let mut backoff = Duration::from_millis(100);
        let mut lost = false;
        loop {
            let connected = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen_all([CHANNEL, REVOCATIONS, super::rooms::ROOMS])
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
                    if lost {
                        let _ = self.outbox.revoked.send(super::ANY_SESSION.to_string());
                        self.outbox.rooms_stale.store(true, Ordering::SeqCst);
                        self.outbox.room_wake.notify_one();
                    }
                    let why = loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) if n.channel() == REVOCATIONS => {
                                let _ = self.outbox.revoked.send(n.payload().to_string());
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
                    lost = true;
                    self.outbox.listening.store(false, Ordering::SeqCst);
                    self.outbox.stale.store(true, Ordering::SeqCst);
                    self.outbox.committed.notify_one();
                    tracing::warn!(cause = %why, "lost the LISTEN connection for new events; reconnecting");
                }
                Err(e) => {
                    lost = true;
                    tracing::warn!(error = %e, "cannot LISTEN for new events; retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
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
