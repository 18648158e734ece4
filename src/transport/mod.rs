//! Transports: bytes and protocols in, GraphQL requests to the schema, responses
//! out. They speak protocols only: HTTP hands its request to the schema,
//! streaming transports run operations through [`crate::app::operation`], and
//! subscription events come from the fan-out engine ([`crate::realtime::fanout`]). Each transport resolves the viewer and hands the schema a request; none of
//! them decides access. [`playground`] serves the embedded playground page,
//! which talks to the others like any client.

pub(crate) mod accept;
pub mod feed;
pub mod http;
pub mod playground;
pub mod slots;
pub mod sse;
pub mod ws;

use std::sync::Arc;

use crate::app::AppState;
use slots::Slots;
use sse::single::Reservations;
use ws::WsConfig;

/// What every transport's handlers share: the gateway's core ([`AppState`],
/// which it dereferences to) and what is the transports' own: their settings,
/// the connection caps, and graphql-sse's reservations. Cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Served>);

struct Served {
    app: AppState,
    ws: WsConfig,
    /// graphql-sse stream reservations (single connection mode).
    sse: Arc<Reservations>,
    /// Open realtime connections, against the connection caps.
    slots: Arc<Slots>,
    /// Flips to `true` when the server is shutting down. axum's graceful shutdown
    /// does not track upgraded connections; WebSocket connections watch this and
    /// close with 1001, so clients get a close frame instead of a dropped socket.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// The transports over `app`, with settings `ws` (the ones `app` was
    /// prepared with: see `server::prepare`).
    pub(crate) fn new(app: AppState, ws: WsConfig) -> Gateway {
        Gateway(Arc::new(Served {
            app,
            ws,
            sse: Arc::default(),
            slots: Arc::new(Slots::new(ws.max_connections, ws.max_connections_per_ip)),
            stopping: tokio::sync::watch::channel(false).0,
        }))
    }
    /// The gateway's core.
    pub fn app(&self) -> &AppState {
        &self.0.app
    }
    /// WebSocket (and realtime connection) settings.
    pub fn ws_config(&self) -> WsConfig {
        self.0.ws
    }
    /// graphql-sse stream reservations (single connection mode).
    pub fn sse(&self) -> &Arc<Reservations> {
        &self.0.sse
    }
    /// Open realtime connections, against the connection caps.
    pub fn slots(&self) -> &Arc<Slots> {
        &self.0.slots
    }
    /// Resolves once the server starts shutting down.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.stopping.subscribe()
    }
    /// Says the server is shutting down: connections close (WebSocket 1001).
    pub fn stop(&self) {
        self.0.stopping.send_replace(true);
    }
}

impl std::ops::Deref for Gateway {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0.app
    }
}

/// The tokio instant at which a token that expires at `at` does.
pub(crate) fn expiry_instant(at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let left = (at - chrono::Utc::now())
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    tokio::time::Instant::now() + left
}
