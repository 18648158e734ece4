//! GraphQL over WebSocket on `GET /graphql`: both subprotocols (see
//! [`protocol`]), driven here. One task per connection owns the socket, the
//! protocol state, the running operations (each an `execute_stream`, polled
//! together so a busy one never holds up another) and the timers: init timeout
//! (4408), heartbeat (the server pings; a peer that stops answering is dropped),
//! token expiry (4403), sign-out of its session (4403), subscriber overflow
//! (1013, so the client resumes from its cursor) and server shutdown (1001).

mod outbox;
pub mod protocol;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use serde_json::{Map, Value as Json};
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

use super::expiry_instant;

use self::outbox::{Drained, Outbox};
use self::protocol::{Machine, OpRequest, Out, Proto};
use crate::access::Viewer;
use crate::app::operation::{self, OpEvent, Origin};
use crate::auth::{AuthError, Credentials, Identity, Lasting, resolve_viewer};
use crate::realtime::Overflow;
use crate::realtime::fanout::Direct;
use crate::realtime::rooms::Peers;
use crate::store::ANY_SESSION;
use crate::transport::Gateway;

/// Transport settings for realtime connections.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// How long a client may take to send `connection_init`.
    pub init_timeout: Duration,
    /// Largest accepted message (and frame), in bytes.
    pub max_message_bytes: usize,
    /// Events a subscriber may fall behind before its connection is closed (1013).
    pub bus_capacity: usize,
    /// Bytes of frames a connection (WebSocket, SSE stream, room member,
    /// replaying subscription) may have waiting for its client before it is
    /// closed (1013, or its SSE stream ends) to resume from its cursor. Frames
    /// are copied per connection, so without a byte bound a few stalled readers
    /// of large rows would hold gigabytes.
    pub max_buffer_bytes: usize,
    /// Most realtime connections (WebSockets, SSE streams, `/realtime` feeds)
    /// open at once; 0: no cap.
    pub max_connections: usize,
    /// Most realtime connections open at once from one peer address; 0: no cap.
    pub max_connections_per_ip: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            init_timeout: Duration::from_secs(3),
            max_message_bytes: 64 * 1024,
            bus_capacity: crate::store::BUS_CAPACITY,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            max_connections: crate::transport::slots::default_max_connections(),
            max_connections_per_ip: 0,
        }
    }
}

pub use crate::realtime::DEFAULT_MAX_BUFFER_BYTES;

const OVERFLOW_REASON: &str =
    "Try again later: this connection fell behind; resume with your last cursor";

/// Operation events a connection handles in a row before its socket, timers and
/// signals get a turn (a busy feed never starves a client's `complete` or pong).
const OPS_IN_A_ROW: usize = 32;

/// How long one frame may take to leave; a peer that does not read is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a socket the server closed stays open for the peer's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Upgrades `GET /graphql` to a WebSocket speaking the subprotocol the client asks
/// for; an unknown or missing subprotocol is closed with 4406.
pub fn upgrade(
    app: Gateway,
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: SocketAddr,
) -> Response {
    let limits = app.ws_config();
    // Small buffers: the defaults (128 KiB each way, allocated per connection)
    // would dominate the memory of an idle subscriber, and every send flushes anyway.
    let ws = ws
        .protocols([Proto::TransportWs.name(), Proto::Legacy.name()])
        .read_buffer_size(1024)
        .write_buffer_size(1024)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes);
    let proto = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some("graphql-transport-ws") => Some(Proto::TransportWs),
        Some("graphql-ws") => Some(Proto::Legacy),
        _ => None,
    };
    // A client that names only subprotocols we do not speak would abort its own
    // handshake if we accepted: refuse it in HTTP, where it can read why.
    if proto.is_none() && headers.contains_key(axum::http::header::SEC_WEBSOCKET_PROTOCOL) {
        app.metrics().closed("none", 4406);
        let body = "unsupported WebSocket subprotocol: use graphql-transport-ws (graphql-ws) or graphql-ws (subscriptions-transport-ws)\n";
        return (axum::http::StatusCode::BAD_REQUEST, body).into_response();
    }
    // Refused in HTTP, before the upgrade: a 503 every client reports as such.
    let slot = match app.slots().admit(peer.ip(), app.metrics()) {
        Ok(slot) => slot,
        Err(refused) => return refused,
    };
    // Credentials on the URL or in headers; `?token=` is accepted on sockets too.
    let mut creds = Credentials::from_http(headers, query);
    if let Ok(c) = &mut creds
        && c.token.is_none()
    {
        c.token = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
    }
    ws.on_upgrade(move |socket| async move {
        match proto {
            Some(proto) => {
                // On the delivery runtime: fan-out never holds up requests.
                app.clone().spawn_delivery(async move {
                    Connection::run(app, socket, proto, creds, peer).await;
                    drop(slot);
                });
            }
            None => {
                let mut socket = socket;
                let reason = "Subprotocol not acceptable: use graphql-transport-ws or graphql-ws";
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 4406,
                        reason: reason.into(),
                    })))
                    .await;
                app.metrics().closed("none", 4406);
                drop(slot);
            }
        }
    })
}

/// Whatever woke a connection. Its operations are polled first (the hot path:
/// an event costs a poll of the operations and nothing else); every other source
/// is a stream of its own in one `SelectAll`, which polls only the sources that
/// were woken, so a quiet socket, three timers and three signals cost one empty
/// check per event instead of a poll each, as a `select!` over all would.
enum Wake {
    /// A client frame; `None` when the socket closed.
    Msg(Option<Result<Message, axum::Error>>),
    Op(Arc<str>, OpEvent),
    InitTimeout,
    Beat,
    Expired,
    Overflowed,
    Stopping,
    Revoked(Result<String, BroadcastStreamRecvError>),
    /// The socket took frames: send what waits.
    Writable,
}

type Source = BoxStream<'static, Wake>;

/// A future as a source that wakes once.
fn once(fut: impl std::future::Future<Output = ()> + Send + 'static, wake: fn() -> Wake) -> Source {
    futures_util::stream::once(fut)
        .map(move |()| wake())
        .boxed()
}

struct Connection {
    app: Gateway,
    machine: Machine,
    /// The socket's sending side, shared with the dispatchers of the
    /// connection's subscription groups.
    out: Arc<Outbox>,
    /// The running operations, by id.
    ops: StreamMap<Arc<str>, BoxStream<'static, OpEvent>>,
    url_creds: Result<Credentials, AuthError>,
    viewer: Option<Viewer>,
    /// Tells `realtime.disconnect` when dropped, once the connection was accepted.
    told: Option<crate::store::EmitOnDrop>,
    identity: Option<Identity>,
    overflow: Arc<Overflow>,
    /// Its room memberships: `sendToRoom` over this socket speaks as them.
    peers: Arc<Peers>,
    peer: SocketAddr,
    closed: bool,
    /// Our close frame left: wait for the peer's before dropping the socket.
    linger: bool,
}

impl Connection {
    async fn run(
        app: Gateway,
        socket: WebSocket,
        proto: Proto,
        url_creds: Result<Credentials, AuthError>,
        peer: SocketAddr,
    ) {
        let realtime = app.catalog().realtime.clone();
        let (sink, incoming) = socket.split();
        let gauge = app.metrics().connections(proto.name());
        gauge.inc();
        let overflow = Arc::new(Overflow::default());
        let out = Arc::new(Outbox::new(
            sink,
            proto,
            overflow.clone(),
            app.ws_config().bus_capacity,
            app.ws_config().max_buffer_bytes,
            app.metrics().deliveries.clone(),
        ));
        let mut conn = Connection {
            machine: Machine::new(
                proto,
                realtime.max_subscriptions_per_connection as usize,
                app.persisted().clone(),
            ),
            app: app.clone(),
            out: out.clone(),
            ops: StreamMap::new(),
            url_creds,
            viewer: None,
            told: None,
            identity: None,
            overflow,
            peers: Arc::default(),
            peer,
            closed: false,
            linger: false,
        };
        let beat = Duration::from_secs(realtime.heartbeat_seconds.into());
        let heartbeat = tokio::time::interval_at(Instant::now() + beat, beat);
        let mut stopping = app.stopping();
        let overflow = conn.overflow.clone();
        let mut sources: SelectAll<Source> = futures_util::stream::select_all([
            incoming
                .map(|m| Wake::Msg(Some(m)))
                .chain(futures_util::stream::once(async { Wake::Msg(None) }))
                .boxed(),
            once(
                sleep_until(Instant::now() + app.ws_config().init_timeout),
                || Wake::InitTimeout,
            ),
            IntervalStream::new(heartbeat).map(|_| Wake::Beat).boxed(),
            once(async move { overflow.raised().await }, || Wake::Overflowed),
            once(
                async move {
                    // The value only ever turns true (or its sender goes): either way, leave.
                    let _ = stopping.changed().await;
                },
                || Wake::Stopping,
            ),
            BroadcastStream::new(app.store().revocations())
                .map(Wake::Revoked)
                .boxed(),
            futures_util::stream::poll_fn(move |cx| {
                out.poll_signal(cx).map(|()| Some(Wake::Writable))
            })
            .boxed(),
        ]);
        let mut awaiting_pong = false;
        let mut expiry_set = false;
        // Operation events in a row since the other sources last had a turn.
        let mut streak = 0usize;
        while !conn.closed {
            let ops = &mut conn.ops;
            let wake = std::future::poll_fn(|cx| {
                if streak < OPS_IN_A_ROW
                    && let Poll::Ready(Some((id, event))) = ops.poll_next_unpin(cx)
                {
                    streak += 1;
                    return Poll::Ready(Some(Wake::Op(id, event)));
                }
                if let Poll::Ready(wake) = sources.poll_next_unpin(cx) {
                    streak = 0;
                    return Poll::Ready(wake);
                }
                // The other sources had their turn: operations may run again.
                streak = 0;
                match ops.poll_next_unpin(cx) {
                    Poll::Ready(Some((id, event))) => {
                        streak += 1;
                        Poll::Ready(Some(Wake::Op(id, event)))
                    }
                    // No operation (an empty map ends at once): wait for the rest.
                    _ => Poll::Pending,
                }
            })
            .await;
            let Some(wake) = wake else {
                break;
            };
            match wake {
                Wake::Op(id, event) => conn.on_event(id, event).await,
                Wake::Msg(msg) => {
                    awaiting_pong = false;
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            let outs = conn.machine.on_text(text.as_str());
                            conn.apply(outs).await;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            conn.close(4400, "Binary messages are not supported").await
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => {
                            // Complete the closing handshake (RFC 6455 §5.5.1): the
                            // reply is queued by the library and leaves on flush.
                            // Without it clients see 1006, and graphql-ws treats its
                            // own lazy close as a failed connection.
                            let _ = tokio::time::timeout(Duration::from_secs(1), conn.out.close())
                                .await;
                            break;
                        }
                        None => break,
                        Some(Err(e)) => {
                            let too_big = e.to_string().to_lowercase().contains("too")
                                || e.to_string().contains("size");
                            if too_big {
                                conn.close(1009, "Message too big").await;
                            }
                            break;
                        }
                    }
                }
                Wake::InitTimeout => {
                    if !conn.machine.initialised() {
                        conn.close(4408, "Connection initialisation timeout").await;
                    }
                }
                Wake::Beat => {
                    if awaiting_pong {
                        conn.close(1001, "Going away: no answer to ping").await;
                    } else {
                        // Any frame from the peer before the next beat is an answer.
                        awaiting_pong = true;
                        let beat = conn.machine.heartbeat();
                        conn.apply(vec![beat]).await;
                        // The legacy protocol has no client pong (`ka` goes one
                        // way), but every WebSocket client answers a Ping frame.
                        if conn.machine.proto() == Proto::Legacy && !conn.closed {
                            conn.send_message(Message::Ping(Default::default())).await;
                        }
                    }
                }
                Wake::Writable => {
                    if conn.out.drain() == Drained::Broken {
                        conn.closed = true;
                    }
                }
                Wake::Expired => conn.close(4403, "Forbidden: token expired").await,
                Wake::Overflowed => {
                    conn.out.discard_queued();
                    conn.close(1013, OVERFLOW_REASON).await
                }
                Wake::Stopping => {
                    conn.close(1001, "Going away: the server is shutting down")
                        .await
                }
                Wake::Revoked(revoked) => {
                    let mine = conn.identity.as_ref().and_then(|i| i.session_id.as_deref());
                    let ended = match (&revoked, mine) {
                        (Ok(session), Some(mine)) if session != ANY_SESSION => session == mine,
                        // Revocations went by unseen (a busy or stalled
                        // connection, or a lost `LISTEN` connection): ours may
                        // have been among them.
                        (_, Some(mine)) => app.auth().session_ended(app.store(), mine).await,
                        (_, None) => false,
                    };
                    if ended {
                        conn.close(4403, "Forbidden: session signed out").await;
                    }
                }
            }
            if !expiry_set && let Some(identity) = &conn.identity {
                let at = expiry_instant(identity.expires_at);
                sources.push(once(sleep_until(at), || Wake::Expired));
                expiry_set = true;
            }
        }
        app.metrics().subscriptions.dec_by(conn.ops.len() as i64);
        let (linger, out) = (conn.linger, conn.out.clone());
        // Its operations and room memberships end now, whatever the peer does.
        drop(conn);
        if linger {
            // Dropping a socket with unread frames in its buffer makes the kernel
            // reset the connection, and a reset can destroy the close frame still
            // on its way: the client saw 1006 instead of our code (a burst of
            // `connection_init`s, closed with 4429, did so nearly every time).
            // Read and discard until the peer answers with its close, briefly.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(wake) = sources.next().await {
                    match wake {
                        Wake::Msg(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
                        Wake::Writable if out.drain() == Drained::Broken => break,
                        _ => {}
                    }
                }
            })
            .await;
        }
        gauge.dec();
    }

    async fn send(&mut self, text: String) {
        self.send_message(Message::Text(text.into())).await;
    }

    /// Sends `msg` after whatever waits; if the socket does not take it all at
    /// once, waits for it (a peer that does not read is dropped). Nearly every
    /// frame leaves at once, and then the timer is never armed.
    async fn send_message(&mut self, msg: Message) {
        let sent = self.out.push(msg)
            && matches!(
                tokio::time::timeout(SEND_TIMEOUT, self.out.settle()).await,
                Ok(true)
            );
        if !sent {
            self.closed = true;
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        self.app.metrics().closed(self.machine.proto().name(), code);
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        self.send_message(frame).await;
        // Sent (not broken on the way): the peer's close may follow.
        self.linger = !self.closed;
        self.closed = true;
    }

    async fn apply(&mut self, outs: Vec<Out>) {
        let mut queue: std::collections::VecDeque<Out> = outs.into();
        while let Some(out) = queue.pop_front() {
            if self.closed {
                return;
            }
            match out {
                Out::Send(text) => self.send(text).await,
                Out::Close(code, reason) => self.close(code, &reason).await,
                Out::Authenticate(payload) => queue.extend(self.authenticate(payload).await),
                Out::Start(id, request) => self.start(id, request),
                Out::Stop(id) => self.stop(&id),
            }
        }
    }

    async fn authenticate(&mut self, payload: Map<String, Json>) -> Vec<Out> {
        let mut creds = match &self.url_creds {
            Ok(c) => c.clone(),
            Err(e) => return self.machine.refused(&e.to_string()),
        };
        let text = |k: &str| payload.get(k).and_then(Json::as_str).map(str::to_string);
        if let Some(t) = text("token") {
            creds.token = Some(t);
        } else if let Some(auth) = text("Authorization").or_else(|| text("authorization")) {
            match auth.split_once(' ') {
                Some((scheme, t))
                    if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() =>
                {
                    creds.token = Some(t.trim().to_string())
                }
                _ => return self.machine.refused(&AuthError::Scheme.to_string()),
            }
        }
        if let Some(a) = text("account") {
            creds.account = Some(a);
        }
        let auth = self.app.auth().clone();
        match resolve_viewer(
            &auth.tokens,
            self.app.store(),
            self.app.default_account_id(),
            &creds,
            Lasting::Connection,
        )
        .await
        {
            Err(e) => self.machine.refused(&e.to_string()),
            Ok((viewer, _))
                if viewer.user_id.is_none() && !self.app.catalog().realtime.anonymous =>
            {
                self.machine
                    .refused("sign in to open a realtime connection")
            }
            Ok((viewer, identity)) => {
                // `realtime.disconnect` when the connection (this) is dropped.
                self.told = Some(self.app.store().emit_span(
                    &viewer.account_id,
                    viewer.user_id.as_deref(),
                    "realtime.connect",
                    "realtime.disconnect",
                    serde_json::json!({ "protocol": self.machine.proto().name() }),
                ));
                self.viewer = Some(viewer);
                self.identity = identity;
                self.machine.accepted()
            }
        }
    }

    fn start(&mut self, id: String, req: OpRequest) {
        let Some(viewer) = self.viewer.clone() else {
            return;
        };
        let origin = Origin {
            viewer,
            client_ip: Some(self.peer.ip()),
            overflow: self.overflow.clone(),
            resume_after: None,
            peers: Some(self.peers.clone()),
            direct: Some(Direct {
                out: self.out.clone(),
                id: id.as_str().into(),
            }),
        };
        let mut stream = operation::execute(self.app.app().clone(), req, origin).peekable();
        // Streams are lazy: poll once now, so that a subscription is on the bus
        // before the next client frame is read (a peeked item is kept).
        let _ = futures_util::FutureExt::now_or_never(std::pin::Pin::new(&mut stream).peek());
        if self.ops.insert(id.into(), stream.boxed()).is_none() {
            self.app.metrics().subscriptions.inc();
        }
    }

    /// Drops operation `id`'s stream (leaving the bus and any room) at once.
    fn stop(&mut self, id: &str) {
        if self.ops.remove(id).is_some() {
            self.app.metrics().subscriptions.dec();
        }
    }

    async fn on_event(&mut self, id: Arc<str>, event: OpEvent) {
        if self.overflow.is_raised() {
            // Deliver nothing more: the client resumes from the last cursor it got.
            self.out.discard_queued();
            return self.close(1013, OVERFLOW_REASON).await;
        }
        let outs = match event {
            OpEvent::End => {
                self.stop(&id);
                self.machine.finished(&id)
            }
            OpEvent::Failed(errors) => {
                self.stop(&id);
                self.machine.failed(&id, errors)
            }
            OpEvent::Next { payload, .. } => {
                if let Some(text) = self.machine.result_text(&id, &payload) {
                    self.app.metrics().deliveries.inc();
                    self.send(text).await;
                }
                return;
            }
        };
        self.apply(outs).await;
    }
}
