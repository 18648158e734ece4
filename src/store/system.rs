//! System events: what happens around the data (sign-ups, sign-ins, sign-outs,
//! refresh-token reuse, realtime connections, room joins and leaves, failed
//! trigger deliveries), streamed live to the admins of the account
//! (`systemEvents`).
//!
//! They do not go through the event log: they are operational signals, not
//! data. Connections come and go far more often than rows change, and writing
//! each one to a durable, ordered log would put a database write on every
//! socket's open and close, interleave them with the cursors data
//! subscriptions resume from, and keep them for `history_hours`. An admin
//! watches them live (a trigger, from the log, is the durable path for data).
//! So: a bounded in-memory broadcast per watched account per instance, and on
//! PostgreSQL a `NOTIFY` to the other instances, sent in batches by one task
//! (one notification in flight, at most 20 a second, what does not fit
//! dropped and logged), so that an admin connected to any instance hears every
//! instance's events. A subscriber that
//! falls more than [`SYSTEM_BUFFER`] events behind is told so and ends; events
//! emitted while the `LISTEN` connection is down are not replayed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::broadcast;

use super::Store;

/// Events a `systemEvents` subscriber may fall behind before it ends.
pub const SYSTEM_BUFFER: usize = 4096;

/// Events waiting for the next `NOTIFY` batch; past it new ones are dropped
/// (and counted), never the writes or connections that emit them.
const OUTGOING_MAX: usize = 10_000;

/// Bytes of one `NOTIFY` payload at most (PostgreSQL's limit is 8000).
const NOTIFY_BYTES: usize = 7_000;

/// The `LISTEN`/`NOTIFY` channel of system events.
pub(super) const SYSTEM: &str = "livegate_system";

/// One system event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemEvent {
    pub account_id: String,
    /// `auth.sign_up`, `realtime.connect`, … (API.md §9).
    pub kind: String,
    pub at: DateTime<Utc>,
    pub user_id: Option<String>,
    /// Never a token or a password.
    pub detail: Json,
    /// The instance that emitted it (to skip its own notifications).
    #[serde(default)]
    pub(super) origin: String,
}

/// The system-event side of the outbox.
pub(super) struct SystemBus {
    /// A broadcast per account with a subscriber on this instance: one noisy
    /// account cannot push another's admins behind, and an account nobody
    /// watches costs a map lookup.
    by_account:
        std::sync::Mutex<std::collections::HashMap<String, broadcast::Sender<Arc<SystemEvent>>>>,
    /// This instance, as `origin`.
    pub(super) instance: String,
    /// Events to tell the other instances (PostgreSQL).
    pub(super) outgoing: std::sync::Mutex<Vec<SystemEvent>>,
    pub(super) wake: tokio::sync::Notify,
    pub(super) dropped: std::sync::atomic::AtomicU64,
}

impl Default for SystemBus {
    fn default() -> Self {
        SystemBus {
            by_account: std::sync::Mutex::default(),
            instance: crate::values::new_id(),
            outgoing: std::sync::Mutex::default(),
            wake: tokio::sync::Notify::new(),
            dropped: Default::default(),
        }
    }
}

impl SystemBus {
    /// An event another instance told of.
    pub(super) fn heard(&self, payload: &str) {
        let Ok(events) = serde_json::from_str::<Vec<SystemEvent>>(payload) else {
            tracing::warn!("an unreadable system-event notification was ignored");
            return;
        };
        for e in events {
            if e.origin != self.instance {
                self.deliver(Arc::new(e));
            }
        }
    }

    /// To this instance's subscribers of the event's account, if any.
    fn deliver(&self, e: Arc<SystemEvent>) {
        let mut map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&e.account_id)
            && tx.send(e.clone()).is_err()
        {
            // Its last subscriber went.
            map.remove(&e.account_id);
        }
    }

    fn subscribe(&self, account_id: &str) -> broadcast::Receiver<Arc<SystemEvent>> {
        let mut map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(account_id.to_string())
            .or_insert_with(|| broadcast::channel(SYSTEM_BUFFER).0)
            .subscribe()
    }
}

/// Emits its event when dropped: the end of something whose start was told
/// (see [`Store::emit_span`]).
pub struct EmitOnDrop {
    store: Store,
    account_id: String,
    user_id: Option<String>,
    kind: &'static str,
    detail: Json,
}

impl Drop for EmitOnDrop {
    fn drop(&mut self) {
        self.store.emit(
            &self.account_id,
            self.kind,
            self.user_id.as_deref(),
            std::mem::take(&mut self.detail),
        );
    }
}

impl Store {
    /// Emits `start` now, and `end` (with the same detail) when the returned
    /// guard is dropped: a connection, a room membership.
    pub fn emit_span(
        &self,
        account_id: &str,
        user_id: Option<&str>,
        start: &str,
        end: &'static str,
        detail: Json,
    ) -> EmitOnDrop {
        self.emit(account_id, start, user_id, detail.clone());
        EmitOnDrop {
            store: self.clone(),
            account_id: account_id.to_string(),
            user_id: user_id.map(str::to_string),
            kind: end,
            detail,
        }
    }

    /// Emits a system event of `account_id`: at once to this instance's
    /// subscribers, and on PostgreSQL to the other instances' in the next
    /// batch. Never waits.
    pub fn emit(&self, account_id: &str, kind: &str, user_id: Option<&str>, detail: Json) {
        let event = SystemEvent {
            account_id: account_id.to_string(),
            kind: kind.to_string(),
            at: Utc::now(),
            user_id: user_id.map(str::to_string),
            detail,
            origin: self.outbox.system.instance.clone(),
        };
        let bus = &self.outbox.system;
        if self.backend() == DbBackend::Postgres {
            let mut out = bus.outgoing.lock().unwrap_or_else(|e| e.into_inner());
            if out.len() < OUTGOING_MAX {
                out.push(event.clone());
                bus.wake.notify_one();
            } else {
                bus.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        bus.deliver(Arc::new(event));
    }

    /// Every system event of `account_id` from now on (this instance's, and
    /// on PostgreSQL every other instance's).
    pub fn system_events(&self, account_id: &str) -> broadcast::Receiver<Arc<SystemEvent>> {
        self.outbox.system.subscribe(account_id)
    }

    /// Tells the other instances of this one's system events (PostgreSQL), in
    /// batches that fit a `NOTIFY`; runs until aborted.
    pub(super) async fn announce_system_events(self) {
        let bus = &self.outbox.system;
        loop {
            bus.wake.notified().await;
            // Let a burst gather into few notifications.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let batch =
                std::mem::take(&mut *bus.outgoing.lock().unwrap_or_else(|e| e.into_inner()));
            let mut chunk: Vec<String> = Vec::new();
            let mut bytes = 2;
            let mut payloads = Vec::new();
            for e in &batch {
                let Ok(one) = serde_json::to_string(e) else {
                    continue;
                };
                if one.len() + 2 > NOTIFY_BYTES {
                    bus.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if bytes + one.len() + 1 > NOTIFY_BYTES {
                    payloads.push(format!("[{}]", chunk.join(",")));
                    chunk.clear();
                    bytes = 2;
                }
                bytes += one.len() + 1;
                chunk.push(one);
            }
            if !chunk.is_empty() {
                payloads.push(format!("[{}]", chunk.join(",")));
            }
            let dropped = bus.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "system events were not told to the other instances (more than they take)"
                );
            }
            for p in payloads {
                // At most 20 notifications a second from this instance: a
                // flood of connections must not crowd PostgreSQL's
                // notification queue (revocations and wake-ups share it).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let stmt = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [SYSTEM.into(), p.into()],
                );
                if let Err(e) = self.db.execute_raw(stmt).await {
                    tracing::warn!(error = %e, "could not tell the other instances of system events");
                }
            }
        }
    }
}
