//! GraphQL over Server-Sent Events, per the graphql-sse protocol, on
//! `/graphql/stream` and on `/graphql` (requests that accept `text/event-stream`,
//! or name a stream reservation).
//!
//! - Distinct connections mode: each `GET`/`POST` that accepts
//!   `text/event-stream` is one operation on its own stream: `next` events, then
//!   `complete`. Request errors (parse, validation) arrive as a `next` with
//!   `errors` on the accepted stream, as the protocol requires; only a mutation
//!   over `GET` (405) and bad credentials (401) are refused in HTTP.
//! - Single connection mode ([`single`]): `PUT` reserves a stream and answers
//!   its token; `GET` with the token opens it; operations are `POST`ed with the
//!   token and `extensions.operationId` (202) and stopped with `DELETE
//!   ?operationId=` (200).
//!
//! Every `next` of a change subscription carries `id: <cursor>`; a reconnect with
//! `Last-Event-ID` resumes after it (it takes the place of `after`). Streams end
//! when the token expires or its session signs out, when a subscriber falls
//! behind (the client resumes from its cursor), and when the server stops.

mod outbox;
pub mod single;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::accept::prefers_event_stream;
use super::http::{self, Media, Params, Rejection};
use crate::access::Viewer;
use crate::app::operation::{self, OpEvent, OpRequest, Origin};
use crate::auth::{AuthError, Credentials, Identity, Lasting, resolve_viewer};
use crate::realtime::fanout::Direct;
use crate::realtime::{Overflow, parse_cursor};
use crate::transport::Gateway;
use crate::transport::slots::Slot;

pub use stream::{sse_response, told};

/// The header that carries a single-connection stream's token.
pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// The single-connection stream token of a request (header, or `?token=`).
pub fn stream_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|t| !t.is_empty())
}

/// Whether a request to `/graphql` belongs to this transport.
pub fn wants(headers: &HeaderMap, query: Option<&str>, method: &Method) -> bool {
    prefers_event_stream(headers)
        || method == Method::PUT
        || method == Method::DELETE
        || stream_token(headers, query).is_some()
}

/// A JSON error response, as graphql-over-http writes them.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    http::bad_request(Media::Json, status, code, message)
}

/// The viewer of a realtime request: a bad credential is a 401, and so is no
/// credential when the app does not allow anonymous realtime clients.
pub(crate) async fn authenticate(
    app: &Gateway,
    creds: Result<Credentials, AuthError>,
) -> Result<(Viewer, Option<Identity>), Response> {
    let creds = creds.map_err(|e| http::unauthenticated(Media::Json, &e))?;
    let (viewer, identity) = resolve_viewer(
        &app.auth().tokens,
        app.store(),
        app.default_account_id(),
        &creds,
        Lasting::Connection,
    )
    .await
    .map_err(|e| http::unauthenticated(Media::Json, &e))?;
    // Tokens are accepted a few seconds past `exp` (clock skew); a stream opened
    // with one would end at once, so refuse it while the client can still tell why.
    if identity
        .as_ref()
        .is_some_and(|i| i.expires_at <= chrono::Utc::now())
    {
        return Err(http::unauthenticated(Media::Json, &AuthError::Expired));
    }
    if viewer.user_id.is_none() && !app.catalog().realtime.anonymous {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "sign in to open a realtime stream",
        ));
    }
    Ok((viewer, identity))
}

/// The cursor a reconnecting client names in `Last-Event-ID`.
// The refusal is the response itself, built at most once per request.
#[allow(clippy::result_large_err)]
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, Response> {
    match headers.get("last-event-id").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(v)) if v.trim().is_empty() => Ok(None),
        Some(Ok(v)) => parse_cursor(v).map(Some).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "Last-Event-ID is not a cursor this server issued",
            )
        }),
        Some(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "Last-Event-ID is not a cursor this server issued",
        )),
    }
}

/// The operation of a `GET` or `POST`, or the response that refuses it.
#[allow(clippy::result_large_err)]
pub(crate) fn params_of(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    app: &Gateway,
) -> Result<Params, Response> {
    let limits = app.limits();
    let params = if method == Method::GET {
        http::params_from_query_string(query, limits)
    } else {
        http::params_from_body(headers, body, limits)
    }
    .and_then(|mut params| params.resolve(app.persisted()).map(|()| params))
    .map_err(|r: Rejection| r.into_response(Media::Json))?;
    // graphql-over-http: no mutation over GET.
    if method == Method::GET
        && let Ok(doc) = async_graphql::parser::parse_query(params.query.as_str())
        && http::selected_operation(&doc, params.operation_name.as_deref())
            == Some(async_graphql::parser::types::OperationType::Mutation)
    {
        let mut resp = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_USER_INPUT",
            "mutations are not allowed over GET: use POST",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(resp);
    }
    Ok(params)
}

/// What an operation request carries, checked.
pub(crate) struct Prepared {
    pub viewer: Viewer,
    pub identity: Option<Identity>,
    /// `Last-Event-ID`, if the client resumes.
    pub resume_after: Option<i64>,
    pub params: Params,
}

/// Authenticates an operation request and reads its cursor and parameters, or
/// answers the response that refuses it.
pub(crate) async fn prepare(
    app: &Gateway,
    creds: Result<Credentials, AuthError>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Prepared, Response> {
    let (viewer, identity) = authenticate(app, creds).await?;
    let resume_after = last_event_id(headers)?;
    let params = params_of(method, headers, query, body, app)?;
    Ok(Prepared {
        viewer,
        identity,
        resume_after,
        params,
    })
}

pub(crate) fn op_request(params: Params) -> OpRequest {
    OpRequest {
        query: params.query,
        operation_name: params.operation_name,
        variables: params.variables,
        extensions: params.extensions,
    }
}

/// Starts `req` now (a subscription is on the bus when this returns).
pub(crate) fn start(
    app: &Gateway,
    req: OpRequest,
    origin: Origin,
) -> futures_util::stream::BoxStream<'static, OpEvent> {
    let mut op = operation::execute(app.app().clone(), req, origin).peekable();
    let _ = futures_util::FutureExt::now_or_never(std::pin::Pin::new(&mut op).peek());
    op.boxed()
}

/// Every graphql-sse request: routes by method, `Accept` and stream token.
pub async fn handle(
    app: Gateway,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
) -> Response {
    let query = query.as_deref();
    let token = stream_token(&headers, query);
    let creds = Credentials::from_http(&headers, query);
    let is_read = method == Method::GET || method == Method::POST;
    if is_read && prefers_event_stream(&headers) {
        let slot = match app.slots().admit(peer.ip(), app.metrics()) {
            Ok(slot) => slot,
            Err(refused) => return refused,
        };
        return match token {
            Some(token) => single::connect(app, slot, creds, token).await,
            None => distinct(app, slot, peer, method, headers, query, body, creds).await,
        };
    }
    if method == Method::PUT {
        return single::reserve(app, &headers, creds, token).await;
    }
    let Some(token) = token else {
        return match method {
            Method::GET | Method::POST | Method::DELETE => refuse(
                StatusCode::NOT_FOUND,
                "BAD_USER_INPUT",
                "no stream: accept text/event-stream for a stream of its own, or name a reserved stream with the x-graphql-event-stream-token header",
            ),
            _ => method_not_allowed(),
        };
    };
    match method {
        Method::DELETE => single::stop(app, creds, token, query).await,
        Method::GET | Method::POST => {
            single::operation(app, peer, method, headers, query, body, creds, token).await
        }
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> Response {
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, PUT, DELETE"),
    );
    resp
}

/// Distinct connections mode: one operation, one stream.
#[allow(clippy::too_many_arguments)]
async fn distinct(
    app: Gateway,
    slot: Slot,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    query: Option<&str>,
    body: Bytes,
    creds: Result<Credentials, AuthError>,
) -> Response {
    let Prepared {
        viewer,
        identity,
        resume_after,
        params,
    } = match prepare(&app, creds, &method, &headers, query, &body).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let overflow = Arc::new(Overflow::default());
    // A live subscription's group leaves its results here (see `outbox`).
    let out = Arc::new(outbox::SseOut::new(
        overflow.clone(),
        app.store().bus_capacity(),
        app.ws_config().max_buffer_bytes,
        app.metrics().deliveries.clone(),
    ));
    let told = stream::told(&app, &viewer, "graphql-sse");
    let origin = Origin {
        viewer,
        client_ip: Some(peer.ip()),
        overflow: overflow.clone(),
        resume_after,
        peers: None,
        direct: Some(Direct {
            out: out.clone(),
            id: "".into(),
        }),
    };
    let op = start(&app, op_request(params), origin);
    let events = stream::distinct_events(app.clone(), op, out);
    sse_response(
        &app,
        slot,
        identity,
        overflow,
        ("graphql-sse", told),
        events,
    )
}

/// The `next` event of an operation (`id` is the single-connection operation id).
pub(crate) fn next_event(op_id: Option<&str>, payload: &str, cursor: Option<i64>) -> Event {
    let data = match op_id {
        Some(id) => format!(
            r#"{{"id":{},"payload":{payload}}}"#,
            serde_json::to_string(id).unwrap_or_default()
        ),
        None => payload.to_string(),
    };
    let event = Event::default().event("next").data(data);
    match cursor {
        Some(c) => event.id(c.to_string()),
        None => event,
    }
}

/// The `complete` event of an operation.
pub(crate) fn complete_event(op_id: Option<&str>) -> Event {
    let data = match op_id {
        Some(id) => format!(
            r#"{{"id":{}}}"#,
            serde_json::to_string(id).unwrap_or_default()
        ),
        // An event without data is never dispatched by an EventSource; graphql-sse
        // reads `null` as "no data".
        None => "null".to_string(),
    };
    Event::default().event("complete").data(data)
}

/// The `next` event of an operation that failed before executing.
pub(crate) fn failed_event(op_id: Option<&str>, errors: Vec<serde_json::Value>) -> Event {
    let payload = serde_json::json!({ "errors": errors }).to_string();
    next_event(op_id, &payload, None)
}
