//! The event log and the bus: every write's event row is inserted, committed and
//! published behind one gate, so cursor (seq) order, commit order and publish
//! order are the same. A subscriber that subscribes to the bus and then replays
//! the log from its cursor therefore sees every event exactly once: the replay
//! covers everything committed before it ran, the bus everything after.
//!
//! The bus is a bounded broadcast ring: publishing never waits for subscribers; a
//! subscriber that falls more than [`BUS_CAPACITY`] events behind is told it lagged
//! (and resumes from its cursor).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Order as SqlOrder, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult};
use serde_json::Value as Json;
use tokio::sync::{Mutex, broadcast};

use super::rows::{Action, Change};
use super::{Store, StoreError};
use crate::catalog::Collection;
use crate::values::{Row, now, parse_datetime};

/// Events a subscriber may fall behind before it is told it lagged (default).
pub const BUS_CAPACITY: usize = 16_384;

/// The commit gate and the broadcast bus.
pub struct Outbox {
    gate: Mutex<()>,
    tx: broadcast::Sender<Arc<Change>>,
    /// The seq of the newest change sent on the bus (set before it is sent).
    published: AtomicI64,
    capacity: usize,
}

impl Outbox {
    /// A bus on which a subscriber may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            gate: Mutex::new(()),
            tx: broadcast::channel(capacity.max(1)).0,
            published: AtomicI64::new(0),
            capacity: capacity.max(1),
        }
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

    /// How many events a subscriber may fall behind the bus.
    pub fn bus_capacity(&self) -> usize {
        self.outbox.capacity
    }

    /// The seq of the newest change published on the bus. Every change at or
    /// below it is committed (in the log), and a receiver subscribed before this
    /// was read gets every change after it: the seq is set before the change is
    /// sent, behind the commit gate. Valid once [`Store::load_published_seq`] ran.
    pub fn published_seq(&self) -> i64 {
        self.outbox.published.load(Ordering::SeqCst)
    }

    /// Starts [`Store::published_seq`] at the newest change in the log, which an
    /// earlier run may have written: call once, before serving.
    pub async fn load_published_seq(&self) -> Result<(), StoreError> {
        let newest = self.log_bounds().await?.newest;
        self.outbox.published.fetch_max(newest, Ordering::SeqCst);
        Ok(())
    }

    /// Inserts the event row for a change, commits `txn`, and publishes the change,
    /// all behind the commit gate.
    pub(super) async fn commit_with_event(
        &self,
        txn: DatabaseTransaction,
        c: &Collection,
        action: Action,
        record: Row,
        previous: Option<Row>,
    ) -> Result<Change, StoreError> {
        let _gate = self.outbox.gate.lock().await;
        let at = now();
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
                record.to_json().into(),
                previous.as_ref().map(Row::to_json).into(),
            ])
            .returning_col("seq")
            .to_owned();
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
        self.outbox.published.store(seq, Ordering::SeqCst);
        // No receivers is fine: nobody is subscribed.
        let _ = self.outbox.tx.send(Arc::new(change.clone()));
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
    pub async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let q = Query::select()
            .expr_as(Expr::col("seq").max(), "upto")
            .from("livegate_events")
            .and_where(Expr::col("at").lt(before))
            .to_owned();
        let Some(upto) = self
            .db
            .query_one(&q)
            .await?
            .map(|r| r.try_get::<Option<i64>>("", "upto"))
            .transpose()?
            .flatten()
        else {
            return Ok(0);
        };
        let record = Query::insert()
            .into_table("livegate_meta")
            .columns(["key", "value"])
            .values_panic([PRUNED_THROUGH.into(), upto.into()])
            .on_conflict(OnConflict::column("key").update_column("value").to_owned())
            .to_owned();
        // Record the watermark first: a cursor is judged expired no later than its
        // events disappear.
        self.db.execute(&record).await?;
        let del = Query::delete()
            .from_table("livegate_events")
            .and_where(Expr::col("seq").lte(upto))
            .to_owned();
        Ok(self.db.execute(&del).await?.rows_affected())
    }
}

fn read_event(r: &QueryResult) -> Result<Change, StoreError> {
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
