//! One GraphQL operation on a streaming transport (WebSocket, SSE): its results
//! as ready-to-send JSON payloads, whatever the operation is.
//!
//! Queries and mutations run through the executor as on HTTP. A subscription
//! field hands its feed over (see [`crate::graphql::Handoff`]) and each event is
//! rendered once per group of equivalent subscriptions: same document, operation
//! name and variables, same account, and, when the selection reaches `ref`
//! objects, the same viewer. The group executes the operation again with the
//! event pinned and every member sends the same bytes. This keeps the per-subscriber
//! cost of an event to an access check and a frame, whatever the selection.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value as Json};

use crate::access::{Role, Viewer};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::graphql::{Handoff, Live, Pinned, RequestCtx, guard};
use crate::realtime::rooms::Peers;
use crate::realtime::{FeedError, Overflow, Selection, visible};
use crate::server::AppState;
use crate::store::Change;

/// An operation as a client sent it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpRequest {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Json>,
    pub extensions: Map<String, Json>,
}

/// What an operation produces, in order.
#[derive(Debug, Clone)]
pub enum OpEvent {
    /// A result: the JSON `payload` (`data`, and `errors` if any); `cursor` is the
    /// event's resume cursor for subscription events.
    Next {
        payload: Arc<str>,
        cursor: Option<i64>,
    },
    /// The operation failed before executing (invalid document, bad variables):
    /// coded GraphQL errors. Nothing follows.
    Failed(Vec<Json>),
    /// No more results.
    End,
}

/// Who runs the operation, and on which connection.
#[derive(Clone)]
pub struct Origin {
    pub viewer: Viewer,
    pub client_ip: Option<IpAddr>,
    /// Raised when one of the connection's feeds falls behind.
    pub overflow: Arc<Overflow>,
    /// Where a subscription resumes, when the transport says (SSE `Last-Event-ID`).
    pub resume_after: Option<i64>,
    /// The connection's room memberships (`sendToRoom` over it speaks as them).
    pub peers: Option<Arc<Peers>>,
    /// Where a live subscription's results may go straight from its group
    /// (see [`DirectOut`]); `None` to stream them through the operation.
    pub direct: Option<Direct>,
}

/// A connection that takes results straight from a subscription group's
/// dispatcher: one task per group receives each change from the bus, renders
/// it once and hands the bytes to every member that may see it, instead of
/// waking a task per subscriber to do the same (at a thousand subscribers per
/// event that wake-up chain cost as much as everything but the kernel's send).
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

/// Whether `request` takes one of the connection's subscription slots: a
/// subscription or a live query (`query @live`) holds its slot until it ends; a
/// query or mutation finishes on its own and never does, so a socket full of
/// subscriptions can still read and write. A document whose operation cannot be
/// told (it does not parse, or names no operation it has) counts, so nothing
/// unknown slips past the limit; it fails at once and frees its slot.
pub fn counts_as_subscription(request: &OpRequest) -> bool {
    use async_graphql::parser::types::OperationType;
    // Never parse what the guard would refuse (the parser recurses on nesting).
    let nesting = crate::graphql::Limits::default().max_nesting;
    if guard::document(&request.query, usize::MAX, nesting).is_err() {
        return true;
    }
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return true;
    };
    match guard::selected(&doc, request.operation_name.as_deref()).map(|op| &op.node) {
        Some(op) if op.ty == OperationType::Mutation => false,
        Some(op) if op.ty == OperationType::Query => op
            .directives
            .iter()
            .any(|d| d.node.name.node.as_str() == "live"),
        _ => true,
    }
}

/// Queries and mutations one connection may have running at once (they hold no
/// subscription slot, but each holds memory and a database connection while it
/// waits); past that an operation is refused with `RATE_LIMITED`.
pub const MAX_IN_FLIGHT: usize = 32;

/// The error of an operation refused for [`MAX_IN_FLIGHT`].
pub fn too_many_in_flight() -> Json {
    serde_json::json!({
        "message": format!("at most {MAX_IN_FLIGHT} queries and mutations may run at once on a connection"),
        "extensions": { "code": "RATE_LIMITED" }
    })
}

/// Runs `req` for `origin`. Polling the stream once starts a subscription's
/// feed (it is on the bus, or a member of its group, from then on).
pub fn execute(app: AppState, req: OpRequest, origin: Origin) -> BoxStream<'static, OpEvent> {
    let handoff = Arc::new(Handoff::new(origin.direct.is_some()));
    let mut ctx = RequestCtx::new(
        app.store().clone(),
        origin.viewer.clone(),
        app.auth().clone(),
        origin.client_ip,
    );
    ctx.overflow = Some(origin.overflow.clone());
    ctx.handoff = Some(handoff.clone());
    ctx.resume_after = origin.resume_after;
    ctx.peers = origin.peers.clone();
    let refused = refuse(&app, &req);
    let mut request = request(&req, ctx);
    // A document that does not parse is a request error of its own kind.
    let refused = refused.or_else(|| match request.parsed_query() {
        Err(e) => Some(coded(e, "GRAPHQL_PARSE_FAILED", &req.query)),
        Ok(doc) => guard::checked(doc, req.operation_name.as_deref(), app.limits())
            .err()
            .map(|m| {
                coded(
                    async_graphql::ServerError::new(m, None),
                    "GRAPHQL_VALIDATION_FAILED",
                    &req.query,
                )
            }),
    });
    // Nothing runs (and nothing recursive sees the document) once refused.
    let responses = match refused {
        Some(_) => futures_util::stream::empty().boxed(),
        None => app.schema().execute_stream(request),
    };
    async_stream::stream! {
        if let Some(errors) = refused {
            yield OpEvent::Failed(errors);
            return;
        }
        let mut responses = responses;
        let mut first = true;
        while let Some(response) = responses.next().await {
            match finish(&app, response, &req, first) {
                Ok(payload) => yield OpEvent::Next { payload: payload.into(), cursor: None },
                Err(errors) => { yield OpEvent::Failed(errors); return; }
            }
            first = false;
        }
        drop(responses);
        if let Some(feed) = handoff.take() {
            let group = app.renderings().group(&req, &origin.viewer, feed.viewer_dependent);
            if let (Some(direct), Some(live)) = (origin.direct.clone(), feed.live) {
                // Its group's dispatcher delivers from here on; this stream
                // holds the membership until the operation stops. From a
                // cursor, the changes up to the one the member joined at are
                // replayed here first, while the dispatcher holds back what it
                // has for the member.
                let after = live.after;
                let (selection, viewer) = (live.selection.clone(), live.viewer.clone());
                let member = group.join(&app, live, direct, origin.overflow.clone());
                if let Some(after) = after {
                    let mut replayed = Box::pin(crate::realtime::replay(
                        app.store().clone(),
                        app.catalog().clone(),
                        viewer,
                        selection,
                        after,
                        member.joined_at(),
                    ));
                    while let Some(item) = replayed.next().await {
                        match item {
                            Ok(change) => {
                                let seq = change.seq;
                                let payload = group.render(&app, seq, Pinned::Change(change)).await;
                                yield OpEvent::Next { payload, cursor: Some(seq) };
                            }
                            Err(e) => {
                                drop(member);
                                let payload = group.render_pinned(&app, Pinned::Error(e)).await;
                                yield OpEvent::Next { payload, cursor: None };
                                yield OpEvent::End;
                                return;
                            }
                        }
                    }
                    // Polled again: the transport has taken every replayed
                    // result, so what was held follows them.
                    member.release();
                }
                std::future::pending::<()>().await;
                return;
            }
            let mut events = feed.stream;
            while let Some(item) = events.next().await {
                let (key, cursor) = match &item {
                    Pinned::Change(change) => (change.seq, Some(change.seq)),
                    Pinned::Room(event) => (event.id, None),
                    // The connection closes (1013, or the SSE stream ends) and the
                    // client resumes from the last cursor it got.
                    Pinned::Error(FeedError::Overflow) => return,
                    Pinned::Error(_) => {
                        let payload = group.render_pinned(&app, item).await;
                        yield OpEvent::Next { payload, cursor: None };
                        break;
                    }
                };
                let payload = group.render(&app, key, item).await;
                yield OpEvent::Next { payload, cursor };
            }
        }
        yield OpEvent::End;
    }
    .boxed()
}

/// The coded errors of a document refused before parsing (too large, nested too
/// deep), if it is.
fn refuse(app: &AppState, req: &OpRequest) -> Option<Vec<Json>> {
    let limits = app.limits();
    guard::document(&req.query, limits.max_document_bytes, limits.max_nesting)
        .err()
        .map(|e| {
            coded(
                async_graphql::ServerError::new(e.0, None),
                "GRAPHQL_PARSE_FAILED",
                &req.query,
            )
        })
}

fn coded(mut e: async_graphql::ServerError, code: &str, query: &str) -> Vec<Json> {
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    super::http::coded_errors(&[e], query, true)
}

fn request(req: &OpRequest, ctx: RequestCtx) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(req.query.clone())
        .variables(async_graphql::Variables::from_json(Json::Object(
            req.variables.clone(),
        )))
        .data(ctx);
    if let Some(name) = &req.operation_name {
        request = request.operation_name(name);
    }
    request.extensions =
        serde_json::from_value(Json::Object(req.extensions.clone())).unwrap_or_default();
    request
}

/// Turns an executed response into its payload, every error coded; a request
/// error (the first response, nothing executed) comes back as its errors.
fn finish(
    app: &AppState,
    mut response: async_graphql::Response,
    req: &OpRequest,
    first: bool,
) -> Result<String, Vec<Json>> {
    let request_error = first
        && !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.is_empty());
    if request_error {
        return Err(super::http::coded_errors(
            &response.errors,
            &req.query,
            true,
        ));
    }
    if !response.errors.is_empty() {
        if let Ok(doc) = async_graphql::parser::parse_query(req.query.as_str()) {
            crate::graphql::complete(
                app.schema().registry(),
                &doc,
                req.operation_name.as_deref(),
                &mut response,
            );
        }
        let errors = super::http::coded_errors(&response.errors, &req.query, false);
        response.errors = serde_json::from_value(Json::Array(errors)).unwrap_or_default();
    }
    serde_json::to_string(&Payload {
        data: &response.data,
        errors: &response.errors,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "cannot serialize a result");
        vec![serde_json::json!({
            "message": "Internal server error",
            "extensions": { "code": "INTERNAL" }
        })]
    })
}

/// The `payload` of a result: `data`, and `errors` when there are any.
#[derive(serde::Serialize)]
struct Payload<'a> {
    data: &'a async_graphql::Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
}

/// Rendered events kept per group, newest last: enough for subscribers that are
/// a little behind the others; one further behind renders again.
const KEPT_RENDERINGS: usize = 256;

/// What makes subscriptions equivalent: they render every event identically.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    query: String,
    operation_name: Option<String>,
    variables: String,
    account_id: String,
    /// The viewer, when the rendering depends on it.
    viewer: Option<(Option<String>, Role)>,
}

/// The live groups of equivalent subscriptions.
#[derive(Default)]
pub struct Renderings {
    groups: Mutex<HashMap<Arc<GroupKey>, Weak<Group>>>,
}

impl Renderings {
    /// The group of the subscription `req` of `viewer`, created if it is the first.
    fn group(
        self: &Arc<Self>,
        req: &OpRequest,
        viewer: &Viewer,
        viewer_dependent: bool,
    ) -> Arc<Group> {
        let key = Arc::new(GroupKey {
            query: req.query.clone(),
            operation_name: req.operation_name.clone(),
            variables: Json::Object(req.variables.clone()).to_string(),
            account_id: viewer.account_id.clone(),
            viewer: viewer_dependent.then(|| (viewer.user_id.clone(), viewer.role)),
        });
        let Ok(mut groups) = self.groups.lock() else {
            return Arc::new(Group::new(key, req, viewer, Weak::new()));
        };
        if let Some(group) = groups.get(&key).and_then(Weak::upgrade) {
            return group;
        }
        let group = Arc::new(Group::new(key.clone(), req, viewer, Arc::downgrade(self)));
        groups.insert(key, Arc::downgrade(&group));
        group
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
struct Group {
    key: Arc<GroupKey>,
    req: OpRequest,
    /// Renders for everyone in the group (the viewer itself when it matters).
    viewer: Viewer,
    recent: Mutex<VecDeque<(i64, Arc<str>)>>,
    owner: Weak<Renderings>,
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
struct Membership {
    group: Arc<Group>,
    member: Arc<Member>,
}

impl Membership {
    /// The seq the member joined at: it is delivered every change after it.
    fn joined_at(&self) -> i64 {
        self.member.from
    }

    /// Ends the hold: what the dispatcher kept back is sent, and from now on
    /// results go straight out.
    fn release(&self) {
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
    app: AppState,
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
        tokio::task::unconstrained(group.deliver(&app, &batch)).await;
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
    fn new(key: Arc<GroupKey>, req: &OpRequest, viewer: &Viewer, owner: Weak<Renderings>) -> Self {
        Group {
            key,
            req: OpRequest {
                extensions: Map::new(),
                ..req.clone()
            },
            viewer: viewer.clone(),
            recent: Mutex::new(VecDeque::new()),
            owner,
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
    fn join(
        self: &Arc<Self>,
        app: &AppState,
        live: Live,
        direct: Direct,
        overflow: Arc<Overflow>,
    ) -> Membership {
        let _ = self.selection.set(live.selection);
        let mut members = self.members();
        if !members.dispatching {
            members.dispatching = true;
            // Subscribed before `from` is read below: nothing falls between.
            let rx = app.store().subscribe();
            app.spawn_delivery(dispatch(
                app.clone(),
                Arc::downgrade(self),
                rx,
                self.stop.clone(),
            ));
        }
        let replaying = live.after.is_some();
        let member = Arc::new(Member {
            viewer: live.viewer,
            // A cursor is never past what was published; if it were, nothing
            // at or below it may come twice.
            from: app.store().published_seq().max(live.after.unwrap_or(0)),
            direct,
            active: AtomicBool::new(true),
            overflow,
            holding: AtomicBool::new(replaying),
            held: Mutex::new(replaying.then(Held::default)),
            limit: app.store().bus_capacity(),
            max_bytes: app.ws_config().max_buffer_bytes,
        });
        members.list.push(member.clone());
        Membership {
            group: self.clone(),
            member,
        }
    }

    /// Hands each change of `batch` to every member that may see it, each
    /// rendered once; a member's frames are written together.
    async fn deliver(self: &Arc<Self>, app: &AppState, batch: &[Arc<Change>]) {
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
                    if change.seq > m.from && visible(app.catalog(), &m.viewer, selection, change) {
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
                payloads[i] = Some(
                    self.render_pinned(app, Pinned::Change(change.clone()))
                        .await,
                );
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
    async fn render(self: &Arc<Self>, app: &AppState, seq: i64, item: Pinned) -> Arc<str> {
        // Alone in the group: nobody to share with, so keep nothing.
        let shared = Arc::strong_count(self) > 1;
        if shared && let Some(hit) = self.cached(seq) {
            return hit;
        }
        let payload = self.render_pinned(app, item).await;
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

    /// Executes the operation with `pinned` as its subscription field's one item.
    async fn render_pinned(&self, app: &AppState, pinned: Pinned) -> Arc<str> {
        let mut ctx = RequestCtx::new(
            app.store().clone(),
            self.viewer.clone(),
            app.auth().clone(),
            None,
        );
        ctx.pinned = Some(pinned);
        let mut responses = app.schema().execute_stream(request(&self.req, ctx));
        let payload = match responses.next().await {
            Some(response) => finish(app, response, &self.req, false),
            None => Err(vec![]),
        };
        match payload {
            Ok(p) => p.into(),
            Err(_) => {
                tracing::error!("a subscription event could not be rendered");
                r#"{"data":null,"errors":[{"message":"Internal server error","extensions":{"code":"INTERNAL"}}]}"#.into()
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(owner) = self.owner.upgrade()
            && let Ok(mut groups) = owner.groups.lock()
            && groups.get(&self.key).is_some_and(|g| g.strong_count() == 0)
        {
            groups.remove(&self.key);
        }
    }
}
