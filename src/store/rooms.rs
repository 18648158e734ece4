//! Rooms across instances, on PostgreSQL: who is in which room (on which
//! instance, under a lease), and the log of room events every instance reads to
//! reach its own members.
//!
//! Each room's writers (join, leave, send) take a transaction-scoped advisory
//! lock on the room, so a room's events commit in seq order: an instance that
//! has read a room's events up to seq `n` reads the rest with `seq > n` and can
//! miss none. (Across rooms the order does not matter, so unlike the event log
//! no horizon is needed.) A join reads the roster under the same lock: the
//! roster it returns is exactly the room after every event before the join.
//!
//! An instance renews its lease (an expiry it sets itself) twice a heartbeat;
//! members of an instance whose lease ran out (it died, or lost the database)
//! are removed by whichever instance notices first, each with a `leave` event. Room events are pruned
//! after [`ROOM_EVENTS_KEPT`]: they exist to be relayed, not kept.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait};
use serde_json::{Value as Json, json};

use super::{Store, StoreError};

/// How long room events stay in the table (seconds).
pub const ROOM_EVENTS_KEPT: i64 = 600;

/// The `LISTEN`/`NOTIFY` channel of room events (the payload names the room).
pub(super) const ROOMS: &str = "livegate_rooms";

/// A room of an account: (account id, room name).
pub type RoomKey = (String, String);

/// One room event as stored.
#[derive(Debug, Clone)]
pub struct RoomRow {
    pub seq: i64,
    pub kind: String,
    pub payload: Option<Json>,
    /// The member it is from (as `Member::to_json`).
    pub member: Json,
    pub at: DateTime<Utc>,
}

fn pg(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

impl Store {
    /// Whether rooms span instances through the database (PostgreSQL), rather
    /// than living in this process alone (SQLite).
    pub fn shares_rooms(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// Records (or renews) this instance's lease for `seconds`. `false` when
    /// the lease had lapsed and was taken away (its members may have been
    /// removed): the caller must join them again.
    pub async fn renew_lease(&self, instance: &str, seconds: i64) -> Result<bool, StoreError> {
        let renewed = self
            .db
            .execute_raw(pg(
                "UPDATE livegate_instances SET expires_at = now() + make_interval(secs => $2) \
                 WHERE id = $1",
                vec![instance.into(), (seconds as f64).into()],
            ))
            .await?
            .rows_affected();
        if renewed == 1 {
            return Ok(true);
        }
        self.db
            .execute_raw(pg(
                "INSERT INTO livegate_instances (id, expires_at) \
                 VALUES ($1, now() + make_interval(secs => $2)) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                vec![instance.into(), (seconds as f64).into()],
            ))
            .await?;
        Ok(false)
    }

    /// Gives up this instance's lease and its members (at shutdown).
    pub async fn end_lease(&self, instance: &str) -> Result<(), StoreError> {
        self.db
            .execute_raw(pg(
                "DELETE FROM livegate_instances WHERE id = $1",
                vec![instance.into()],
            ))
            .await?;
        self.reap_members("instance_id = $1", vec![instance.into()])
            .await?;
        Ok(())
    }

    /// Removes, with a `leave` each, the members of instances whose lease ran
    /// out (or is gone). Safe to run on every instance at once: a member
    /// leaves once, and only while its instance holds no lease (one that
    /// renewed meanwhile keeps its members).
    pub async fn reap_lapsed(&self) -> Result<usize, StoreError> {
        self.db
            .execute_raw(pg(
                "DELETE FROM livegate_instances WHERE expires_at < now()",
                vec![],
            ))
            .await?;
        self.reap_members(
            "NOT EXISTS (SELECT 1 FROM livegate_instances i WHERE i.id = m.instance_id)",
            vec![],
        )
        .await
    }

    async fn reap_members(
        &self,
        condition: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<usize, StoreError> {
        let rows = self
            .db
            .query_all_raw(pg(
                &format!(
                    "SELECT m.peer_id, m.account_id, m.room FROM livegate_room_members m WHERE {condition}"
                ),
                values,
            ))
            .await?;
        let mut left = 0;
        for r in rows {
            let peer: String = r.try_get("", "peer_id")?;
            let account: String = r.try_get("", "account_id")?;
            let room: String = r.try_get("", "room")?;
            if self.room_leave(&account, &room, &peer, true).await? {
                left += 1;
            }
        }
        Ok(left)
    }

    /// Deletes room events older than [`ROOM_EVENTS_KEPT`].
    pub async fn prune_room_events(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .execute_raw(pg(
                "DELETE FROM livegate_room_events WHERE at < now() - make_interval(secs => $1)",
                vec![(ROOM_EVENTS_KEPT as f64).into()],
            ))
            .await?
            .rows_affected())
    }

    /// Joins `member` (its JSON, with `peerId`) to a room on behalf of
    /// `instance`: the seq of its `join` event and the roster after it
    /// (`None` when it was a member already).
    pub async fn room_join(
        &self,
        instance: &str,
        key: &RoomKey,
        peer: &str,
        member: &Json,
    ) -> Result<Option<(i64, Vec<Json>)>, StoreError> {
        let txn = self.room_txn(key).await?;
        let inserted = txn
            .query_one_raw(pg(
                "INSERT INTO livegate_room_members (peer_id, account_id, room, instance_id, member) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (peer_id) DO NOTHING RETURNING peer_id",
                vec![
                    peer.into(),
                    key.0.clone().into(),
                    key.1.clone().into(),
                    instance.into(),
                    member.clone().into(),
                ],
            ))
            .await?;
        if inserted.is_none() {
            // A member already (joined again after a lapsed lease that was
            // not reaped): nothing happened, nothing to tell.
            return Ok(None);
        }
        let roster = txn
            .query_all_raw(pg(
                "SELECT member FROM livegate_room_members WHERE account_id = $1 AND room = $2 ORDER BY peer_id",
                vec![key.0.clone().into(), key.1.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| r.try_get::<Json>("", "member"))
            .collect::<Result<Vec<_>, _>>()?;
        let seq = insert_event(
            &txn,
            key,
            "presence",
            Some(json!({ "event": "join", "member": member })),
            member,
        )
        .await?;
        txn.commit().await?;
        self.announce_room(key).await;
        Ok(Some((seq, roster)))
    }

    /// Takes member `peer` out of a room with a `leave` event; `false` when it
    /// was not there (already left, or reaped). With `orphaned`, only if its
    /// instance holds no lease (reaping).
    pub async fn room_leave(
        &self,
        account: &str,
        room: &str,
        peer: &str,
        orphaned: bool,
    ) -> Result<bool, StoreError> {
        let key = (account.to_string(), room.to_string());
        let txn = self.room_txn(&key).await?;
        let only_orphans = if orphaned {
            " AND NOT EXISTS (SELECT 1 FROM livegate_instances i WHERE i.id = m.instance_id)"
        } else {
            ""
        };
        let gone = txn
            .query_one_raw(pg(
                &format!(
                    "DELETE FROM livegate_room_members m \
                     WHERE m.peer_id = $1 AND m.account_id = $2 AND m.room = $3{only_orphans} \
                     RETURNING m.member"
                ),
                vec![peer.into(), account.into(), room.into()],
            ))
            .await?;
        let Some(gone) = gone else {
            return Ok(false);
        };
        let member: Json = gone.try_get("", "member")?;
        insert_event(
            &txn,
            &key,
            "presence",
            Some(json!({ "event": "leave", "member": member })),
            &member,
        )
        .await?;
        txn.commit().await?;
        self.announce_room(&key).await;
        Ok(true)
    }

    /// Relays a message to a room; `false` (nothing written) when nobody is
    /// in it on any instance.
    pub async fn room_send(
        &self,
        key: &RoomKey,
        kind: &str,
        payload: Option<Json>,
        member: &Json,
    ) -> Result<bool, StoreError> {
        let txn = self.room_txn(key).await?;
        let anyone = txn
            .query_one_raw(pg(
                "SELECT 1 AS here FROM livegate_room_members WHERE account_id = $1 AND room = $2 LIMIT 1",
                vec![key.0.clone().into(), key.1.clone().into()],
            ))
            .await?
            .is_some();
        if !anyone {
            return Ok(false);
        }
        insert_event(&txn, key, kind, payload, member).await?;
        txn.commit().await?;
        self.announce_room(key).await;
        Ok(true)
    }

    /// The roster of a room, in order of joining.
    pub async fn room_members(&self, key: &RoomKey) -> Result<Vec<Json>, StoreError> {
        self.db
            .query_all_raw(pg(
                "SELECT member FROM livegate_room_members WHERE account_id = $1 AND room = $2 ORDER BY peer_id",
                vec![key.0.clone().into(), key.1.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| Ok(r.try_get::<Json>("", "member")?))
            .collect()
    }

    /// Up to `limit` events of a room after seq `after`, oldest first.
    pub async fn room_events(
        &self,
        key: &RoomKey,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RoomRow>, StoreError> {
        self.db
            .query_all_raw(pg(
                "SELECT seq, kind, payload, member, at FROM livegate_room_events \
                 WHERE account_id = $1 AND room = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                vec![
                    key.0.clone().into(),
                    key.1.clone().into(),
                    after.into(),
                    limit.into(),
                ],
            ))
            .await?
            .iter()
            .map(|r| {
                Ok(RoomRow {
                    seq: r.try_get("", "seq")?,
                    kind: r.try_get("", "kind")?,
                    payload: r.try_get("", "payload")?,
                    member: r.try_get("", "member")?,
                    at: r.try_get("", "at")?,
                })
            })
            .collect()
    }

    /// Rooms with new events since the last call, and whether any room may
    /// have them (a lost `LISTEN` connection: read every room).
    pub fn take_room_wakes(&self) -> (bool, HashSet<RoomKey>) {
        let all = self.outbox.rooms_stale.swap(false, Ordering::SeqCst);
        let rooms = std::mem::take(
            &mut *self
                .outbox
                .room_wakes
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        (all, rooms)
    }

    /// Resolves when a room may have new events (or at once if one already
    /// was reported since the last wait).
    pub async fn room_woken(&self) {
        self.outbox.room_wake.notified().await;
    }

    /// Marks a room as having new events and wakes this instance's reader.
    pub fn wake_room(&self, key: RoomKey) {
        self.outbox
            .room_wakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        self.outbox.room_wake.notify_one();
    }

    /// Wakes this instance's room reader now and every other instance's
    /// through `NOTIFY` (after the commit).
    async fn announce_room(&self, key: &RoomKey) {
        self.wake_room(key.clone());
        let payload = json!([key.0, key.1]).to_string();
        if let Err(e) = self
            .db
            .execute_raw(pg(
                "SELECT pg_notify($1, $2)",
                vec![ROOMS.into(), payload.into()],
            ))
            .await
        {
            // The others' poll finds the event within a second.
            tracing::debug!(error = %e, "could not NOTIFY the other instances of a room event");
        }
    }

    /// A transaction holding the room's advisory lock.
    async fn room_txn(&self, key: &RoomKey) -> Result<DatabaseTransaction, StoreError> {
        let txn = self.db.begin().await?;
        txn.execute_raw(pg(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
            vec![key.0.clone().into(), key.1.clone().into()],
        ))
        .await?;
        Ok(txn)
    }
}

async fn insert_event(
    txn: &DatabaseTransaction,
    key: &RoomKey,
    kind: &str,
    payload: Option<Json>,
    member: &Json,
) -> Result<i64, StoreError> {
    let row = txn
        .query_one_raw(pg(
            "INSERT INTO livegate_room_events (account_id, room, kind, payload, member, at) \
             VALUES ($1, $2, $3, $4, $5, now()) RETURNING seq",
            vec![
                key.0.clone().into(),
                key.1.clone().into(),
                kind.into(),
                payload.into(),
                member.clone().into(),
            ],
        ))
        .await?
        .ok_or_else(|| StoreError::Corrupt("room event insert returned no seq".into()))?;
    Ok(row.try_get("", "seq")?)
}
