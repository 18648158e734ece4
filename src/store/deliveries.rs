//! Trigger deliveries in the database. Each trigger has a progress row (the
//! newest event seq it has looked at); moving it and inserting the deliveries
//! of the events it passed over happen in one transaction, so an event is
//! enqueued once and never skipped, whichever instance does it and whenever it
//! dies. Progress only goes up to the follower's published seq, the gap-free
//! prefix of the log (see `store::follow`), never past an event that may still
//! commit.
//!
//! An attempt first *claims* its delivery: the attempt is counted and a lease
//! taken (`leased_until_ms`) in one statement, with `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL, so with several instances each attempt is made by one of
//! them. Its outcome is written only if the delivery still holds that attempt
//! (an instance that stalled past its lease finds it taken over). An instance
//! that dies mid-attempt leaves the lease to run out; the next instance then
//! makes the next attempt: at least once.

use sea_orm::sea_query::{
    Expr, ExprTrait, LockBehavior, LockType, OnConflict, Order as SqlOrder, Query, UpdateStatement,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, TransactionTrait};

use super::events::read_event;
use super::rows::Change;
use super::{Store, StoreError};
use crate::catalog::Trigger;
use crate::values::new_id;

/// Events of the log one enqueueing transaction looks at.
const ENQUEUE_BATCH: u64 = 500;

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(DeliveryStatus::Pending),
            "DELIVERED" => Some(DeliveryStatus::Delivered),
            "FAILED" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One delivery as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub trigger: String,
    pub seq: i64,
    pub account_id: String,
    pub collection: String,
    pub action: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// When the next attempt is due (PENDING only).
    pub next_attempt_ms: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub seq: i64,
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// The claim's id: the outcome is written only while it holds the delivery.
    pub lease_id: String,
    pub account_id: String,
}

/// What `redeliver` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivered {
    /// PENDING again, due now.
    Due,
    /// No such delivery in the account.
    NotFound,
    /// An attempt of it is running now.
    InFlight,
    /// Its trigger is no longer in the app file.
    Undeclared(String),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { status: i32 },
    /// Another try at `at_ms`.
    Retry {
        at_ms: i64,
        status: Option<i32>,
        error: String,
    },
    /// No attempts left.
    Failed { status: Option<i32>, error: String },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn delivery_from(r: &QueryResult) -> Result<Delivery, StoreError> {
    let status: String = r.try_get("", "status")?;
    Ok(Delivery {
        id: r.try_get("", "id")?,
        trigger: r.try_get("", "trigger")?,
        seq: r.try_get("", "seq")?,
        account_id: r.try_get("", "account_id")?,
        collection: r.try_get("", "collection")?,
        action: r.try_get("", "action")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {status}")))?,
        attempts: r.try_get("", "attempts")?,
        next_attempt_ms: r.try_get("", "next_attempt_ms")?,
        last_status: r.try_get("", "last_status")?,
        last_error: r.try_get("", "last_error")?,
        created_ms: r.try_get("", "created_ms")?,
        updated_ms: r.try_get("", "updated_ms")?,
    })
}

const DELIVERY_COLUMNS: [&str; 13] = [
    "id",
    "trigger",
    "seq",
    "account_id",
    "collection",
    "action",
    "status",
    "attempts",
    "next_attempt_ms",
    "last_status",
    "last_error",
    "created_ms",
    "updated_ms",
];

impl Store {
    /// Gives every trigger without one a progress row at the newest published
    /// event: a new trigger calls for changes from now on, not for history.
    /// Call after [`Store::start_following`].
    ///
    /// A trigger no longer in the app file loses its progress (declared again,
    /// it starts from then, not from where it stopped) and its pending
    /// deliveries become FAILED, saying why. On SQLite, which one process
    /// serves, leases left by an earlier run are cleared: nobody holds them.
    pub async fn start_triggers(&self) -> Result<(), StoreError> {
        let names: Vec<String> = self.catalog.triggers.keys().cloned().collect();
        let at = self.published_seq();
        let now = now_ms();
        let _turn = self.write_turn().await;
        let stale = Query::delete()
            .from_table("livegate_trigger_progress")
            .and_where(Expr::col("trigger").is_not_in(names.clone()))
            .to_owned();
        self.db.execute(&stale).await?;
        let orphans = Query::update()
            .table("livegate_deliveries")
            .value("status", DeliveryStatus::Failed.as_str())
            .value("last_error", "the trigger is no longer in the app file")
            .value("leased_until_ms", Expr::val(None::<i64>))
            .value("lease_id", Expr::val(None::<String>))
            .value("updated_ms", now)
            .and_where(Expr::col("status").eq(DeliveryStatus::Pending.as_str()))
            .and_where(Expr::col("trigger").is_not_in(names.clone()))
            .to_owned();
        self.db.execute(&orphans).await?;
        if self.backend() != DbBackend::Postgres {
            let leases = Query::update()
                .table("livegate_deliveries")
                .value("leased_until_ms", Expr::val(None::<i64>))
                .value("lease_id", Expr::val(None::<String>))
                .and_where(Expr::col("leased_until_ms").is_not_null())
                .to_owned();
            self.db.execute(&leases).await?;
        }
        for name in names {
            let q = Query::insert()
                .into_table("livegate_trigger_progress")
                .columns(["trigger", "seq"])
                .values_panic([name.into(), at.into()])
                .on_conflict(OnConflict::column("trigger").do_nothing().to_owned())
                .to_owned();
            self.db.execute(&q).await?;
        }
        Ok(())
    }

    /// Moves `trigger` through the log towards the published seq, inserting
    /// a delivery (with its body, from `body`) for each event it matches.
    /// Returns the deliveries added, whether there is more to look at, and
    /// the seq the trigger's progress is now at (or past, if another instance
    /// moved it).
    pub async fn enqueue_deliveries(
        &self,
        trigger: &Trigger,
        body: impl Fn(&Change) -> String,
    ) -> Result<(usize, bool, i64), StoreError> {
        let upto = self.published_seq();
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let mut progress = Query::select()
            .column("seq")
            .from("livegate_trigger_progress")
            .and_where(Expr::col("trigger").eq(trigger.name.as_str()))
            .to_owned();
        // Instances enqueueing the same trigger take turns.
        progress.lock(LockType::Update);
        let Some(from) = txn
            .query_one(&progress)
            .await?
            .map(|r| r.try_get::<i64>("", "seq"))
            .transpose()?
        else {
            return Ok((0, false, upto));
        };
        if from >= upto {
            return Ok((0, false, upto));
        }
        let events = Query::select()
            .columns(["seq", "collection", "action", "at", "record", "previous"])
            .from("livegate_events")
            .and_where(Expr::col("seq").gt(from))
            .and_where(Expr::col("seq").lte(upto))
            .order_by("seq", SqlOrder::Asc)
            .limit(ENQUEUE_BATCH)
            .to_owned();
        let rows = txn.query_all(&events).await?;
        let full = rows.len() as u64 == ENQUEUE_BATCH;
        let mut through = upto;
        let mut added = 0;
        let now = now_ms();
        for r in &rows {
            let change = read_event(r)?;
            through = change.seq;
            if !trigger.matches(&change.collection, change.action.as_str()) {
                continue;
            }
            let insert = Query::insert()
                .into_table("livegate_deliveries")
                .columns([
                    "id",
                    "trigger",
                    "seq",
                    "account_id",
                    "collection",
                    "action",
                    "body",
                    "status",
                    "attempts",
                    "next_attempt_ms",
                    "created_ms",
                    "updated_ms",
                ])
                .values_panic([
                    new_id().into(),
                    trigger.name.as_str().into(),
                    change.seq.into(),
                    change.record.account_id.as_str().into(),
                    change.collection.as_str().into(),
                    change.action.as_str().into(),
                    body(&change).into(),
                    DeliveryStatus::Pending.as_str().into(),
                    0i32.into(),
                    now.into(),
                    now.into(),
                    now.into(),
                ])
                .on_conflict(
                    OnConflict::columns(["trigger", "seq"])
                        .do_nothing()
                        .to_owned(),
                )
                .to_owned();
            added += txn.execute(&insert).await?.rows_affected() as usize;
        }
        if !full {
            through = upto;
        }
        let advance = Query::update()
            .table("livegate_trigger_progress")
            .value("seq", through)
            .and_where(Expr::col("trigger").eq(trigger.name.as_str()))
            .to_owned();
        txn.execute(&advance).await?;
        txn.commit().await?;
        Ok((added, full, through))
    }

    /// Writes how attempts ended, each only if its claim still holds the
    /// delivery (a lease that ran out may have passed it to another attempt),
    /// and claims up to `n` more due deliveries of `trigger` for an attempt
    /// each, leased for `lease_ms` (see module docs), all in one transaction: a trigger's
    /// bookkeeping is one write per turn, not one per attempt. Says, for each
    /// outcome in turn, whether it was written.
    pub async fn settle_deliveries(
        &self,
        done: &[(Claimed, Outcome)],
        trigger: &str,
        n: u64,
        lease_ms: i64,
    ) -> Result<(Vec<bool>, Vec<Claimed>), StoreError> {
        if done.is_empty() && n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let now = now_ms();
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        let mut written = Vec::with_capacity(done.len());
        for (claimed, outcome) in done {
            let q = finish_query(claimed, outcome, now);
            written.push(txn.execute(&q).await?.rows_affected() == 1);
        }
        let claimed = if n > 0 {
            let rows = txn
                .query_all(&claim_query(trigger, n, lease_ms, now, &new_id()))
                .await?;
            claimed_from(&rows)?
        } else {
            Vec::new()
        };
        txn.commit().await?;
        Ok((written, claimed))
    }

    /// When `trigger`'s next pending delivery not being attempted is due
    /// (`None` when every pending one is), and when its oldest pending
    /// delivery was enqueued (for the queue's age; `None` when none is
    /// pending). Both are index lookups (`livegate_deliveries_due` and
    /// `livegate_deliveries_pending`), however long the queue.
    pub async fn pending_deliveries(
        &self,
        trigger: &str,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let now = now_ms();
        let pending = || {
            Query::select()
                .from("livegate_deliveries")
                .and_where(Expr::col("trigger").eq(trigger))
                .and_where(Expr::col("status").eq(DeliveryStatus::Pending.as_str()))
                .limit(1)
                .to_owned()
        };
        // Rows leased (being attempted) are skipped: a few, at most the
        // attempts in flight on every instance.
        let due = pending()
            .column("next_attempt_ms")
            .and_where(
                Expr::col("leased_until_ms")
                    .is_null()
                    .or(Expr::col("leased_until_ms").lt(now)),
            )
            .order_by("next_attempt_ms", SqlOrder::Asc)
            .to_owned();
        let oldest = pending()
            .column("created_ms")
            .order_by("seq", SqlOrder::Asc)
            .to_owned();
        let one = |r: Option<QueryResult>, col: &str| -> Result<Option<i64>, StoreError> {
            Ok(r.map(|r| r.try_get::<i64>("", col)).transpose()?)
        };
        let due = one(self.db.query_one(&due).await?, "next_attempt_ms")?;
        let oldest = one(self.db.query_one(&oldest).await?, "created_ms")?;
        Ok((due, oldest))
    }

    /// An account's deliveries, newest first.
    pub async fn deliveries(
        &self,
        account_id: &str,
        trigger: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut q = Query::select();
        q.columns(DELIVERY_COLUMNS)
            .from("livegate_deliveries")
            .and_where(Expr::col("account_id").eq(account_id))
            .order_by("id", SqlOrder::Desc)
            .limit(limit);
        if let Some(t) = trigger {
            q.and_where(Expr::col("trigger").eq(t));
        }
        if let Some(s) = status {
            q.and_where(Expr::col("status").eq(s.as_str()));
        }
        self.db
            .query_all(&q)
            .await?
            .iter()
            .map(delivery_from)
            .collect()
    }

    /// Makes one of an account's deliveries PENDING again, due now, with every
    /// attempt back. Not while an attempt of it is running (that attempt's
    /// outcome would be lost, and the endpoint called twice at once), nor for
    /// a trigger no longer declared (nothing would send it).
    pub async fn redeliver(&self, account_id: &str, id: &str) -> Result<Redelivered, StoreError> {
        let now = now_ms();
        let declared: Vec<String> = self.catalog.triggers.keys().cloned().collect();
        let q = Query::update()
            .table("livegate_deliveries")
            .value("status", DeliveryStatus::Pending.as_str())
            .value("attempts", 0i32)
            .value("next_attempt_ms", now)
            .value("updated_ms", now)
            // A late outcome of an attempt whose lease ran out must not
            // overwrite this.
            .value("lease_id", Expr::val(None::<String>))
            .value("leased_until_ms", Expr::val(None::<i64>))
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("account_id").eq(account_id))
            .and_where(Expr::col("trigger").is_in(declared.clone()))
            .and_where(
                Expr::col("leased_until_ms")
                    .is_null()
                    .or(Expr::col("leased_until_ms").lt(now)),
            )
            .to_owned();
        let turn = self.write_turn().await;
        if self.db.execute(&q).await?.rows_affected() == 1 {
            return Ok(Redelivered::Due);
        }
        drop(turn);
        // Why not: look again.
        let found = Query::select()
            .columns(["trigger", "leased_until_ms"])
            .from("livegate_deliveries")
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("account_id").eq(account_id))
            .to_owned();
        let Some(r) = self.db.query_one(&found).await? else {
            return Ok(Redelivered::NotFound);
        };
        let trigger: String = r.try_get("", "trigger")?;
        if !declared.contains(&trigger) {
            return Ok(Redelivered::Undeclared(trigger));
        }
        Ok(Redelivered::InFlight)
    }

    /// Deletes DELIVERED and FAILED deliveries last changed before `before`
    /// (their history is kept as long as the event log's); returns how many.
    pub async fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let q = Query::delete()
            .from_table("livegate_deliveries")
            .and_where(Expr::col("status").ne(DeliveryStatus::Pending.as_str()))
            .and_where(Expr::col("updated_ms").lt(before_ms))
            .to_owned();
        let _turn = self.write_turn().await;
        Ok(self.db.execute(&q).await?.rows_affected())
    }

    /// The lowest progress of any trigger: the log must keep every event after
    /// it (see [`Store::prune_events`]).
    pub(super) async fn trigger_floor(
        &self,
        conn: &impl ConnectionTrait,
    ) -> Result<Option<i64>, StoreError> {
        // Every trigger's, declared here or not: another instance (a rolling
        // deploy) may declare one this one does not.
        let q = Query::select()
            .expr_as(Expr::col("seq").min(), "floor")
            .from("livegate_trigger_progress")
            .to_owned();
        Ok(conn
            .query_one(&q)
            .await?
            .map(|r| r.try_get::<Option<i64>>("", "floor"))
            .transpose()?
            .flatten())
    }
}

/// The claim of up to `n` due deliveries of `trigger`, `lease_id`'s until
/// `now + lease_ms`.
fn claim_query(trigger: &str, n: u64, lease_ms: i64, now: i64, lease_id: &str) -> UpdateStatement {
    let mut due = Query::select()
        .column("id")
        .from("livegate_deliveries")
        .and_where(Expr::col("trigger").eq(trigger))
        .and_where(Expr::col("status").eq(DeliveryStatus::Pending.as_str()))
        .and_where(Expr::col("next_attempt_ms").lte(now))
        .and_where(
            Expr::col("leased_until_ms")
                .is_null()
                .or(Expr::col("leased_until_ms").lt(now)),
        )
        .order_by("next_attempt_ms", SqlOrder::Asc)
        .order_by("seq", SqlOrder::Asc)
        .limit(n)
        .to_owned();
    // SQLite has no row locks (nor needs them: one instance, writes in turn).
    due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    Query::update()
        .table("livegate_deliveries")
        .value("attempts", Expr::col("attempts").add(1))
        .value("leased_until_ms", now + lease_ms)
        .value("lease_id", lease_id)
        .value("updated_ms", now)
        .and_where(Expr::col("id").in_subquery(due))
        .returning(Query::returning().columns(CLAIMED_COLUMNS))
        .to_owned()
}

/// What a claim returns of each delivery: what [`claimed_from`] reads.
const CLAIMED_COLUMNS: [&str; 6] = ["id", "seq", "body", "attempts", "account_id", "lease_id"];

/// The deliveries a claim returned, oldest first.
fn claimed_from(rows: &[QueryResult]) -> Result<Vec<Claimed>, StoreError> {
    let mut claimed = rows
        .iter()
        .map(|r| {
            Ok(Claimed {
                id: r.try_get("", "id")?,
                seq: r.try_get("", "seq")?,
                body: r.try_get("", "body")?,
                attempt: r.try_get("", "attempts")?,
                lease_id: r.try_get("", "lease_id")?,
                account_id: r.try_get("", "account_id")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    claimed.sort_by_key(|c| c.seq);
    Ok(claimed)
}

/// How an attempt ended, written only while its claim holds the delivery.
fn finish_query(claimed: &Claimed, outcome: &Outcome, now: i64) -> UpdateStatement {
    let mut q = Query::update();
    q.table("livegate_deliveries")
        .value("leased_until_ms", Expr::val(None::<i64>))
        .value("lease_id", Expr::val(None::<String>))
        .value("updated_ms", now)
        .and_where(Expr::col("id").eq(claimed.id.as_str()))
        .and_where(Expr::col("lease_id").eq(claimed.lease_id.as_str()))
        .and_where(Expr::col("status").eq(DeliveryStatus::Pending.as_str()));
    match outcome {
        Outcome::Delivered { status } => {
            q.value("status", DeliveryStatus::Delivered.as_str())
                .value("last_status", *status)
                .value("last_error", Expr::val(None::<String>));
        }
        Outcome::Retry {
            at_ms,
            status,
            error,
        } => {
            q.value("next_attempt_ms", *at_ms)
                .value("last_status", *status)
                .value("last_error", error.as_str());
        }
        Outcome::Failed { status, error } => {
            q.value("status", DeliveryStatus::Failed.as_str())
                .value("last_status", *status)
                .value("last_error", error.as_str());
        }
    }
    q
}
