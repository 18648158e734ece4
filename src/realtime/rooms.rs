//! Rooms: ephemeral messages between the members of a named room, and the live
//! roster of who is there. Nothing here is stored; chat history belongs in a
//! collection (the example app's `messages`).
//!
//! A member is one subscription (`room(name)`), with a `peerId` of its own, so
//! one user may be in a room from several tabs. Joining and leaving are tied to
//! the subscription's life: a [`Membership`] leaves when it is dropped, which
//! happens when the subscription completes, its connection closes, or its
//! connection is dropped for a missed heartbeat. A member's first event is the
//! roster (`presence` / `sync`); later joins and leaves arrive as `presence`
//! events to everyone else.
//!
//! Every event of a room is handed to each member under the room's lock, so all
//! members see the same order (and each sender's messages in the order sent).
//! Members have bounded buffers, in events and in bytes (an event's payload is
//! shared, but a member that stalls keeps every event since, however large the
//! roster or payloads): one that falls that far behind is not waited for; its
//! connection's [`Overflow`] is raised and it reconnects (and rejoins).
//! A room is freed with its last member. Rooms are per account: the key is
//! (account, name).

mod shared;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use futures_util::Stream;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use indexmap::IndexMap;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use super::{DEFAULT_MAX_BUFFER_BYTES, Overflow};
use crate::store::{RoomRow, Store, StoreError};

/// Events a member may have waiting before it counts as fallen behind.
pub const MEMBER_BUFFER: usize = 4096;

/// Who is (or speaks) in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub peer_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
}

impl Member {
    /// A member with a fresh peer id.
    pub fn new(user_id: Option<String>, email: Option<String>) -> Member {
        Member {
            peer_id: uuid::Uuid::now_v7().to_string(),
            user_id,
            email,
        }
    }

    /// As it appears in presence payloads.
    pub fn to_json(&self) -> Json {
        json!({ "peerId": self.peer_id, "userId": self.user_id, "email": self.email })
    }

    /// The inverse of [`Member::to_json`] (a member another instance wrote).
    pub fn from_json(j: &Json) -> Member {
        let text = |k: &str| j.get(k).and_then(Json::as_str).map(str::to_string);
        Member {
            peer_id: text("peerId").unwrap_or_default(),
            user_id: text("userId"),
            email: text("email"),
        }
    }
}

/// One event of a room, as every member receives it.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    /// Unique and increasing: renderings of it are shared under this key.
    pub id: i64,
    pub room: String,
    pub kind: String,
    pub payload: Option<Json>,
    pub from: Member,
    pub at: DateTime<Utc>,
    /// About what a member holds while the event waits for it, in bytes.
    pub size: usize,
}

struct Seat {
    member: Member,
    /// Shared rooms: the seq of the last room event this member got (at
    /// first its own join); it gets the room's events after it.
    /// [`NOT_JOINED`] while its join is being written.
    from: i64,
    events: mpsc::Sender<Arc<RoomEvent>>,
    /// Bytes of the events waiting in `events`.
    waiting: Arc<AtomicUsize>,
    overflow: Option<Arc<Overflow>>,
}

/// A member's events, as they come; each leaves its bytes off the member's
/// account when taken.
pub struct Inbox {
    events: mpsc::Receiver<Arc<RoomEvent>>,
    waiting: Arc<AtomicUsize>,
}

impl Inbox {
    fn taken(&self, event: Option<Arc<RoomEvent>>) -> Option<Arc<RoomEvent>> {
        if let Some(e) = &event {
            self.waiting.fetch_sub(e.size, Ordering::SeqCst);
        }
        event
    }

    /// The next event; `None` once the member left.
    pub async fn recv(&mut self) -> Option<Arc<RoomEvent>> {
        let event = self.events.recv().await;
        self.taken(event)
    }

    /// The next event if one waits.
    pub fn try_recv(&mut self) -> Option<Arc<RoomEvent>> {
        let event = self.events.try_recv().ok();
        self.taken(event)
    }
}

impl Stream for Inbox {
    type Item = Arc<RoomEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.events.poll_recv(cx).map(|event| this.taken(event))
    }
}

/// A seat whose join is not written yet (shared rooms).
const NOT_JOINED: i64 = i64::MAX;

#[derive(Default)]
struct Room {
    /// In order of joining: the roster's order (of this instance's members).
    seats: IndexMap<String, Seat>,
}

impl Room {
    /// Hands `event` to every member but `except`; a member whose buffer is
    /// full (in events, or past `max_bytes` with something waiting) is cut off
    /// (its connection closes and it rejoins).
    fn deliver(&self, event: &Arc<RoomEvent>, except: Option<&str>, max_bytes: usize) {
        for (peer, seat) in &self.seats {
            if Some(peer.as_str()) == except || seat.from >= event.id {
                continue;
            }
            // Counted before it is sent: the member may take it at once.
            let before = seat.waiting.fetch_add(event.size, Ordering::SeqCst);
            let fits = before == 0 || before + event.size <= max_bytes;
            if !fits || seat.events.try_send(event.clone()).is_err() {
                seat.waiting.fetch_sub(event.size, Ordering::SeqCst);
                if let Some(overflow) = &seat.overflow {
                    tracing::info!("a room member fell behind; closing its connection");
                    overflow.raise();
                }
            }
        }
    }

    /// Shared rooms: hands room event `event` (read after seq `start`) to
    /// each seated member whose cursor the read continues and that has not
    /// had it, moving its cursor; a member that falls behind is cut off as in
    /// [`Room::deliver`].
    fn deliver_shared(&mut self, event: &Arc<RoomEvent>, start: i64, max_bytes: usize) {
        for seat in self.seats.values_mut() {
            if seat.from == NOT_JOINED || seat.from < start || seat.from >= event.id {
                continue;
            }
            seat.from = event.id;
            let before = seat.waiting.fetch_add(event.size, Ordering::SeqCst);
            let fits = before == 0 || before + event.size <= max_bytes;
            if !fits || seat.events.try_send(event.clone()).is_err() {
                seat.waiting.fetch_sub(event.size, Ordering::SeqCst);
                if let Some(overflow) = &seat.overflow {
                    tracing::info!("a room member fell behind; closing its connection");
                    overflow.raise();
                }
            }
        }
    }

    fn roster(&self) -> Vec<Json> {
        self.seats.values().map(|s| s.member.to_json()).collect()
    }
}

type Key = (String, String);

/// Every live room of every account.
pub struct Rooms {
    rooms: Mutex<HashMap<Key, Room>>,
    /// Bytes of events a member may have waiting (one event always may).
    max_member_bytes: usize,
    /// The id of the next event.
    next_id: AtomicI64,
    /// Message-rate limiters, one per rate (rules may differ by room pattern).
    limiters: Mutex<HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// Rooms that span instances (PostgreSQL): `None` keeps them in this process.
    shared: Option<Shared>,
}

/// What rooms that span instances need: the store, and this instance's name
/// for its lease.
struct Shared {
    store: Store,
    instance: String,
    /// The app's heartbeat: the lease is renewed twice a heartbeat and lasts two.
    heartbeat: std::time::Duration,
    /// One turn at a time per sending member, taken in the order its sends
    /// began (tokio's mutex is fair): each sender's messages are written, and
    /// so heard, in the order sent, although each waits for the database.
    senders: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::new(DEFAULT_MAX_BUFFER_BYTES)
    }
}

/// A member's place in a room; leaving when dropped.
pub struct Membership {
    rooms: Arc<Rooms>,
    key: Key,
    pub member: Member,
    peers: Option<Arc<Peers>>,
    /// Shared rooms: the task writing the join (the leave waits for it).
    joining: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(peers) = &self.peers {
            peers.remove(&self.member.peer_id);
        }
        self.rooms.leave(&self.key, &self.member.peer_id);
        if let Some(shared) = &self.rooms.shared {
            let (store, key, peer) = (
                shared.store.clone(),
                self.key.clone(),
                self.member.peer_id.clone(),
            );
            let joining = self.joining.take();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Some(j) = joining {
                        let _ = j.await;
                    }
                    if let Err(e) = store.room_leave(&key.0, &key.1, &peer, false).await {
                        // Its lease lapses with the instance, or it is reaped.
                        tracing::warn!(error = %e, "could not record a room leave");
                    }
                });
            }
        }
    }
}

/// The memberships held by one connection (a WebSocket, or a reserved SSE
/// stream), so that `sendToRoom` over it speaks as its member of that room.
#[derive(Default)]
pub struct Peers(Mutex<Vec<(Key, Member)>>);

impl Peers {
    fn add(&self, key: Key, member: Member) {
        if let Ok(mut peers) = self.0.lock() {
            peers.push((key, member));
        }
    }

    fn remove(&self, peer_id: &str) {
        if let Ok(mut peers) = self.0.lock() {
            peers.retain(|(_, m)| m.peer_id != peer_id);
        }
    }

    /// This connection's (first) member of room `name` of `account`.
    pub fn member_in(&self, account: &str, name: &str) -> Option<Member> {
        let peers = self.0.lock().ok()?;
        peers
            .iter()
            .find(|((a, n), _)| a == account && n == name)
            .map(|(_, m)| m.clone())
    }
}

fn event(id: i64, room: &str, kind: &str, from: &Member, payload: Option<Json>) -> Arc<RoomEvent> {
    // The payload (a roster can be large), plus what every event carries.
    let size = payload.as_ref().map_or(0, crate::values::json_len) + room.len() + kind.len() + 256;
    Arc::new(RoomEvent {
        size,
        id,
        room: room.to_string(),
        kind: kind.to_string(),
        payload,
        from: from.clone(),
        at: Utc::now(),
    })
}

impl Rooms {
    /// No rooms yet; a member may have `max_member_bytes` of events waiting.
    pub fn new(max_member_bytes: usize) -> Rooms {
        Rooms {
            rooms: Mutex::default(),
            max_member_bytes,
            next_id: AtomicI64::default(),
            limiters: Mutex::default(),
            shared: None,
        }
    }

    /// Rooms that span every instance on `store`'s database (see
    /// `store::rooms`): joins, leaves and messages are written there and read
    /// back by each instance for its own members, in the room's order.
    pub fn shared(max_member_bytes: usize, store: Store, heartbeat: std::time::Duration) -> Rooms {
        Rooms {
            shared: Some(Shared {
                store,
                instance: uuid::Uuid::now_v7().to_string(),
                heartbeat,
                senders: Arc::default(),
            }),
            // Local ids (a `sync`) count down from -1: room events' seqs are positive.
            next_id: AtomicI64::new(-1),
            ..Rooms::new(max_member_bytes)
        }
    }

    fn next_id(&self) -> i64 {
        if self.shared.is_some() {
            self.next_id.fetch_sub(1, Ordering::Relaxed)
        } else {
            self.next_id.fetch_add(1, Ordering::Relaxed)
        }
    }

    fn presence(&self, room: &str, from: &Member, payload: Json) -> Arc<RoomEvent> {
        event(self.next_id(), room, "presence", from, Some(payload))
    }
}

impl Rooms {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Key, Room>) -> T) -> T {
        match self.rooms.lock() {
            Ok(mut rooms) => f(&mut rooms),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Joins `member` to room `name` of `account`: the receiver starts with the
    /// roster (`sync`), and everyone else hears of the join.
    pub fn join(
        self: &Arc<Self>,
        account: &str,
        name: &str,
        member: Member,
        overflow: Option<Arc<Overflow>>,
        peers: Option<Arc<Peers>>,
    ) -> (Membership, Inbox) {
        let key = (account.to_string(), name.to_string());
        let (tx, rx) = mpsc::channel(MEMBER_BUFFER);
        let waiting = Arc::new(AtomicUsize::new(0));
        if let Some(shared) = &self.shared {
            self.with(|rooms| {
                let room = rooms.entry(key.clone()).or_default();
                room.seats.insert(
                    member.peer_id.clone(),
                    Seat {
                        member: member.clone(),
                        from: NOT_JOINED,
                        events: tx.clone(),
                        waiting: waiting.clone(),
                        overflow: overflow.clone(),
                    },
                );
            });
            // The member's sending turn, held until its join is written: a
            // message it sends at once is written after its join, as on one
            // instance (a fresh peer's turn is free).
            let turn = {
                let mut s = shared.senders.lock().unwrap_or_else(|e| e.into_inner());
                s.entry(member.peer_id.clone()).or_default().clone()
            };
            let held = turn.try_lock_owned().ok();
            let joining = tokio::spawn(self.clone().write_join(
                shared.store.clone(),
                key.clone(),
                member.clone(),
                overflow,
                held,
            ));
            if let Some(peers) = &peers {
                peers.add(key.clone(), member.clone());
            }
            let membership = Membership {
                rooms: self.clone(),
                key,
                member,
                peers,
                joining: Some(joining),
            };
            return (
                membership,
                Inbox {
                    events: rx,
                    waiting,
                },
            );
        }
        self.with(|rooms| {
            let room = rooms.entry(key.clone()).or_default();
            room.seats.insert(
                member.peer_id.clone(),
                Seat {
                    member: member.clone(),
                    from: i64::MIN,
                    events: tx.clone(),
                    waiting: waiting.clone(),
                    overflow,
                },
            );
            let sync = self.presence(
                name,
                &member,
                json!({ "event": "sync", "members": room.roster() }),
            );
            // A fresh channel has room for it, however large the roster.
            waiting.fetch_add(sync.size, Ordering::SeqCst);
            let _ = tx.try_send(sync);
            let join = self.presence(
                name,
                &member,
                json!({ "event": "join", "member": member.to_json() }),
            );
            room.deliver(&join, Some(&member.peer_id), self.max_member_bytes);
        });
        if let Some(peers) = &peers {
            peers.add(key.clone(), member.clone());
        }
        let membership = Membership {
            rooms: self.clone(),
            key,
            member,
            peers,
            joining: None,
        };
        (
            membership,
            Inbox {
                events: rx,
                waiting,
            },
        )
    }

    fn leave(&self, key: &Key, peer: &str) {
        self.with(|rooms| {
            let Some(room) = rooms.get_mut(key) else {
                return;
            };
            let Some(seat) = room.seats.shift_remove(peer) else {
                return;
            };
            if room.seats.is_empty() {
                rooms.remove(key);
                return;
            }
            if self.shared.is_some() {
                // The leave is written, and read back in the room's order.
                return;
            }
            let leave = self.presence(
                &key.1,
                &seat.member,
                json!({ "event": "leave", "member": seat.member.to_json() }),
            );
            room.deliver(&leave, None, self.max_member_bytes);
        });
    }

    /// Relays a message to every member of the room (the sender's own seat
    /// included). Returns whether anyone was there.
    pub async fn send(
        &self,
        account: &str,
        name: &str,
        kind: &str,
        payload: Option<Json>,
        from: Member,
    ) -> Result<bool, StoreError> {
        let key = (account.to_string(), name.to_string());
        if let Some(shared) = &self.shared {
            let (senders, store) = (shared.senders.clone(), shared.store.clone());
            let turn = {
                let mut s = senders.lock().unwrap_or_else(|e| e.into_inner());
                s.entry(from.peer_id.clone()).or_default().clone()
            };
            // Queued here, in the order the sends began; dropped unsent if
            // the request goes while it waits.
            let held = turn.clone().lock_owned().await;
            let (member, kind, peer) = (from.to_json(), kind.to_string(), from.peer_id.clone());
            // On a task of its own: a dropped request cannot cut the write short.
            let sent = tokio::spawn(async move {
                let sent = store.room_send(&key, &kind, payload, &member).await;
                drop(held);
                let mut s = senders.lock().unwrap_or_else(|e| e.into_inner());
                // The map's and ours: nobody else waits for a turn.
                if Arc::strong_count(&turn) == 2 {
                    s.remove(&peer);
                }
                sent
            })
            .await;
            return sent.map_err(|e| StoreError::Corrupt(format!("a room send failed: {e}")))?;
        }
        Ok(self.with(|rooms| match rooms.get(&key) {
            Some(room) => {
                let event = event(self.next_id(), name, kind, &from, payload);
                room.deliver(&event, None, self.max_member_bytes);
                true
            }
            None => false,
        }))
    }

    /// The roster of a room (empty when nobody is there).
    pub async fn members(&self, account: &str, name: &str) -> Result<Vec<Member>, StoreError> {
        let key = (account.to_string(), name.to_string());
        if let Some(shared) = &self.shared {
            let roster = shared.store.room_members(&key).await?;
            return Ok(roster.iter().map(Member::from_json).collect());
        }
        Ok(self.with(|rooms| {
            rooms
                .get(&key)
                .map(|r| r.seats.values().map(|s| s.member.clone()).collect())
                .unwrap_or_default()
        }))
    }

    /// Whether `sender` may send one more message at `per_second`.
    pub fn allow_message(&self, per_second: u32, sender: String) -> bool {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return false;
        };
        let limiter = {
            let mut limiters = match self.limiters.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            limiters
                .entry(rate)
                .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(rate))))
                .clone()
        };
        limiter.check_key(&sender).is_ok()
    }

    /// Forgets rate-limit state of senders that went quiet (and, for shared
    /// rooms, the turns of senders whose request went while it waited).
    pub fn forget_quiet_senders(&self) {
        if let Some(shared) = &self.shared {
            let mut s = shared.senders.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        if let Ok(limiters) = self.limiters.lock() {
            for l in limiters.values() {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }

    /// Live rooms (for tests and metrics).
    pub fn len(&self) -> usize {
        self.with(|r| r.len())
    }

    /// Whether no room is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member::new(Some(name.into()), Some(format!("{name}@test")))
    }

    #[tokio::test]
    async fn sync_join_message_leave_and_free() {
        let rooms = Arc::new(Rooms::default());
        let (a, mut ra) = rooms.join("acct", "r", member("a"), None, None);
        let sync = ra.recv().await.expect("sync");
        assert_eq!(sync.kind, "presence");
        assert_eq!(sync.payload.as_ref().expect("p")["event"], "sync");
        assert_eq!(
            sync.payload.as_ref().expect("p")["members"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let (b, mut rb) = rooms.join("acct", "r", member("b"), None, None);
        let sync_b = rb.recv().await.expect("sync");
        assert_eq!(
            sync_b.payload.as_ref().expect("p")["members"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let join = ra.recv().await.expect("join");
        assert_eq!(join.payload.as_ref().expect("p")["event"], "join");
        assert_eq!(join.from, b.member);
        // Another account's room of the same name is another room.
        let (_c, mut rc) = rooms.join("other", "r", member("c"), None, None);
        assert_eq!(
            rc.recv().await.expect("sync").payload.as_ref().expect("p")["members"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert!(
            rooms
                .send("acct", "r", "chat", Some(json!("hi")), a.member.clone())
                .await
                .expect("send")
        );
        assert_eq!(ra.recv().await.expect("own message").kind, "chat");
        assert_eq!(rb.recv().await.expect("message").payload, Some(json!("hi")));
        assert!(rc.try_recv().is_none(), "nothing crosses accounts");
        drop(b);
        let leave = ra.recv().await.expect("leave");
        assert_eq!(leave.payload.as_ref().expect("p")["event"], "leave");
        assert_eq!(
            rooms.members("acct", "r").await.expect("members"),
            vec![a.member.clone()]
        );
        drop(a);
        assert_eq!(rooms.len(), 1, "only the other account's room is left");
    }

    #[tokio::test]
    async fn a_member_that_falls_behind_is_cut_off_without_holding_up_others() {
        let rooms = Arc::new(Rooms::default());
        let overflow = Arc::new(Overflow::default());
        let (slow, _never_read) =
            rooms.join("acct", "r", member("slow"), Some(overflow.clone()), None);
        let (_fast, mut fast_rx) = rooms.join("acct", "r", member("fast"), None, None);
        for i in 0..MEMBER_BUFFER + 10 {
            let _ = rooms
                .send("acct", "r", "n", Some(json!(i)), slow.member.clone())
                .await;
            // The fast member keeps up.
            while fast_rx.try_recv().is_some() {}
        }
        assert!(overflow.is_raised());
    }

    #[tokio::test]
    async fn a_member_holding_too_many_bytes_is_cut_off() {
        let rooms = Arc::new(Rooms::new(64 * 1024));
        let overflow = Arc::new(Overflow::default());
        let (slow, _never_read) =
            rooms.join("acct", "r", member("slow"), Some(overflow.clone()), None);
        let (_fast, mut fast_rx) = rooms.join("acct", "r", member("fast"), None, None);
        let big = json!("x".repeat(10 * 1024));
        // Six 10 KiB messages fit in 64 KiB; far fewer than the event bound.
        for _ in 0..6 {
            let _ = rooms
                .send("acct", "r", "n", Some(big.clone()), slow.member.clone())
                .await;
            while fast_rx.try_recv().is_some() {}
        }
        assert!(!overflow.is_raised(), "within its bytes");
        for _ in 0..2 {
            let _ = rooms
                .send("acct", "r", "n", Some(big.clone()), slow.member.clone())
                .await;
            while fast_rx.try_recv().is_some() {}
        }
        assert!(overflow.is_raised(), "past its bytes");
        // The member that reads keeps its account at zero, whatever it read.
        let _ = rooms
            .send("acct", "r", "n", Some(big.clone()), slow.member.clone())
            .await;
        assert!(fast_rx.try_recv().is_some());
        assert_eq!(fast_rx.waiting.load(Ordering::SeqCst), 0);
    }
}
