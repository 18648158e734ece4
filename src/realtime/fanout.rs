//! The fan-out engine: every live change subscription on this instance is a
//! member of a group of equivalent subscriptions (same document, operation name
//! and variables, same account, and, when the selection reaches `ref` objects,
//! the same viewer). One dispatcher task per group receives each change from
//! the store's bus (fed by the log follower, `store::follow`), renders it once
//! and hands the bytes to every member that may see it, instead of waking a task
//! per subscriber to do the same (at a thousand subscribers per event that
//! wake-up chain cost as much as everything but the kernel's send).
//!
//! The engine knows nothing of GraphQL or of protocols: a group renders through
//! the [`Render`] it was made with (the operation executed again with the event
//! [`Pinned`]), and a member's frames go to its connection through
//! [`DirectOut`]. A member that joins from a cursor catches up from the log
//! ([`Membership::catch_up`]) while the dispatcher holds back what it has for
//! it; [`Membership::release`] then sends what was held, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value as Json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::rooms::RoomEvent;
use super::{FeedError, Overflow, Selection, replay, visible};
use crate::access::{Role, Viewer};
use crate::catalog::Catalog;
use crate::store::{Change, Store};

/// What a subscription field yields, once, when an operation is executed to
/// render one event of its feed; also what a handed-over feed carries.
#[derive(Clone)]
pub enum Pinned {
    Change(Arc<Change>),
    Room(Arc<RoomEvent>),
    Error(FeedError),
}

/// What a change subscription selects, for whom, and where it starts: what a
/// subscription field hands over to be delivered by its group.
pub struct Live {
    pub selection: Selection,
    pub viewer: Viewer,
    /// Replay the changes after this cursor first.
    pub after: Option<i64>,
}

/// Renders one event for a group: its operation executed with the event pinned.
pub trait Render: Send + Sync {
    /// The JSON payload of `item` (a rendering that fails is an error payload).
    fn render(&self, item: Pinned) -> BoxFuture<'_, Arc<str>>;
}

/// A connection that takes results straight from a group's dispatcher.
pub trait DirectOut: Send + Sync {
    /// Sends each of `results` (a change's cursor and its payload) as a result
    /// of operation `id`, in order, unless `active` is off; never waits (what
    /// the connection cannot take now is queued in order).
    fn next(&self, id: &str, active: &AtomicBool, results: &[(i64, &Arc<str>)]);
    /// Turns `active` off: no result of it is sent after this returns.
    fn retire(&self, active: &AtomicBool);
}

/// Where one operation's results go directly.
#[derive(Clone)]
pub struct Direct {
    pub out: Arc<dyn DirectOut>,
    pub id: Arc<str>,
}

/// Where realtime tasks (connections, group dispatchers) run: a runtime of
/// their own once the server sets one, the current one before; tracked, so
/// that shutdown can wait for them to finish.
#[derive(Default)]
pub struct Deliveries {
    runtime: OnceLock<tokio::runtime::Handle>,
    tracker: TaskTracker,
}

impl Deliveries {
    /// Runs what is spawned from now on on `runtime`.
    pub fn set_runtime(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// Runs `task` on the delivery runtime.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let runtime = self.runtime.get().cloned();
        let runtime = runtime.unwrap_or_else(tokio::runtime::Handle::current);
        self.tracker.spawn_on(task, &runtime);
    }

    /// The tasks spawned (to close and wait for at shutdown).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

/// What a catching-up member is sent: a replayed change's cursor and payload,
/// or (last) the error that ends its subscription.
pub type CaughtUp = Result<(i64, Arc<str>), FeedError>;

/// Rendered events kept per group, newest last: enough for subscribers that are
/// a little behind the others; one further behind renders again.
const KEPT_RENDERINGS: usize = 256;

/// What makes subscriptions equivalent: they render every event identically.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GroupKey {
    query: String,
    operation_name: Option<String>,
    variables: String,
    account_id: String,
    /// The viewer (user, role, and the email its token carries, which `me`
    /// shows), when the rendering depends on it.
    viewer: Option<(Option<String>, Role, Option<String>)>,
}

impl GroupKey {
    /// The key of operation `query` (`operation_name`, `variables`) of `viewer`;
    /// `viewer_dependent` when its rendering depends on who views it.
    pub fn new(
        query: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Json>,
        viewer: &Viewer,
        viewer_dependent: bool,
    ) -> GroupKey {
        GroupKey {
            query: query.to_owned(),
            operation_name: operation_name.map(str::to_owned),
            variables: Json::Object(variables.clone()).to_string(),
            account_id: viewer.account_id.clone(),
            viewer: viewer_dependent
                .then(|| (viewer.user_id.clone(), viewer.role, viewer.email.clone())),
        }
    }
}

/// The live groups of equivalent subscriptions on this instance.
pub struct Fanout {
    groups: Mutex<HashMap<Arc<GroupKey>, Weak<Group>>>,
    store: Store,
    catalog: Arc<Catalog>,
    deliveries: Arc<Deliveries>,
    /// At most this many bytes held for a catching-up member (one frame always may be).
    max_buffer_bytes: usize,
}

impl Fanout {
    /// The engine over `store`'s bus; dispatchers run on `deliveries`.
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        deliveries: Arc<Deliveries>,
        max_buffer_bytes: usize,
    ) -> Fanout {
        Fanout {
            groups: Mutex::default(),
            store,
            catalog,
            deliveries,
            max_buffer_bytes,
        }
    }

    /// The group of `key`, created (rendering through `renderer()`) if it is
    /// the first.
    pub fn group(
        self: &Arc<Self>,
        key: GroupKey,
        renderer: impl FnOnce() -> Box<dyn Render>,
    ) -> Arc<Group> {
        let key = Arc::new(key);
        let existing =
            |groups: &HashMap<Arc<GroupKey>, Weak<Group>>| groups.get(&key).and_then(Weak::upgrade);
        if let Some(group) = self.groups.lock().ok().and_then(|g| existing(&g)) {
            return group;
        }
        // Made outside the lock (it copies the document); another subscriber
        // may have made the group meanwhile.
        let made = Arc::new(Group::new(key.clone(), renderer(), self.clone()));
        let Ok(mut groups) = self.groups.lock() else {
            return made;
        };
        if let Some(group) = existing(&groups) {
            return group;
        }
        groups.insert(key, Arc::downgrade(&made));
        made
    }

    /// Live groups (for tests and metrics).
    pub fn len(&self) -> usize {
        self.groups.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Whether no group is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Equivalent subscriptions, sharing their rendered events.
pub struct Group {
    key: Arc<GroupKey>,
    /// Renders for everyone in the group (as the viewer itself when it matters).
    renderer: Box<dyn Render>,
    recent: Mutex<VecDeque<(i64, Arc<str>)>>,
    fanout: Arc<Fanout>,
    /// Members delivered to directly, and whether the dispatcher runs.
    members: Mutex<Members>,
    /// What every member selects (the same document and variables).
    selection: OnceLock<Selection>,
    /// Stops the dispatcher when the group goes.
    stop: CancellationToken,
}

#[derive(Default)]
struct Members {
    list: Vec<Arc<Member>>,
    dispatching: bool,
}

/// A change's cursor and its payload for a group.
type Rendered = (i64, Arc<str>);

/// A subscription delivered to by its group's dispatcher.
struct Member {
    viewer: Viewer,
    /// Changes up to this seq were published before it joined.
    from: i64,
    /// The cursor it joined from, if any (it catches up from there to `from`).
    after: Option<i64>,
    direct: Direct,
    active: AtomicBool,
    overflow: Arc<Overflow>,
    /// Set while the member replays from its cursor.
    holding: AtomicBool,
    /// What the dispatcher had for it meanwhile (`Some` while holding).
    held: Mutex<Option<Held>>,
    /// At most this many frames held: more raises its overflow.
    limit: usize,
    /// At most this many bytes held (one frame always may be).
    max_bytes: usize,
}

/// Frames kept back for a replaying member, and their bytes.
#[derive(Default)]
struct Held {
    frames: Vec<Rendered>,
    bytes: usize,
}

/// A member's place in its group; leaving it (dropping) stops its results.
pub struct Membership {
    group: Arc<Group>,
    member: Arc<Member>,
}

impl Membership {
    /// The seq the member joined at: it is delivered every change after it.
    pub fn joined_at(&self) -> i64 {
        self.member.from
    }

    /// For a member that joined from a cursor: the changes after it up to
    /// where the member joined, from the log, rendered for it, while the
    /// dispatcher holds back what it has for the member; an error (an expired
    /// cursor, a failing store) ends it. Nothing for a member that joined
    /// without a cursor. Call [`release`](Self::release) once the connection
    /// has taken them all.
    pub fn catch_up(&self) -> impl Stream<Item = CaughtUp> + Send + 'static {
        let group = self.group.clone();
        let viewer = self.member.viewer.clone();
        let through = self.member.from;
        let after = self.member.after;
        async_stream::stream! {
            let (Some(after), Some(selection)) = (after, group.selection.get().cloned()) else {
                return;
            };
            let fanout = &group.fanout;
            let mut replayed = Box::pin(replay(
                fanout.store.clone(),
                fanout.catalog.clone(),
                viewer,
                selection,
                after,
                through,
            ));
            while let Some(item) = replayed.next().await {
                match item {
                    Ok(change) => {
                        let seq = change.seq;
                        yield Ok((seq, group.render(seq, Pinned::Change(change)).await));
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
        }
    }

    /// Ends the hold: what the dispatcher kept back is sent, and from now on
    /// results go straight out (nothing to do for a member not holding).
    pub fn release(&self) {
        let mut held = self.member.held();
        if let Some(Held { frames, .. }) = held.take() {
            let frames: Vec<(i64, &Arc<str>)> = frames.iter().map(|(c, f)| (*c, f)).collect();
            let d = &self.member.direct;
            d.out.next(&d.id, &self.member.active, &frames);
        }
        self.member.holding.store(false, Ordering::SeqCst);
    }
}

impl Member {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `frames` back if the member is replaying; false if it is not.
    fn hold(&self, frames: &[(i64, &Arc<str>)]) -> bool {
        if !self.holding.load(Ordering::SeqCst) {
            return false;
        }
        let mut held = self.held();
        let Some(held) = held.as_mut() else {
            return false;
        };
        let bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
        let alone = held.frames.is_empty() && frames.len() == 1;
        if self.overflow.is_raised() {
            // Its connection is closing: nothing more is kept for it.
            *held = Held::default();
        } else if held.frames.len() + frames.len() > self.limit
            || (!alone && held.bytes + bytes > self.max_bytes)
        {
            // Its connection closes and the client resumes from its cursor.
            *held = Held::default();
            self.overflow.raise();
        } else {
            held.bytes += bytes;
            held.frames
                .extend(frames.iter().map(|(c, f)| (*c, Arc::clone(f))));
        }
        true
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.member.direct.out.retire(&self.member.active);
        let mut members = self.group.members();
        if let Some(at) = members
            .list
            .iter()
            .position(|m| Arc::ptr_eq(m, &self.member))
        {
            members.list.swap_remove(at);
        }
    }
}

/// Members a dispatcher writes to before letting other tasks of its runtime run.
const DELIVERIES_IN_A_ROW: usize = 512;

/// Changes a dispatcher takes from the bus at once (at most 64: one bit each).
const BATCH: usize = 64;

/// Should a dispatcher ever stop by panicking, its members' connections close
/// (their clients resume from their cursors) and the next member to join
/// starts another dispatcher, instead of the group going silent.
struct Watch(Weak<Group>);

impl Drop for Watch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(group) = self.0.upgrade()
        {
            tracing::error!(
                "a subscription group's dispatcher failed; closing its members' connections"
            );
            let mut members = group.members();
            members.dispatching = false;
            for member in &members.list {
                member.overflow.raise();
            }
        }
    }
}

/// A group's dispatcher: its one bus receiver, feeding every member.
async fn dispatch(
    group: Weak<Group>,
    mut rx: broadcast::Receiver<Arc<Change>>,
    stop: CancellationToken,
) {
    let _watch = Watch(group.clone());
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = rx.recv() => received,
        };
        let Some(group) = group.upgrade() else {
            return;
        };
        let mut batch = Vec::new();
        let mut lagged = None;
        match received {
            Ok(change) => batch.push(change),
            Err(broadcast::error::RecvError::Lagged(missed)) => lagged = Some(missed),
            Err(broadcast::error::RecvError::Closed) => return,
        }
        // Whatever else is waiting goes out with it: each member's frames leave
        // together, one socket at a time (writing event by event to every
        // socket in turn cost half the throughput of a burst).
        while lagged.is_none() && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(change) => batch.push(change),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => lagged = Some(missed),
                Err(_) => break,
            }
        }
        // Unconstrained: once tokio's cooperative budget (128 operations per
        // poll) ran out, every further write would report "not now" and leave
        // its frame to the member's task, which is exactly the wake-up this
        // path exists to avoid. It yields on its own instead.
        tokio::task::unconstrained(group.deliver(&batch)).await;
        if let Some(missed) = lagged {
            // Its members cannot be told what they missed: close their
            // connections (1013) so that they resume from their cursors.
            tracing::info!(
                missed,
                "a subscription group fell behind; closing its members' connections so they resume"
            );
            for member in &group.members().list {
                member.overflow.raise();
            }
        }
    }
}

impl Group {
    fn new(key: Arc<GroupKey>, renderer: Box<dyn Render>, fanout: Arc<Fanout>) -> Self {
        Group {
            key,
            renderer,
            recent: Mutex::new(VecDeque::new()),
            fanout,
            members: Mutex::default(),
            selection: OnceLock::new(),
            stop: CancellationToken::new(),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member delivered to directly, starting the dispatcher for the
    /// first. The member gets every change published after it joined.
    pub fn join(
        self: &Arc<Self>,
        live: Live,
        direct: Direct,
        overflow: Arc<Overflow>,
    ) -> Membership {
        let _ = self.selection.set(live.selection);
        let store = &self.fanout.store;
        let mut members = self.members();
        if !members.dispatching {
            members.dispatching = true;
            // Subscribed before `from` is read below: nothing falls between.
            let rx = store.subscribe();
            let dispatcher = dispatch(Arc::downgrade(self), rx, self.stop.clone());
            self.fanout.deliveries.spawn(dispatcher);
        }
        let replaying = live.after.is_some();
        let member = Arc::new(Member {
            viewer: live.viewer,
            // A cursor is never past what was published; if it were, nothing
            // at or below it may come twice.
            from: store.published_seq().max(live.after.unwrap_or(0)),
            after: live.after,
            direct,
            active: AtomicBool::new(true),
            overflow,
            holding: AtomicBool::new(replaying),
            held: Mutex::new(replaying.then(Held::default)),
            limit: store.bus_capacity(),
            max_bytes: self.fanout.max_buffer_bytes,
        });
        members.list.push(member.clone());
        Membership {
            group: self.clone(),
            member,
        }
    }

    /// Hands each change of `batch` to every member that may see it, each
    /// rendered once; a member's frames are written together.
    async fn deliver(self: &Arc<Self>, batch: &[Arc<Change>]) {
        let Some(selection) = self.selection.get() else {
            return;
        };
        // Which changes each member sees, one bit per change.
        let mut wanted = 0u64;
        let seeing: Vec<(Arc<Member>, u64)> = self
            .members()
            .list
            .iter()
            .filter_map(|m| {
                let mut mask = 0u64;
                for (i, change) in batch.iter().enumerate() {
                    if change.seq > m.from
                        && visible(&self.fanout.catalog, &m.viewer, selection, change)
                    {
                        mask |= 1 << i;
                    }
                }
                wanted |= mask;
                (mask != 0).then(|| (m.clone(), mask))
            })
            .collect();
        if seeing.is_empty() {
            return;
        }
        let mut payloads: Vec<Option<Arc<str>>> = vec![None; batch.len()];
        for (i, change) in batch.iter().enumerate() {
            if wanted & (1 << i) != 0 {
                payloads[i] = Some(self.render_pinned(Pinned::Change(change.clone())).await);
            }
        }
        let mut picked: Vec<(i64, &Arc<str>)> = Vec::with_capacity(batch.len());
        for (n, (m, mask)) in seeing.iter().enumerate() {
            if n > 0 && n % DELIVERIES_IN_A_ROW == 0 {
                tokio::task::yield_now().await;
            }
            picked.clear();
            picked.extend(
                payloads
                    .iter()
                    .zip(batch)
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .filter_map(|(_, (p, change))| Some((change.seq, p.as_ref()?))),
            );
            if m.hold(&picked) {
                continue;
            }
            m.direct.out.next(&m.direct.id, &m.active, &picked);
        }
    }

    /// The payload of `change` for this group: shared when another member
    /// rendered it already.
    pub async fn render(self: &Arc<Self>, seq: i64, item: Pinned) -> Arc<str> {
        // Alone in the group: nobody to share with, so keep nothing.
        let shared = Arc::strong_count(self) > 1;
        if shared && let Some(hit) = self.cached(seq) {
            return hit;
        }
        let payload = self.render_pinned(item).await;
        if shared && let Ok(mut recent) = self.recent.lock() {
            // Members render in nearly the same order; keep the list sorted.
            let at = recent.partition_point(|(s, _)| *s < seq);
            if recent.get(at).is_none_or(|(s, _)| *s != seq) {
                recent.insert(at, (seq, payload.clone()));
            }
            while recent.len() > KEPT_RENDERINGS {
                recent.pop_front();
            }
        }
        payload
    }

    fn cached(&self, seq: i64) -> Option<Arc<str>> {
        let recent = self.recent.lock().ok()?;
        let at = recent.partition_point(|(s, _)| *s < seq);
        recent
            .get(at)
            .filter(|(s, _)| *s == seq)
            .map(|(_, p)| p.clone())
    }

    /// The payload of `pinned` for this group, rendered now.
    pub async fn render_pinned(&self, pinned: Pinned) -> Arc<str> {
        self.renderer.render(pinned).await
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(mut groups) = self.fanout.groups.lock()
            && groups.get(&self.key).is_some_and(|g| g.strong_count() == 0)
        {
            groups.remove(&self.key);
        }
    }
}
