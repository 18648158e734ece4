//! One GraphQL operation on a streaming transport (WebSocket, SSE): its results
//! as ready-to-send JSON payloads, whatever the operation is.
//!
//! Queries and mutations run through the executor as on HTTP. A subscription
//! field hands its feed over (see [`crate::graphql::Handoff`]) and each event is
//! rendered once per group of equivalent subscriptions (see
//! [`crate::realtime::fanout`]): the group executes the operation again with the
//! event pinned ([`Renderer`]) and every member sends the same bytes. This keeps
//! the per-subscriber cost of an event to an access check and a frame, whatever
//! the selection.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value as Json};

use super::AppState;
use super::live::{Run, Runner, Snapshot};
use crate::access::Viewer;
use crate::graphql::live::{self as graphql_live, Live, Reads};
use crate::graphql::{Handoff, Pinned, RequestCtx, coded_errors, guard};
use crate::realtime::fanout::{Direct, GroupKey, Render};
use crate::realtime::rooms::Peers;
use crate::realtime::{FeedError, Overflow};

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
    /// (see [`crate::realtime::fanout::DirectOut`]); `None` to stream them
    /// through the operation.
    pub direct: Option<Direct>,
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
    // What `@live` asks for, if the operation is a live query.
    let mut live = None;
    let mut asked_live = None;
    // A document that does not parse is a request error of its own kind.
    // Parsed once per text (see `graphql::documents`).
    let refused = refused.or_else(|| match app.documents().parse(&req.query) {
        Err(e) => Some(coded(e, "GRAPHQL_PARSE_FAILED", &req.query)),
        Ok(doc) => {
            let verdict = guard::checked(&doc, req.operation_name.as_deref(), app.limits())
                .err()
                .map(|m| {
                    coded(
                        async_graphql::ServerError::new(m, None),
                        "GRAPHQL_VALIDATION_FAILED",
                        &req.query,
                    )
                });
            let op = guard::selected(&doc, req.operation_name.as_deref());
            let verdict = verdict.or_else(|| {
                match op.map(|op| graphql_live::live_of(&op.node, &req.variables)) {
                    Some(Err(m)) => Some(coded(
                        async_graphql::ServerError::new(m, None),
                        "BAD_USER_INPUT",
                        &req.query,
                    )),
                    Some(Ok(asked)) => {
                        asked_live = asked;
                        None
                    }
                    None => None,
                }
            });
            // `@live` is ours: the executor never sees it (see `graphql::live`).
            let doc = if op.is_some_and(|op| graphql_live::has_live(&op.node)) {
                graphql_live::without_live(&doc)
            } else {
                ExecutableDocument::clone(&doc)
            };
            if let Some(asked) = asked_live {
                live = Some((asked, Arc::new(doc.clone())));
            }
            request.set_parsed_query(doc);
            verdict
        }
    });
    if let (None, Some((asked, doc))) = (&refused, live) {
        return live_query(app, req, origin.viewer, asked, doc);
    }
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
            let key = GroupKey::new(
                &req.query,
                req.operation_name.as_deref(),
                &req.variables,
                &origin.viewer,
                feed.viewer_dependent,
            );
            let group = app.fanout().group(key, || {
                Box::new(Renderer::new(app.clone(), &req, origin.viewer.clone()))
            });
            if let (Some(direct), Some(live)) = (origin.direct.clone(), feed.live) {
                // Its group's dispatcher delivers from here on; this stream
                // holds the membership until the operation stops. From a
                // cursor, the changes up to the one the member joined at are
                // replayed here first, while the dispatcher holds back what it
                // has for the member.
                let member = group.join(live, direct, origin.overflow.clone());
                let mut caught_up = Box::pin(member.catch_up());
                while let Some(item) = caught_up.next().await {
                    match item {
                        Ok((seq, payload)) => yield OpEvent::Next { payload, cursor: Some(seq) },
                        Err(e) => {
                            // Out of the group before the error goes: nothing
                            // is held for it meanwhile.
                            drop(caught_up);
                            drop(member);
                            let payload = group.render_pinned(Pinned::Error(e)).await;
                            yield OpEvent::Next { payload, cursor: None };
                            yield OpEvent::End;
                            return;
                        }
                    }
                }
                // Polled again: the transport has taken every replayed
                // result, so what was held follows them.
                member.release();
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
                        let payload = group.render_pinned(item).await;
                        yield OpEvent::Next { payload, cursor: None };
                        break;
                    }
                };
                let payload = group.render(key, item).await;
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
    coded_errors(&[e], query, true)
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
    response: async_graphql::Response,
    req: &OpRequest,
    first: bool,
) -> Result<String, Vec<Json>> {
    let response = outcome(app, response, req, first)?;
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

/// An executed response with every error coded; a request error (the first
/// response, nothing executed) comes back as its errors.
fn outcome(
    app: &AppState,
    mut response: async_graphql::Response,
    req: &OpRequest,
    first: bool,
) -> Result<async_graphql::Response, Vec<Json>> {
    crate::graphql::take_paths(&mut response.errors);
    let request_error = first
        && !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.is_empty());
    if request_error {
        return Err(coded_errors(&response.errors, &req.query, true));
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
        let errors = coded_errors(&response.errors, &req.query, false);
        response.errors = serde_json::from_value(Json::Array(errors)).unwrap_or_default();
    }
    Ok(response)
}

/// A live query (API.md §8) of `viewer`: a member of its cohort (see
/// [`super::live`]), its results numbered from 1, whole or (with `patch`)
/// as patches against the last one it sent.
fn live_query(
    app: AppState,
    req: OpRequest,
    viewer: Viewer,
    asked: Live,
    doc: Arc<ExecutableDocument>,
) -> BoxStream<'static, OpEvent> {
    let key = GroupKey::new(
        &req.query,
        req.operation_name.as_deref(),
        &req.variables,
        &viewer,
        true,
    );
    let account_id = viewer.account_id.clone();
    let live = app.live().clone();
    let runner: Runner = {
        let req = Arc::new(OpRequest {
            extensions: Map::new(),
            ..req
        });
        Box::new(move || {
            let (app, req, viewer, doc) = (app.clone(), req.clone(), viewer.clone(), doc.clone());
            Box::pin(async move {
                let reads = Arc::new(Reads::default());
                let mut ctx =
                    RequestCtx::new(app.store().clone(), viewer, app.auth().clone(), None);
                ctx.reads = Some(reads.clone());
                let mut request = request(&req, ctx);
                request.set_parsed_query(ExecutableDocument::clone(&doc));
                let response = outcome(&app, app.schema().execute(request).await, &req, true)?;
                let data = serde_json::to_value(&response.data).unwrap_or(Json::Null);
                let errors = (!response.errors.is_empty())
                    .then(|| serde_json::to_value(&response.errors).unwrap_or(Json::Null));
                Ok(Run {
                    data,
                    errors,
                    reads: reads.take(),
                })
            })
        })
    };
    async_stream::stream! {
        // Joined when first polled: a stream the transport drops unpolled
        // costs no run.
        let mut snapshots = live.join(key, &account_id, asked.throttle, runner);
        let mut sent = 0u64;
        let mut had: Option<Arc<Snapshot>> = None;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                match &*snapshot {
                    Snapshot::Failed(errors) => {
                        yield OpEvent::Failed(errors.clone());
                        return;
                    }
                    Snapshot::Result(published) => {
                        sent += 1;
                        let previous = match (asked.patch, had.as_deref()) {
                            (true, Some(Snapshot::Result(p))) => Some(p),
                            _ => None,
                        };
                        let payload = published.payload(sent, previous);
                        had = Some(snapshot.clone());
                        yield OpEvent::Next { payload: payload.into(), cursor: None };
                    }
                }
            }
            if snapshots.changed().await.is_err() {
                break;
            }
        }
        yield OpEvent::End;
    }
    .boxed()
}

/// The `payload` of a result: `data`, and `errors` when there are any.
#[derive(serde::Serialize)]
struct Payload<'a> {
    data: &'a async_graphql::Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
}

/// Renders a group's events: its operation, executed again as its viewer with
/// the event pinned.
pub struct Renderer {
    app: AppState,
    req: OpRequest,
    viewer: Viewer,
}

impl Renderer {
    fn new(app: AppState, req: &OpRequest, viewer: Viewer) -> Renderer {
        Renderer {
            app,
            req: OpRequest {
                extensions: Map::new(),
                ..req.clone()
            },
            viewer,
        }
    }
}

impl Render for Renderer {
    fn render(&self, pinned: Pinned) -> BoxFuture<'_, Arc<str>> {
        Box::pin(async move {
            let app = &self.app;
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
        })
    }
}
