//! Rooms that span instances (PostgreSQL): this instance writes its members'
//! joins, leaves and messages to the database (`store::rooms`) and reads every
//! room event back, in each room's order, for its own members, whichever
//! instance wrote it. So members on A and B share one roster and hear each
//! other, and all of them see a room's events in the same order.
//!
//! A member's join is written on a task of its own: the member's seat waits
//! (its room is not read meanwhile, so it cannot miss an event after its join),
//! then gets the roster as of its join (`sync`) and every event after it.
//! The instance holds a lease renewed twice a heartbeat; an instance whose
//! lease lapsed (2 heartbeats) has its members taken out by the next instance
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
    ) {
        let Some(shared) = &self.shared else { return };
        let joined = store
            .room_join(&shared.instance, &key, &member.peer_id, &member.to_json())
            .await;
        self.with(|rooms| {
            let Some(room) = rooms.get_mut(&key) else {
                return;
            };
            room.joining = room.joining.saturating_sub(1);
            let Ok((seq, roster)) = &joined else { return };
            room.last.get_or_insert(*seq);
            if let Some(seat) = room.seats.get_mut(&member.peer_id) {
                seat.from = *seq;
                let sync = self.presence(
                    &key.1,
                    &member,
                    json!({ "event": "sync", "members": roster }),
                );
                // A fresh channel has room for it, however large the roster.
                seat.waiting.fetch_add(sync.size, Ordering::SeqCst);
                let _ = seat.events.try_send(sync);
            }
        });
        match joined {
            // Read the room now: events after the join may be waiting.
            Ok(_) => store.wake_room(key),
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
            }
            if all {
                last_poll = tokio::time::Instant::now();
            }
            let served: Vec<(Key, i64)> = self.with(|rooms| {
                rooms
                    .iter()
                    .filter(|(k, _)| all || woken.contains(*k))
                    .filter_map(|(k, r)| match (r.last, r.joining) {
                        (Some(last), 0) => Some((k.clone(), last)),
                        _ => None,
                    })
                    .collect()
            });
            // A room skipped while a member's join is written is read when
            // the join is done (it wakes the room); a failed read, at the poll.
            for (key, mut last) in served {
                loop {
                    let rows = match store.room_events(&key, last, BATCH).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read room events; retrying");
                            break;
                        }
                    };
                    let full = rows.len() as i64 == BATCH;
                    if let Some(newest) = rows.last().map(|r| r.seq) {
                        self.deliver_rows(&key, &rows);
                        last = newest;
                    }
                    if !full {
                        break;
                    }
                }
            }
        }
    }

    /// Hands `rows` (a room's events, in order) to the room's seated members.
    fn deliver_rows(&self, key: &Key, rows: &[RoomRow]) {
        self.with(|rooms| {
            let Some(room) = rooms.get_mut(key) else {
                return;
            };
            for row in rows {
                if room.last.is_some_and(|l| row.seq <= l) {
                    continue;
                }
                room.last = Some(row.seq);
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
                room.deliver(&e, None, self.max_member_bytes);
            }
        });
    }

    /// Holds this instance's lease for as long as it runs (abort it to stop),
    /// takes out the members of instances whose lease lapsed, and prunes old
    /// room events. `heartbeat` is the app's `heartbeat_seconds`.
    pub async fn keep_lease(self: Arc<Self>, heartbeat: Duration) {
        let Some(shared) = &self.shared else { return };
        let store = shared.store.clone();
        let lease = (heartbeat * 2).as_secs_f64().ceil() as i64;
        // Twice a heartbeat: a lapsed instance (2 heartbeats without renewal)
        // is noticed within half a heartbeat more, well inside the 3 promised.
        let mut every = tokio::time::interval(heartbeat / 2);
        let mut beats = 0u64;
        loop {
            every.tick().await;
            match store.renew_lease(&shared.instance).await {
                Ok(true) => {}
                Ok(false) => self.rejoin_all(&store).await,
                Err(e) => tracing::warn!(error = %e, "cannot renew this instance's lease"),
            }
            match store.reap_lapsed(lease).await {
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

    /// Takes a lease before serving.
    pub async fn start_lease(&self) -> Result<(), crate::store::StoreError> {
        if let Some(shared) = &self.shared {
            shared.store.renew_lease(&shared.instance).await?;
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
    async fn rejoin_all(&self, store: &Store) {
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
            if let Err(e) = store
                .room_join(&shared.instance, &key, &member.peer_id, &member.to_json())
                .await
            {
                tracing::warn!(error = %e, "could not join a member again");
            }
        }
    }
}
