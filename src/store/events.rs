//! The event log and the bus. A write inserts its event row in the write's own
//! transaction (on SQLite, its savepoint in a shared one) and commits; that is
//! all a writer does. The log follower (`store::follow`) reads committed events
//! back from the database, whichever instance wrote them, and publishes them on
//! this instance's bus in cursor (seq) order, never past an event that may
//! still commit. A subscriber that subscribes to the bus and then replays the
//! log up to [`Store::published_seq`] therefore sees every event exactly once:
//! the replay covers everything published before it ran, the bus everything
//! after.
//!
//! Delivery does not depend on the writer's memory: a write whose request is
//! dropped after it committed, or whose instance dies, is delivered all the same.
//!
//! The bus is a bounded broadcast ring: publishing never waits for subscribers; a
//! subscriber that falls more than [`BUS_CAPACITY`] events behind is told it lagged
//! (and resumes from its cursor).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, OnConflict, Order as SqlOrder, Query};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Statement, TransactionTrait,
};
use serde_json::Value as Json;
use tokio::sync::{Notify, broadcast};

use super::rows::{Action, Change};
use super::{Store, StoreError};
use crate::catalog::Collection;
use crate::values::{Row, now, parse_datetime};

/// Events a subscriber may fall behind before it is told it lagged (default).
pub const BUS_CAPACITY: usize = 16_384;

/// Bytes of this instance's committed changes (as JSON) the follower may hold
/// in memory; past it the log has them.
pub(super) const PENDING_BYTES: usize = 64 * 1024 * 1024;

/// This instance's committed changes not yet published, by seq, within
/// [`PENDING_BYTES`].
#[derive(Default)]
pub(super) struct Pending {
    changes: std::collections::BTreeMap<i64, (Change, usize)>,
    bytes: usize,
}

impl Pending {
    /// Holds `change` if the budget allows; `false` when the follower must
    /// read it from the log instead.
    fn insert(&mut self, change: Change, bytes: usize) -> bool {
        if self.bytes + bytes > PENDING_BYTES {
            return false;
        }
        self.bytes += bytes;
        self.changes.insert(change.seq, (change, bytes));
        true
    }

    /// The smallest seq held.
    pub(super) fn first(&self) -> Option<i64> {
        self.changes.first_key_value().map(|(&seq, _)| seq)
    }

    /// Takes the change with the smallest seq.
    pub(super) fn pop_first(&mut self) -> Option<Change> {
        let (_, (change, bytes)) = self.changes.pop_first()?;
        self.bytes -= bytes;
        Some(change)
    }
}

/// Revocations a live connection may fall behind on before it must re-check its
/// session in the store.
pub const REVOCATIONS_BUFFER: usize = 1024;

/// Sent on [`Store::revocations`] when revocations may have gone by unheard
/// (the `LISTEN` connection was lost): every connection re-checks its session.
pub const ANY_SESSION: &str = "*";

/// The broadcast bus and what the log follower needs to know.
pub struct Outbox {
    tx: broadcast::Sender<Arc<Change>>,
    /// The seq of the newest change sent on the bus (set before it is sent).
    published: AtomicI64,
    capacity: usize,
    /// Wakes the log follower: a write of this instance committed, or (with
    /// `stale` set) the log may hold what this instance did not write.
    pub(super) committed: Notify,
    /// This instance's committed changes not yet published, by seq: the
    /// follower publishes them from here, without reading them back, as long
    /// as each is the next seq (bounded by [`PENDING_MAX`]; past it the log
    /// has them).
    pub(super) pending: std::sync::Mutex<Pending>,
    /// Set when the log may hold events this instance did not write (another
    /// instance's `NOTIFY`, a (re)connected listener): the follower reads it.
    pub(super) stale: AtomicBool,
    /// Sessions recently found live (see [`super::sessions::SessionCache`]).
    pub(super) sessions: super::sessions::SessionCache,
    /// This instance's changes left to the log for want of room in `pending`.
    pub(super) over_budget: std::sync::atomic::AtomicU64,
    /// Wakes the notifier (PostgreSQL): tell the other instances to look.
    pub(super) to_announce: Notify,
    /// Whether the follower hears about other instances' writes as they happen
    /// (always on SQLite, which one process serves; on PostgreSQL while the
    /// `LISTEN` connection is up).
    pub(super) listening: AtomicBool,
    /// Whether the follower's last read of the log succeeded.
    pub(super) reading: AtomicBool,
    /// Ids of sessions revoked from now on, on any instance.
    pub(super) revoked: broadcast::Sender<String>,
    /// Rooms with room events this instance has not read (see `store::rooms`).
    pub(super) room_wakes: std::sync::Mutex<std::collections::HashSet<super::RoomKey>>,
    /// Set when any room may have unread events (a lost `LISTEN` connection).
    pub(super) rooms_stale: AtomicBool,
    /// Wakes this instance's room reader.
    pub(super) room_wake: Notify,
    /// System events (see `store::system`).
    pub(super) system: super::system::SystemBus,
}

impl Outbox {
    /// Tells the session cache, then every connection, that `session_id` was
    /// revoked ([`ANY_SESSION`]: that any may have been).
    pub(super) fn tell_revoked(&self, session_id: String) {
        self.sessions.forget(&session_id);
        let _ = self.revoked.send(session_id);
    }

    /// A bus on which a subscriber may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            tx: broadcast::channel(capacity.max(1)).0,
            published: AtomicI64::new(0),
            capacity: capacity.max(1),
            committed: Notify::new(),
            pending: std::sync::Mutex::default(),
            stale: AtomicBool::new(true),
            over_budget: Default::default(),
            sessions: Default::default(),
            to_announce: Notify::new(),
            listening: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            revoked: broadcast::channel(REVOCATIONS_BUFFER).0,
            room_wakes: std::sync::Mutex::default(),
            rooms_stale: AtomicBool::new(false),
            room_wake: Notify::new(),
            system: Default::default(),
        }
    }

    /// Sends `change` on the bus; the follower calls this in seq order.
    pub(super) fn publish(&self, change: Change) {
        self.published.store(change.seq, Ordering::SeqCst);
        // No receivers is fine: nobody is subscribed.
        let _ = self.tx.send(Arc::new(change));
    }

    /// Hands this instance's just-committed changes (each with the bytes of
    /// its JSON) to the follower and wakes it, and the notifier.
    pub(super) fn committed(&self, changes: impl Iterator<Item = (Change, usize)>) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let published = self.published.load(Ordering::SeqCst);
            for (change, bytes) in changes {
                // Parsed rows take a few times their JSON: count them so.
                if change.seq > published && !pending.insert(change, bytes * 3) {
                    self.over_budget.fetch_add(1, Ordering::Relaxed);
                    self.stale.store(true, Ordering::SeqCst);
                }
            }
        }
        self.committed.notify_one();
        self.to_announce.notify_one();
    }

    pub(super) fn set_published(&self, seq: i64) {
        self.published.fetch_max(seq, Ordering::SeqCst);
    }
}

/// Where the log stands, for judging resume cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Every event with a seq at or below this was pruned.
    pub pruned_through: i64,
    /// The newest seq written (0 when none).
    pub newest: i64,
}

const PRUNED_THROUGH: &str = "events_pruned_through";

impl Store {
    /// A receiver of every committed change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.outbox.tx.subscribe()
    }

    /// Session ids as they are revoked on any instance (sign-out, refresh-token
    /// reuse), so that live connections close. A receiver that falls more than
    /// [`REVOCATIONS_BUFFER`] behind is told it lagged, and [`ANY_SESSION`]
    /// says that revocations may have gone by unheard: either way it may have
    /// missed its own and must re-check its session in the store.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.outbox.revoked.subscribe()
    }

    /// Tells this instance's connections at once, and on PostgreSQL every
    /// other instance's through `NOTIFY` (a session id is far below its 8 KB).
    pub(super) async fn announce_revocation(&self, session_id: &str) {
        self.outbox.tell_revoked(session_id.to_string());
        if self.backend() == DbBackend::Postgres {
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [super::follow::REVOCATIONS.into(), session_id.into()],
            );
            if let Err(e) = self.db.execute_raw(stmt).await {
                // The others' connections re-check their sessions when their
                // token expires; the revocation itself is committed.
                tracing::warn!(error = %e, "could not tell the other instances of a revocation");
            }
        }
    }

    /// How many events a subscriber may fall behind the bus.
    pub fn bus_capacity(&self) -> usize {
        self.outbox.capacity
    }

    /// The seq of the newest change published on the bus. Every change at or
    /// below it is committed (in the log) and no change at or below it can still
    /// commit, and a receiver subscribed before this was read gets every change
    /// after it: the follower sets it before it sends the change.
    pub fn published_seq(&self) -> i64 {
        self.outbox.published.load(Ordering::SeqCst)
    }

    /// How many of this instance's committed changes the follower read back
    /// from the log because its memory budget for them was full.
    pub fn changes_over_budget(&self) -> u64 {
        self.outbox.over_budget.load(Ordering::Relaxed)
    }

    /// Whether this instance can serve realtime: the log follower reads the log
    /// and hears of new events (`GET /readyz`).
    pub fn is_following(&self) -> bool {
        self.outbox.listening.load(Ordering::SeqCst) && self.outbox.reading.load(Ordering::SeqCst)
    }

    /// Inserts the event row for a change and commits `txn`. The follower
    /// publishes it once it reads it back (woken here, and on PostgreSQL every
    /// other instance through `NOTIFY`).
    pub(super) async fn commit_with_event(
        &self,
        txn: DatabaseTransaction,
        c: &Collection,
        action: Action,
        record: Row,
        previous: Option<Row>,
    ) -> Result<Change, StoreError> {
        let at = now();
        let (q, bytes) = event_insert(c, action, &record, previous.as_ref(), at);
        let row = txn
            .query_one(&q)
            .await?
            .ok_or_else(|| StoreError::Corrupt("event insert returned no seq".into()))?;
        let seq: i64 = row.try_get("", "seq")?;
        txn.commit().await?;
        let change = Change {
            seq,
            collection: c.key.clone(),
            action,
            at,
            record,
            previous,
        };
        self.write_metrics.commits.inc();
        self.write_metrics.writes.inc();
        self.outbox
            .committed(std::iter::once((change.clone(), bytes)));
        Ok(change)
    }

    /// Up to `limit` events of `account_id` after `after`, oldest first, optionally
    /// only of `collections`.
    pub async fn replay(
        &self,
        account_id: &str,
        collections: Option<&[String]>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut q = Query::select();
        q.columns(["seq", "collection", "action", "at", "record", "previous"])
            .from("livegate_events")
            .and_where(Expr::col("account_id").eq(account_id))
            .and_where(Expr::col("seq").gt(after))
            .order_by("seq", SqlOrder::Asc)
            .limit(limit);
        if let Some(keys) = collections {
            q.and_where(Expr::col("collection").is_in(keys.iter().cloned()));
        }
        let rows = self.db.query_all(&q).await?;
        rows.iter().map(read_event).collect()
    }

    /// How far the log was pruned and how far it reaches.
    pub async fn log_bounds(&self) -> Result<LogBounds, StoreError> {
        let q = Query::select()
            .column("value")
            .from("livegate_meta")
            .and_where(Expr::col("key").eq(PRUNED_THROUGH))
            .to_owned();
        let pruned_through = match self.db.query_one(&q).await? {
            Some(r) => r.try_get::<i64>("", "value")?,
            None => 0,
        };
        let q = Query::select()
            .expr_as(Expr::col("seq").max(), "newest")
            .from("livegate_events")
            .to_owned();
        let newest = match self.db.query_one(&q).await? {
            Some(r) => r.try_get::<Option<i64>>("", "newest")?.unwrap_or(0),
            None => 0,
        };
        Ok(LogBounds {
            pruned_through,
            newest: std::cmp::max(newest, pruned_through),
        })
    }

    /// Deletes events older than `before`, recording how far the log now starts.
    /// On PostgreSQL one instance prunes at a time (an advisory lock held for
    /// the whole run); the others find the lock taken and skip their turn
    /// (returning 0). Rows go in batches, each its own short transaction: a
    /// long one would hold back the followers' horizon on every instance.
    pub async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return self.prune_events_now(before).await;
        }
        // One instance prunes at a time, the others skip: the lock is held by
        // a connection of its own for the whole run (not returned to the
        // pool, so a run cut short closes it and the lock goes with it).
        use sea_orm::sqlx::{Connection, Row};
        let db_err =
            |e: sea_orm::sqlx::Error| StoreError::Db(sea_orm::DbErr::Custom(e.to_string()));
        let pool = self.db.get_postgres_connection_pool();
        let mut conn = pool.acquire().await.map_err(db_err)?.detach();
        let taken: bool = sea_orm::sqlx::query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut conn)
            .await
            .and_then(|r| r.try_get("taken"))
            .map_err(db_err)?;
        let result = if taken {
            self.prune_events_now(before).await
        } else {
            Ok(0)
        };
        conn.close().await.ok();
        result
    }

    /// [`prune_events`](Self::prune_events), by whoever holds the right to.
    async fn prune_events_now(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let q = Query::select()
            .expr_as(Expr::col("seq").max(), "upto")
            .from("livegate_events")
            .and_where(Expr::col("at").lt(before))
            .to_owned();
        let Some(upto) = txn
            .query_one(&q)
            .await?
            .map(|r| r.try_get::<Option<i64>>("", "upto"))
            .transpose()?
            .flatten()
        else {
            return Ok(0);
        };
        // Never past an event a trigger has still to look at.
        let upto = match self.trigger_floor(&txn).await? {
            Some(floor) => Ord::min(upto, floor),
            None => upto,
        };
        let greatest = if self.backend() == DbBackend::Postgres {
            "GREATEST(livegate_meta.value, excluded.value)"
        } else {
            "max(livegate_meta.value, excluded.value)"
        };
        let record = Query::insert()
            .into_table("livegate_meta")
            .columns(["key", "value"])
            .values_panic([PRUNED_THROUGH.into(), upto.into()])
            // Never backwards: another instance pruning with a clock behind,
            // or a shorter history, must not re-admit cursors whose events
            // are being deleted.
            .on_conflict(
                OnConflict::column("key")
                    .value("value", Expr::cust(greatest))
                    .to_owned(),
            )
            .to_owned();
        // The watermark first: a cursor is judged expired no later than its
        // events disappear.
        txn.execute(&record).await?;
        txn.commit().await?;
        drop(turn);
        let mut deleted = 0;
        loop {
            let batch = Query::select()
                .column("seq")
                .from("livegate_events")
                .and_where(Expr::col("seq").lte(upto))
                .order_by("seq", SqlOrder::Asc)
                .limit(PRUNE_BATCH)
                .to_owned();
            let del = Query::delete()
                .from_table("livegate_events")
                .and_where(Expr::col("seq").in_subquery(batch))
                .to_owned();
            let n = {
                let _turn = self.write_turn().await;
                self.db.execute(&del).await?.rows_affected()
            };
            deleted += n;
            if n < PRUNE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

/// Events deleted per pruning transaction.
const PRUNE_BATCH: u64 = 5000;

/// The advisory lock key of pruning ("lg" + "prune").
const PRUNE_LOCK: i64 = 0x6c67_7072_756e_6501;

/// The insert of a change's event row (returning its seq), and the bytes of
/// the change's JSON.
pub(super) fn event_insert(
    c: &Collection,
    action: Action,
    record: &Row,
    previous: Option<&Row>,
    at: DateTime<Utc>,
) -> (InsertStatement, usize) {
    let record_json = record.to_json();
    let previous_json = previous.map(Row::to_json);
    let bytes = crate::values::json_len(&record_json)
        + previous_json.as_ref().map_or(0, crate::values::json_len);
    let q = Query::insert()
        .into_table("livegate_events")
        .columns([
            "account_id",
            "collection",
            "action",
            "row_id",
            "owner_id",
            "at",
            "record",
            "previous",
        ])
        .values_panic([
            record.account_id.clone().into(),
            c.key.clone().into(),
            action.as_str().into(),
            record.id.clone().into(),
            record.owner_id.clone().into(),
            at.into(),
            record_json.into(),
            previous_json.into(),
        ])
        .returning_col("seq")
        .to_owned();
    (q, bytes)
}

pub(super) fn read_event(r: &QueryResult) -> Result<Change, StoreError> {
    let action = match r.try_get::<String>("", "action")?.as_str() {
        "create" => Action::Create,
        "update" => Action::Update,
        "delete" => Action::Delete,
        other => return Err(StoreError::Corrupt(format!("unknown event action {other}"))),
    };
    let record = row_from_json(&r.try_get::<Json>("", "record")?)?;
    let previous = r
        .try_get::<Option<Json>>("", "previous")?
        .map(|j| row_from_json(&j))
        .transpose()?;
    Ok(Change {
        seq: r.try_get("", "seq")?,
        collection: r.try_get("", "collection")?,
        action,
        at: r.try_get("", "at")?,
        record,
        previous,
    })
}

/// The inverse of [`Row::to_json`].
fn row_from_json(j: &Json) -> Result<Row, StoreError> {
    let bad = || StoreError::Corrupt("an event row cannot be read".into());
    let text = |k: &str| j.get(k).and_then(Json::as_str).map(str::to_string);
    let time = |k: &str| {
        text(k)
            .and_then(|s| parse_datetime(&s).ok())
            .ok_or_else(bad)
    };
    Ok(Row {
        id: text("id").ok_or_else(bad)?,
        owner_id: text("owner_id"),
        account_id: text("account_id").ok_or_else(bad)?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        data: j
            .get("data")
            .and_then(Json::as_object)
            .cloned()
            .ok_or_else(bad)?,
    })
}
