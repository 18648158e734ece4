//! Rooms that span instances (PostgreSQL): this instance writes its members'
//! joins, leaves and messages to the database (`store::rooms`) and reads every
//! room event back, in each room's order, for its own members, whichever
//! instance wrote it. So members on A and B share one roster and hear each
//! other, and all of them see a room's events in the same order.
//!
//! A member's join is written on a task of its own; meanwhile its seat gets
//! nothing. Once written, the seat gets the roster as of its join (`sync`) and
//! then every event after its join: each seat has its own cursor (the last seq
//! it got), and a room is read from the smallest cursor of its seats, so a
//! member whose join landed behind what the room had already read is caught
//! up from the log, in order, without holding up the others.
//!
//! The instance holds a lease renewed twice a heartbeat and lasting two; an
//! instance whose lease ran out has its members taken out by the next instance
//! that looks (each looks twice a heartbeat): a dead instance's members leave
//! every roster within 2.5 heartbeats (3 promised).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::{Key, Member, NOT_JOINED, Overflow, RoomEvent, RoomRow, Rooms, event};
use crate::store::Store;

/// Room events read per query.
const BATCH: i64 = 500;

/// The longest the reader goes without reading every room it serves.
const POLL: Duration = Duration::from_secs(1);

impl Rooms {
    /// Writes `member`'s join, then seats it: roster first, events after.
    pub(super) async fn write_join(
        self: Arc<Self>,
        store: Store,
        key: Key,
        member: Member,
        overflow: Option<Arc<Overflow>>,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) {
        let Some(shared) = &self.shared else { return };
        let joined = store
            .room_join(&shared.instance, &key, &member.peer_id, &member.to_json())
            .await;
        // Sends that waited for the join go on once the seat is set (below).
        let _turn = turn;
        match joined {
            Ok(Some((seq, roster))) => {
                self.with(|rooms| {
                    // Gone already (the member left while it was being written):
                    // its leave follows the join.
                    let Some(seat) = rooms
                        .get_mut(&key)
                        .and_then(|r| r.seats.get_mut(&member.peer_id))
                    else {
                        return;
                    };
                    seat.from = seq;
                    let sync = self.presence(
                        &key.1,
                        &member,
                        json!({ "event": "sync", "members": roster }),
                    );
                    // A fresh channel has room for it, however large the roster.
                    seat.waiting.fetch_add(sync.size, Ordering::SeqCst);
                    let _ = seat.events.try_send(sync);
                });
                // Read the room now: events after the join may be waiting.
                store.wake_room(key);
            }
            // A fresh peer id is never a member already.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not record a room join; closing the member's connection");
                if let Some(o) = overflow {
                    o.raise();
                }
            }
        }
    }

    /// Reads room events for this instance's members for as long as it runs
    /// (abort it to stop): the rooms woken by writes and notifications, and
    /// every room it serves at least once a [`POLL`].
    pub async fn follow_rooms(self: Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let store = shared.store.clone();
        let mut last_poll = tokio::time::Instant::now();
        loop {
            let _ = tokio::time::timeout(POLL, store.room_woken()).await;
            let (mut all, woken) = store.take_room_wakes();
            if last_poll.elapsed() >= POLL {
                all = true;
                last_poll = tokio::time::Instant::now();
            }
            let served: Vec<Key> = self.with(|rooms| {
                rooms
                    .keys()
                    .filter(|k| all || woken.contains(*k))
                    .cloned()
                    .collect()
            });
            // A failed read is tried again at the poll.
            for key in served {
                while let Some(start) = self.read_from(&key) {
                    let rows = match store.room_events(&key, start, BATCH).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read room events; retrying");
                            break;
                        }
                    };
                    let behind = self.deliver_rows(&key, start, &rows);
                    if (rows.len() as i64) < BATCH && !behind {
                        break;
                    }
                }
            }
        }
    }

    /// Where a room's next read starts: the smallest cursor of its seated
    /// members (`None` when none is seated yet).
    fn read_from(&self, key: &Key) -> Option<i64> {
        self.with(|rooms| {
            rooms
                .get(key)?
                .seats
                .values()
                .map(|s| s.from)
                .filter(|&from| from != NOT_JOINED)
                .min()
        })
    }

    /// Hands `rows` (a room's events after seq `start`, in order) to each
    /// seated member whose cursor is at or past `start` (the rows continue
    /// it), those after its cursor. Says whether a seated member is still
    /// behind the rows (its join landed while they were read).
    fn deliver_rows(&self, key: &Key, start: i64, rows: &[RoomRow]) -> bool {
        let Some(newest) = rows.last().map(|r| r.seq) else {
            return false;
        };
        self.with(|rooms| {
            let Some(room) = rooms.get_mut(key) else {
                return false;
            };
            for row in rows {
                let mut e = event(
                    row.seq,
                    &key.1,
                    &row.kind,
                    &Member::from_json(&row.member),
                    row.payload.clone(),
                );
                if let Some(ev) = Arc::get_mut(&mut e) {
                    ev.at = row.at;
                }
                let e: Arc<RoomEvent> = e;
                room.deliver_shared(&e, start, self.max_member_bytes);
            }
            room.seats
                .values()
                .any(|s| s.from != NOT_JOINED && s.from < newest)
        })
    }

    /// Holds this instance's lease for as long as it runs (abort it to stop),
    /// takes out the members of instances whose lease lapsed, and prunes old
    /// room events.
    pub async fn keep_lease(self: Arc<Self>) {
        let Some(shared) = &self.shared else { return };
        let store = shared.store.clone();
        let heartbeat = shared.heartbeat;
        // Reaping (a dead instance may have had thousands of members) and
        // pruning on a task of their own: the renewal never waits for them.
        let reaper = ReaperTask(tokio::spawn(reap(store.clone(), heartbeat)));
        let lease = lease_seconds(heartbeat);
        // Twice a heartbeat: a lapsed instance (2 heartbeats without renewal)
        // is noticed within half a heartbeat more, well inside the 3 promised.
        let mut every = tokio::time::interval(heartbeat / 2);
        let mut rejoining: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            every.tick().await;
            match store.renew_lease(&shared.instance, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    if rejoining.as_ref().is_none_or(|j| j.is_finished()) {
                        rejoining = Some(tokio::spawn(self.clone().rejoin_all(store.clone())));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew this instance's lease"),
            }
            if reaper.0.is_finished() {
                return;
            }
        }
    }

    /// Takes a lease before serving.
    pub async fn start_lease(&self) -> Result<(), crate::store::StoreError> {
        if let Some(shared) = &self.shared {
            shared
                .store
                .renew_lease(&shared.instance, lease_seconds(shared.heartbeat))
                .await?;
        }
        Ok(())
    }

    /// Gives up the lease and this instance's members (at shutdown).
    pub async fn end_lease(&self) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.store.end_lease(&shared.instance).await
        {
            tracing::warn!(error = %e, "could not give up this instance's lease");
        }
    }

    /// After a lapsed lease (the database was out of reach for two
    /// heartbeats, and another instance took this one's members out): join
    /// every member here again. Their rooms hear a leave and a join.
    async fn rejoin_all(self: Arc<Self>, store: Store) {
        let Some(shared) = &self.shared else { return };
        tracing::warn!("this instance's lease had lapsed; joining its room members again");
        let seated: Vec<(Key, Member)> = self.with(|rooms| {
            rooms
                .iter()
                .flat_map(|(k, r)| {
                    r.seats
                        .values()
                        .filter(|s| s.from != NOT_JOINED)
                        .map(move |s| (k.clone(), s.member.clone()))
                })
                .collect()
        });
        for (key, member) in seated {
            match store
                .room_join(&shared.instance, &key, &member.peer_id, &member.to_json())
                .await
            {
                // A member that left meanwhile found nothing to leave: take it
                // out now, or nobody would (its seat is gone).
                Ok(Some(_)) => {
                    let seated = self.with(|rooms| {
                        rooms
                            .get(&key)
                            .is_some_and(|r| r.seats.contains_key(&member.peer_id))
                    });
                    if !seated
                        && let Err(e) = store
                            .room_leave(&key.0, &key.1, &member.peer_id, false)
                            .await
                    {
                        tracing::warn!(error = %e, "could not record a room leave");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not join a member again"),
            }
        }
    }
}

/// Takes the members of lapsed instances out of their rooms twice a heartbeat,
/// and prunes old room events now and then.
async fn reap(store: Store, heartbeat: Duration) {
    let mut every = tokio::time::interval(heartbeat / 2);
    let mut beats = 0u64;
    loop {
        every.tick().await;
        match store.reap_lapsed().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                members = n,
                "took the members of a lapsed instance out of their rooms"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot reap lapsed instances"),
        }
        beats += 1;
        if beats.is_multiple_of(120) {
            let _ = store.prune_room_events().await;
        }
    }
}

/// Aborts the reaper when the lease keeper ends.
struct ReaperTask(tokio::task::JoinHandle<()>);

impl Drop for ReaperTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease lasts two heartbeats (whole seconds, at least one).
fn lease_seconds(heartbeat: Duration) -> i64 {
    ((heartbeat * 2).as_secs_f64().ceil() as i64).max(1)
}
