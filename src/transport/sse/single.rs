//! graphql-sse's single connection mode: one event stream per reservation
//! carries every operation the client posts to it.
//!
//! `PUT` reserves (201, the token as text); `GET` with `Accept:
//! text/event-stream` and the token opens the stream (409 if one is open
//! already); `POST`/`GET` with the token and `extensions.operationId` start an
//! operation on it (202; 409 for an id in use, 400 without one); `DELETE
//! ?operationId=` stops one (200). An unknown token is 404. Only the viewer who
//! reserved a stream may use it. Operations posted before the stream opens are
//! started at once (on the bus from then on) and their results wait for it.
//! A reservation nobody opens is dropped after [`UNOPENED_TTL`]; one whose stream
//! ends is gone.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamMap;

use super::stream::GaugeGuard;
use super::{
    Prepared, authenticate, complete_event, failed_event, next_event, op_request, prepare, refuse,
    sse_response, start,
};
use crate::access::Viewer;
use crate::app::operation::{
    MAX_IN_FLIGHT, OpEvent, Origin, counts_as_subscription, too_many_in_flight,
};
use crate::auth::{AuthError, Credentials};
use crate::realtime::Overflow;
use crate::realtime::rooms::Peers;
use crate::transport::Gateway;
use crate::transport::accept::{self, accepts};
use crate::transport::slots::Slot;

/// How long a reservation waits for its stream to open.
pub const UNOPENED_TTL: Duration = Duration::from_secs(60);

/// What the stream of a reservation is told.
enum Control {
    Start(String, BoxStream<'static, OpEvent>),
    Stop(String),
}

struct Reservation {
    /// Who reserved it: account and user.
    owner: (String, Option<String>),
    /// Operations running (or queued) on it, by id.
    ops: HashSet<String>,
    /// Those of `ops` that hold a subscription slot (see
    /// [`counts_as_subscription`]): queries and mutations never do.
    subscriptions: HashSet<String>,
    control: mpsc::UnboundedSender<Control>,
    /// Taken when the stream opens.
    receiver: Option<mpsc::UnboundedReceiver<Control>>,
    /// Raised when one of its feeds falls behind.
    overflow: Arc<Overflow>,
    /// Its room memberships: `sendToRoom` posted to it speaks as them.
    peers: Arc<Peers>,
}

fn owner(viewer: &Viewer) -> (String, Option<String>) {
    (viewer.account_id.clone(), viewer.user_id.clone())
}

/// Reservations by token.
#[derive(Default)]
pub struct Reservations(Mutex<HashMap<String, Reservation>>);

impl Reservations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Reservation>) -> T) -> T {
        match self.0.lock() {
            Ok(mut map) => f(&mut map),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Open or pending reservations (for tests and metrics).
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn release(&self, token: &str) {
        self.with(|m| m.remove(token));
    }

    fn finished(&self, token: &str, id: &str) {
        self.with(|m| {
            if let Some(r) = m.get_mut(token) {
                r.ops.remove(id);
                r.subscriptions.remove(id);
            }
        });
    }
}

/// Why a request on a reservation is refused.
enum Refusal {
    NotFound,
    Conflict(&'static str),
    Bad(&'static str),
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NotFound => refuse(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such stream on this instance: reserve one with PUT (behind a load \
                 balancer, every request of a reserved stream must reach the instance that \
                 reserved it)",
            ),
            Refusal::Conflict(why) => refuse(StatusCode::CONFLICT, "CONFLICT", why),
            Refusal::Bad(why) => refuse(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", why),
        }
    }
}

fn not_found() -> Response {
    Refusal::NotFound.into_response()
}

/// `PUT`: reserves a stream; answers its token.
pub async fn reserve(
    app: Gateway,
    headers: &HeaderMap,
    creds: Result<Credentials, AuthError>,
    token: Option<String>,
) -> Response {
    if !accepts(headers, "text/plain") {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            "BAD_USER_INPUT",
            "a reservation answers its token as text/plain",
        );
    }
    let (viewer, _) = match authenticate(&app, creds).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let token = token.unwrap_or_else(new_token);
    let (control, receiver) = mpsc::unbounded_channel();
    let created = app.sse().with(|m| {
        if m.contains_key(&token) {
            return false;
        }
        m.insert(
            token.clone(),
            Reservation {
                owner: owner(&viewer),
                ops: HashSet::new(),
                subscriptions: HashSet::new(),
                control,
                receiver: Some(receiver),
                overflow: Arc::new(Overflow::default()),
                peers: Arc::default(),
            },
        );
        true
    });
    if !created {
        return refuse(
            StatusCode::CONFLICT,
            "CONFLICT",
            "this stream is reserved already",
        );
    }
    let reservations = app.sse().clone();
    let pending = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(UNOPENED_TTL).await;
        reservations.with(|m| {
            if m.get(&pending).is_some_and(|r| r.receiver.is_some()) {
                m.remove(&pending);
            }
        });
    });
    let mut resp = (StatusCode::CREATED, token).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 128 random bits, hex: an entrance ticket nobody can guess.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET` with `Accept: text/event-stream` and a token: opens the stream.
pub async fn connect(
    app: Gateway,
    slot: Slot,
    creds: Result<Credentials, AuthError>,
    token: String,
) -> Response {
    let (viewer, identity) = match authenticate(&app, creds).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let opened = app.sse().with(|m| match m.get_mut(&token) {
        Some(r) if r.owner == owner(&viewer) => match r.receiver.take() {
            Some(rx) => Ok((rx, r.overflow.clone())),
            None => Err(Refusal::Conflict("this stream is open already")),
        },
        _ => Err(Refusal::NotFound),
    });
    let (receiver, overflow) = match opened {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    let events = multiplexed(app.clone(), token, receiver);
    let told = super::stream::told(&app, &viewer, "graphql-sse");
    sse_response(
        &app,
        slot,
        identity,
        overflow,
        ("graphql-sse", told),
        events,
    )
}

/// Releases the reservation when its stream ends, however it ends.
struct Release(Gateway, String);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.sse().release(&self.1);
    }
}

/// The events of every operation on the reservation, as they come.
fn multiplexed(
    app: Gateway,
    token: String,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> impl futures_util::Stream<Item = Event> + Send + 'static {
    async_stream::stream! {
        let _release = Release(app.clone(), token.clone());
        let mut ops: StreamMap<String, BoxStream<'static, OpEvent>> = StreamMap::new();
        let mut running: HashMap<String, GaugeGuard> = HashMap::new();
        loop {
            tokio::select! {
                Some((id, event)) = ops.next(), if !ops.is_empty() => match event {
                    OpEvent::Next { payload, cursor } => {
                        app.metrics().deliveries.inc();
                        yield next_event(Some(&id), &payload, cursor);
                    }
                    OpEvent::Failed(errors) => {
                        ops.remove(&id);
                        running.remove(&id);
                        app.sse().finished(&token, &id);
                        yield failed_event(Some(&id), errors);
                        yield complete_event(Some(&id));
                    }
                    OpEvent::End => {
                        ops.remove(&id);
                        running.remove(&id);
                        app.sse().finished(&token, &id);
                        yield complete_event(Some(&id));
                    }
                },
                command = control.recv() => match command {
                    Some(Control::Start(id, op)) => {
                        running.insert(id.clone(), GaugeGuard::new(app.metrics().subscriptions.clone()));
                        ops.insert(id, op);
                    }
                    Some(Control::Stop(id)) => {
                        ops.remove(&id);
                        running.remove(&id);
                    }
                    None => break,
                },
            }
        }
    }
}

/// `DELETE ?operationId=`: stops one operation.
pub async fn stop(
    app: Gateway,
    creds: Result<Credentials, AuthError>,
    token: String,
    query: Option<&str>,
) -> Response {
    let (viewer, _) = match authenticate(&app, creds).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let id = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "operationId")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    let stopped = app.sse().with(|m| match m.get_mut(&token) {
        Some(r) if r.owner == owner(&viewer) => match &id {
            Some(id) => {
                r.ops.remove(id);
                r.subscriptions.remove(id);
                let _ = r.control.send(Control::Stop(id.clone()));
                Ok(())
            }
            None => Err(Refusal::Bad(
                "name the operation to stop with ?operationId=",
            )),
        },
        _ => Err(Refusal::NotFound),
    });
    match stopped {
        Ok(()) => StatusCode::OK.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST` (or `GET`) with a token: starts an operation on the reserved stream.
#[allow(clippy::too_many_arguments)]
pub async fn operation(
    app: Gateway,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    query: Option<&str>,
    body: Bytes,
    creds: Result<Credentials, AuthError>,
    token: String,
) -> Response {
    if !accepts(&headers, accept::JSON) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            "BAD_USER_INPUT",
            "operations on a reserved stream accept application/json",
        );
    }
    let Prepared {
        viewer,
        resume_after,
        params,
        ..
    } = match prepare(&app, creds, &method, &headers, query, &body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let id = match params.extensions.get("operationId") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "name the operation with extensions.operationId",
            );
        }
    };
    let limit = app.catalog().realtime.max_subscriptions_per_connection as usize;
    let request = op_request(params);
    let subscription = counts_as_subscription(&request);
    // Claim the id first, so that two posts with one id cannot both start.
    let claimed = app.sse().with(|m| match m.get_mut(&token) {
        Some(r) if r.owner == owner(&viewer) => {
            if r.ops.contains(&id) {
                Err(Refusal::Conflict(
                    "an operation with this id is running on the stream",
                ))
            } else {
                let too_many = if subscription {
                    (r.subscriptions.len() >= limit).then(|| json!({
                        "message": format!("Too many subscriptions: at most {limit} run on one stream; stop one first"),
                        "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" }
                    }))
                } else {
                    (r.ops.len() - r.subscriptions.len() >= MAX_IN_FLIGHT)
                        .then(too_many_in_flight)
                };
                if subscription && too_many.is_none() {
                    r.subscriptions.insert(id.clone());
                }
                r.ops.insert(id.clone());
                Ok((
                    r.control.clone(),
                    r.overflow.clone(),
                    r.peers.clone(),
                    too_many,
                ))
            }
        }
        _ => Err(Refusal::NotFound),
    });
    let (control, overflow, peers, too_many) = match claimed {
        Ok(v) => v,
        Err(refusal) => return refusal.into_response(),
    };
    let op = if let Some(error) = too_many {
        stream::iter([OpEvent::Failed(vec![error])]).boxed()
    } else {
        let origin = Origin {
            viewer,
            client_ip: Some(peer.ip()),
            overflow,
            resume_after,
            peers: Some(peers),
            direct: None,
        };
        start(&app, request, origin)
    };
    if control.send(Control::Start(id.clone(), op)).is_err() {
        app.sse().finished(&token, &id);
        return not_found();
    }
    StatusCode::ACCEPTED.into_response()
}
