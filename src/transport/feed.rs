//! `GET /realtime?collections=a,b`: the plain EventSource feed for clients that
//! do not speak GraphQL. Each event is `event: change`, `id: <cursor>`, data
//! `{"collection":"posts","action":"create"}`: the same hints, to the same
//! viewers, as the `changes` subscription. A reconnect with `Last-Event-ID` (or
//! `?after=`) replays what was missed, then goes on live.
//!
//! Refusals are HTTP statuses, which an EventSource does not retry: 401 (bad or
//! missing credentials), 400 (unknown collection, bad cursor), 410 (a cursor older
//! than the kept history: start over without it).

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::response::sse::Event;
use futures_util::StreamExt;

use super::sse::{authenticate, last_event_id, refuse, sse_response};
use crate::auth::Credentials;
use crate::realtime::{Overflow, Selection, feed, parse_cursor};
use crate::store::Action;
use crate::transport::Gateway;

/// `GET /realtime`.
pub async fn realtime(
    State(app): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let slot = match app.slots().admit(peer.ip(), app.metrics()) {
        Ok(slot) => slot,
        Err(refused) => return refused,
    };
    let query = query.as_deref();
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // Browsers cannot set headers on an EventSource: `?token=` works here too.
    let mut creds = Credentials::from_http(&headers, query);
    if let (Ok(c), Some(token)) = (&mut creds, param("token"))
        && c.token.is_none()
    {
        c.token = Some(token.to_string());
    }
    let (viewer, identity) = match authenticate(&app, creds).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let collections = match param("collections").filter(|v| !v.trim().is_empty()) {
        None => None,
        Some(list) => {
            let keys: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(unknown) = keys.iter().find(|k| app.catalog().collection(k).is_none()) {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    &format!("unknown collection \"{unknown}\" in ?collections="),
                );
            }
            Some(keys)
        }
    };
    let after = match last_event_id(&headers) {
        Err(resp) => return resp,
        Ok(Some(c)) => Some(c),
        Ok(None) => match param("after").map(parse_cursor) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    "?after= is not a cursor this server issued",
                );
            }
        },
    };
    if let Some(after) = after {
        match app.store().log_bounds().await {
            Ok(b) if after < b.pruned_through => {
                return refuse(
                    StatusCode::GONE,
                    "CURSOR_EXPIRED",
                    "this cursor is older than the kept history: reload, then listen without it",
                );
            }
            Ok(b) if after > b.newest => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BAD_USER_INPUT",
                    "this cursor is newer than any event",
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event log's bounds");
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "Internal server error",
                );
            }
        }
    }
    let overflow = Arc::new(Overflow::default());
    let told = super::sse::told(&app, &viewer, "eventsource");
    let changes = feed(
        app.store().clone(),
        app.catalog().clone(),
        viewer,
        Selection::Changes { collections },
        after,
        Some(overflow.clone()),
    );
    let metrics = app.clone();
    // A feed error (overflow, or a store failure, already logged) ends the stream.
    let events = changes
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| {
            let event = item.ok().map(|change| {
                metrics.metrics().deliveries.inc();
                let action = match change.action {
                    Action::Create => "create",
                    Action::Update => "update",
                    Action::Delete => "delete",
                };
                let data = serde_json::json!({ "collection": change.collection, "action": action });
                Event::default()
                    .event("change")
                    .id(change.seq.to_string())
                    .data(data.to_string())
            });
            std::future::ready(event)
        });
    sse_response(
        &app,
        slot,
        identity,
        overflow,
        ("eventsource", told),
        events,
    )
}
