//! The life of one event stream, whatever it carries: a comment to open it,
//! heartbeat comments every `heartbeat_seconds`, and an end when the token
//! expires, its session signs out, a subscriber on it falls behind, or the server
//! stops. A client that stops reading is never waited for: its feeds fall
//! behind the bus's bounded ring (or the results its subscription group left
//! for it pass the same bound) and the stream ends, to be resumed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::sleep_until;

use super::outbox::{self, SseOut};
use super::{complete_event, failed_event, next_event};
use crate::app::operation::OpEvent;
use crate::auth::Identity;
use crate::realtime::Overflow;
use crate::store::{ANY_SESSION, EmitOnDrop};
use crate::transport::Gateway;
use crate::transport::expiry_instant;
use crate::transport::slots::Slot;

/// Counts up now and down when dropped (when the client goes, too).
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Tells `realtime.connect` for a stream of `viewer`'s now, and
/// `realtime.disconnect` when the returned guard (held by the stream) drops.
pub fn told(app: &Gateway, viewer: &crate::access::Viewer, protocol: &'static str) -> EmitOnDrop {
    app.store().emit_span(
        &viewer.account_id,
        viewer.user_id.as_deref(),
        "realtime.connect",
        "realtime.disconnect",
        serde_json::json!({ "protocol": protocol }),
    )
}

/// `events` as an SSE response that ends on expiry, sign-out, overflow or
/// shutdown; `told` ends with it.
pub fn sse_response<S>(
    app: &Gateway,
    slot: Slot,
    identity: Option<Identity>,
    overflow: Arc<Overflow>,
    (protocol, told): (&'static str, EmitOnDrop),
    events: S,
) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let beat = Duration::from_secs(app.catalog().realtime.heartbeat_seconds.into());
    let stream = guarded(app.clone(), slot, identity, overflow, protocol, events);
    let stream = stream.map(move |e| {
        let _held = &told;
        e
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(beat).text(""))
        .into_response();
    // Proxies such as nginx would otherwise buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn guarded<S>(
    app: Gateway,
    slot: Slot,
    identity: Option<Identity>,
    overflow: Arc<Overflow>,
    protocol: &'static str,
    events: S,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    S: Stream<Item = Event> + Send + 'static,
{
    async_stream::stream! {
        let _open = GaugeGuard::new(app.metrics().connections(protocol));
        // Held while the stream is: the client going frees it.
        let _slot = slot;
        let mut events = Box::pin(events);
        let mut revocations = app.store().revocations();
        let mut stopping = app.stopping();
        let session = identity.as_ref().and_then(|i| i.session_id.clone());
        // Listening from here on; a revocation between the check that let the
        // stream in and this moment is in the database.
        if let Some(mine) = &session
            && app.auth().session_ended(app.store(), mine).await
        {
            return;
        }
        let expiry = identity
            .as_ref()
            .map(|i| expiry_instant(i.expires_at))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        // Some clients count a stream as open only once its first bytes arrive.
        yield Ok(Event::default().comment(""));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    // After an overflow deliver nothing more: the client resumes
                    // from the last cursor it got.
                    Some(event) if !overflow.is_raised() => yield Ok(event),
                    _ => break,
                },
                _ = sleep_until(expiry) => break,
                _ = overflow.raised() => break,
                // The value only ever turns true (or its sender goes): either way, leave.
                _ = stopping.changed() => break,
                revoked = revocations.recv() => {
                    let ended = match (&revoked, &session) {
                        (Ok(revoked), Some(mine)) if revoked != ANY_SESSION => revoked == mine,
                        (Ok(_), Some(mine)) => app.auth().session_ended(app.store(), mine).await,
                        // Revocations went by unseen (the client stopped
                        // reading, so the stream was not polled): ours may
                        // have been among them.
                        (Err(RecvError::Lagged(_)), Some(mine)) => {
                            app.auth().session_ended(app.store(), mine).await
                        }
                        _ => false,
                    };
                    if ended {
                        break;
                    }
                }
            }
        }
    }
}

/// The events of one operation on a stream of its own: its results (those
/// its subscription group leaves in `out` among them), then `complete`.
pub(crate) fn distinct_events(
    app: Gateway,
    mut op: BoxStream<'static, OpEvent>,
    out: Arc<SseOut>,
) -> impl Stream<Item = Event> + Send + 'static {
    enum Next {
        Op(Option<OpEvent>),
        Direct(VecDeque<outbox::Queued>),
    }
    async_stream::stream! {
        let _running = GaugeGuard::new(app.metrics().subscriptions.clone());
        loop {
            // The operation first: a resuming subscription's replayed results
            // precede what its group held back for it meanwhile.
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(event) = op.poll_next_unpin(cx) {
                    return Poll::Ready(Next::Op(event));
                }
                out.poll_take(cx).map(Next::Direct)
            })
            .await;
            match next {
                Next::Direct(results) => {
                    for (cursor, payload) in results {
                        yield next_event(None, &payload, Some(cursor));
                        // Polled again: the server's connection took it to write.
                        out.written(payload.len());
                    }
                }
                Next::Op(Some(OpEvent::Next { payload, cursor })) => {
                    app.metrics().deliveries.inc();
                    yield next_event(None, &payload, cursor);
                }
                Next::Op(Some(OpEvent::Failed(errors))) => {
                    yield failed_event(None, errors);
                    yield complete_event(None);
                    break;
                }
                Next::Op(Some(OpEvent::End)) => {
                    yield complete_event(None);
                    break;
                }
                // Ended without one: it fell behind, and the stream ends.
                Next::Op(None) => break,
            }
        }
    }
}
