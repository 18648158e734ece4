//! GraphQL over HTTP per the graphql-over-http spec: `POST` with
//! `application/json`, `GET` with query parameters (never a mutation: 405),
//! responses as `application/graphql-response+json` (request errors are 400) or
//! `application/json` (always 200), by the `Accept` header.
//!
//! async-graphql-axum's stock handler always answers 200 with one media type, so
//! request parsing, media negotiation and status codes live here.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::dynamic::Schema;
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response as GqlResponse, ServerError, Variables};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json, json};

use super::accept::{self, Accept};
use crate::access::Viewer;
use crate::auth::{AuthError, Credentials, Lasting, resolve_viewer};
use crate::graphql::persisted::{Persisted, requested_id};
use crate::graphql::{Limits, RequestCtx, give_codes, guard, live, set_code};
use crate::metrics::OpKind;
use crate::transport::Gateway;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
const APPLICATION_JSON: &str = "application/json; charset=utf-8";

/// The response media type the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    GraphqlResponseJson,
    Json,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
            Media::Json => APPLICATION_JSON,
        }
    }
}

/// Picks the response media type from `Accept`, honouring q-values: a media type
/// named exactly beats a wildcard; between the two JSON types the higher q wins,
/// graphql-response+json on a tie. A missing header or a bare wildcard gets
/// application/json (what pre-spec clients expect). `None` when neither is acceptable.
fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let Some(accept) = Accept::of(headers) else {
        return Some(Media::Json);
    };
    let gql = accept.exact(accept::GRAPHQL_RESPONSE_JSON);
    let json = accept.exact(accept::JSON);
    let wildcard = accept.wildcard(accept::JSON);
    let gql_q = gql.or(wildcard.filter(|_| json.is_some())).unwrap_or(0.0);
    let json_q = json.or(wildcard).unwrap_or(0.0);
    if gql.is_some() && gql_q > 0.0 && gql_q >= json_q {
        Some(Media::GraphqlResponseJson)
    } else if json_q > 0.0 {
        Some(Media::Json)
    } else if gql_q > 0.0 {
        Some(Media::GraphqlResponseJson)
    } else {
        None
    }
}

/// The parameters of a GraphQL request.
pub(crate) struct Params {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Json>,
    pub extensions: Map<String, Json>,
    /// The persisted document the request names (`documentId` or
    /// `extensions.persistedQuery`); `query` is then empty unless sent too.
    pub persisted_id: Option<String>,
}

impl Params {
    /// Puts the text of the persisted document the request names (or checks
    /// its own, see `graphql::persisted`) in `query`.
    pub(crate) fn resolve(&mut self, persisted: &Persisted) -> Result<(), Rejection> {
        let named = persisted
            .resolve(&self.query, self.persisted_id.as_deref())
            .map_err(|e| Rejection {
                status: StatusCode::BAD_REQUEST,
                code: e.code(),
                message: e.to_string(),
            })?;
        if let Some(text) = named {
            self.query = text.to_string();
        }
        Ok(())
    }
}

/// A request that is not a well-formed GraphQL-over-HTTP request.
pub(crate) fn bad_request(media: Media, status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    resp
}

/// A request refused before any GraphQL runs.
pub(crate) struct Rejection {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Rejection {
    fn bad(message: &str) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            code: "BAD_USER_INPUT",
            message: message.to_string(),
        }
    }

    pub(crate) fn into_response(self, media: Media) -> Response {
        bad_request(media, self.status, self.code, &self.message)
    }
}

pub(crate) fn params_from_json(body: Json, limits: &Limits) -> Result<Params, Rejection> {
    let bad = Rejection::bad;
    let Json::Object(mut obj) = body else {
        return Err(bad("the request body must be a JSON object with a `query`"));
    };
    let extensions = object_field(&mut obj, "extensions")?;
    let persisted_id = requested_id(&extensions, obj.get("documentId")).map_err(|e| Rejection {
        status: StatusCode::BAD_REQUEST,
        code: e.code(),
        message: e.to_string(),
    })?;
    let query = match obj.remove("query") {
        Some(Json::String(q)) => q,
        None | Some(Json::Null) if persisted_id.is_some() => String::new(),
        None | Some(Json::Null) => {
            return Err(Rejection {
                status: StatusCode::BAD_REQUEST,
                code: "GRAPHQL_PARSE_FAILED",
                message: "the request has no `query`".into(),
            });
        }
        Some(_) => return Err(bad("`query` must be a string")),
    };
    let operation_name = match obj.remove("operationName") {
        Some(Json::String(s)) => Some(s),
        None | Some(Json::Null) => None,
        Some(_) => return Err(bad("`operationName` must be a string or null")),
    };
    let variables = object_field(&mut obj, "variables")?;
    guard::document(&query, limits.max_document_bytes, limits.max_nesting).map_err(|e| {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            code: "GRAPHQL_PARSE_FAILED",
            message: e.0,
        }
    })?;
    Ok(Params {
        query,
        operation_name,
        variables,
        extensions,
        persisted_id,
    })
}

/// The object `name` of a request, taken out of it (absent or null: empty).
fn object_field(obj: &mut Map<String, Json>, name: &str) -> Result<Map<String, Json>, Rejection> {
    match obj.remove(name) {
        Some(Json::Object(m)) => Ok(m),
        None | Some(Json::Null) => Ok(Map::new()),
        Some(_) => Err(Rejection::bad(&format!(
            "`{name}` must be an object or null"
        ))),
    }
}

pub(crate) fn params_from_query_string(
    raw: Option<&str>,
    limits: &Limits,
) -> Result<Params, Rejection> {
    let bad = Rejection::bad;
    let mut obj = Map::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = match key.as_ref() {
            "variables" | "extensions" => serde_json::from_str(&value)
                .map_err(|_| bad(&format!("`{key}` must be a JSON object")))?,
            _ => Json::String(value.into_owned()),
        };
        obj.insert(key.into_owned(), value);
    }
    params_from_json(Json::Object(obj), limits)
}

/// The kind of operation `name` selects in `doc` (or the only one), if it can be told.
pub(crate) fn selected_operation(
    doc: &ExecutableDocument,
    name: Option<&str>,
) -> Option<OperationType> {
    guard::selected(doc, name).map(|op| op.node.ty)
}

/// The viewer a request's credentials stand for; a bad credential is a 401, never
/// an anonymous request.
pub async fn viewer_of(
    app: &Gateway,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Viewer, AuthError> {
    let creds = Credentials::from_http(headers, query)?;
    resolve_viewer(
        &app.auth().tokens,
        app.store(),
        app.default_account_id(),
        &creds,
        Lasting::Request,
    )
    .await
    .map(|(viewer, _)| viewer)
}

pub(crate) fn unauthenticated(media: Media, e: &AuthError) -> Response {
    let mut resp = bad_request(
        media,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        &e.to_string(),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

/// `GET /graphql`: a WebSocket upgrade, or a query.
pub async fn get(
    State(app): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    let raw = parts.uri.query().map(str::to_string);
    let wants_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        use axum::extract::FromRequestParts;
        return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &app).await
        {
            Ok(ws) => crate::transport::ws::upgrade(app, ws, &parts.headers, raw.as_deref(), peer),
            Err(rejection) => rejection.into_response(),
        };
    }
    let headers = parts.headers;
    if crate::transport::sse::wants(&headers, raw.as_deref(), &parts.method) {
        return crate::transport::sse::handle(app, peer, parts.method, headers, raw, Bytes::new())
            .await;
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    match params_from_query_string(raw.as_deref(), app.limits()) {
        Ok(params) => execute(app, media, params, true, &headers, raw.as_deref(), peer).await,
        Err(rejection) => rejection.into_response(media),
    }
}

/// `POST /graphql`.
pub async fn post(
    State(app): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    if crate::transport::sse::wants(&headers, raw.as_deref(), &axum::http::Method::POST) {
        return crate::transport::sse::handle(
            app,
            peer,
            axum::http::Method::POST,
            headers,
            raw,
            body,
        )
        .await;
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    match params_from_body(&headers, &body, app.limits()) {
        Ok(params) => execute(app, media, params, false, &headers, raw.as_deref(), peer).await,
        Err(rejection) => rejection.into_response(media),
    }
}

/// The parameters of a `POST`: a UTF-8 JSON body.
pub(crate) fn params_from_body(
    headers: &HeaderMap,
    body: &[u8],
    limits: &Limits,
) -> Result<Params, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = content_type
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase());
    let mime = parts.next().unwrap_or_default();
    let charset_ok = parts
        .all(|p| !p.starts_with("charset=") || p == "charset=utf-8" || p == "charset=\"utf-8\"");
    if mime != "application/json" || !charset_ok {
        return Err(Rejection {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "BAD_USER_INPUT",
            message: "send the request as Content-Type: application/json (UTF-8)".into(),
        });
    }
    let body: Json = serde_json::from_slice(body)
        .map_err(|e| Rejection::bad(&format!("the request body is not valid JSON: {e}")))?;
    params_from_json(body, limits)
}

fn not_acceptable() -> Response {
    bad_request(
        Media::Json,
        StatusCode::NOT_ACCEPTABLE,
        "BAD_USER_INPUT",
        "accept application/graphql-response+json or application/json",
    )
}

/// Runs a GraphQL request, in a span of its own when traces are exported (see
/// `crate::telemetry`): named by the operation, never with its variables.
async fn execute(
    app: Gateway,
    media: Media,
    params: Params,
    via_get: bool,
    headers: &HeaderMap,
    query_string: Option<&str>,
    peer: SocketAddr,
) -> Response {
    use tracing::Instrument;
    use tracing::field::Empty;
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "graphql",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        graphql.operation.type = Empty,
        graphql.operation.name = Empty,
        http.request.method = if via_get { "GET" } else { "POST" },
    );
    if !span.is_disabled() {
        crate::telemetry::follow(&span, headers);
    }
    execute_in_span(app, media, params, via_get, headers, query_string, peer)
        .instrument(span)
        .await
}

async fn execute_in_span(
    app: Gateway,
    media: Media,
    mut params: Params,
    via_get: bool,
    headers: &HeaderMap,
    query_string: Option<&str>,
    peer: SocketAddr,
) -> Response {
    let started = Instant::now();
    let viewer = match viewer_of(&app, headers, query_string).await {
        Ok(v) => v,
        Err(e) => {
            app.metrics()
                .observe(OpKind::invalid, false, started.elapsed());
            return unauthenticated(media, &e);
        }
    };
    // After the credentials: a refused caller registers nothing.
    if let Err(rejection) = params.resolve(app.persisted()) {
        app.metrics()
            .observe(OpKind::invalid, false, started.elapsed());
        return rejection.into_response(media);
    }
    let query = params.query;
    let mut request = async_graphql::Request::new(query.clone())
        .variables(Variables::from_json(Json::Object(params.variables)))
        .data(RequestCtx::new(
            app.store().clone(),
            viewer,
            app.auth().clone(),
            Some(peer.ip()),
        ));
    if let Some(name) = &params.operation_name {
        request = request.operation_name(name);
    }
    request.extensions =
        serde_json::from_value(Json::Object(params.extensions)).unwrap_or_default();
    let op = match app.documents().parse(&query) {
        Ok(doc) => {
            request.set_parsed_query(ExecutableDocument::clone(&doc));
            if let Err(message) =
                guard::checked(&doc, params.operation_name.as_deref(), app.limits())
            {
                app.metrics()
                    .observe(OpKind::invalid, false, started.elapsed());
                let mut e = ServerError::new(message, None);
                set_code(&mut e, "GRAPHQL_VALIDATION_FAILED");
                return respond(media, request_error(vec![e]), true);
            }
            // `@live` needs a stream; `@live(if: false)` is a plain query.
            if let Some(op) = guard::selected(&doc, params.operation_name.as_deref())
                && live::has_live(&op.node)
            {
                let variables = match serde_json::to_value(&request.variables) {
                    Ok(Json::Object(v)) => v,
                    _ => serde_json::Map::new(),
                };
                let refusal = match live::live_of(&op.node, &variables) {
                    Err(m) => Some(m),
                    Ok(Some(_)) => Some(
                        "a live query (@live) needs a stream: send it over graphql-ws or GraphQL over SSE"
                            .to_string(),
                    ),
                    Ok(None) => None,
                };
                if let Some(message) = refusal {
                    app.metrics()
                        .observe(OpKind::invalid, false, started.elapsed());
                    return bad_request(media, StatusCode::BAD_REQUEST, "BAD_USER_INPUT", &message);
                }
                request.set_parsed_query(live::without_live(&doc));
            }
            selected_operation(&doc, params.operation_name.as_deref())
        }
        Err(e) => {
            app.metrics()
                .observe(OpKind::invalid, false, started.elapsed());
            let mut e = e;
            set_code(&mut e, "GRAPHQL_PARSE_FAILED");
            return respond(media, request_error(vec![e]), true);
        }
    };
    let kind = match op {
        Some(OperationType::Query) => OpKind::query,
        Some(OperationType::Mutation) => OpKind::mutation,
        Some(OperationType::Subscription) => OpKind::subscription,
        None => OpKind::invalid,
    };
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let ty = match op {
            Some(OperationType::Query) => "query",
            Some(OperationType::Mutation) => "mutation",
            Some(OperationType::Subscription) => "subscription",
            None => "GraphQL operation",
        };
        span.record("graphql.operation.type", ty);
        // The name the client sent, only when it named an operation of the
        // document (else any text could be sent), and bounded.
        match params.operation_name.as_deref().filter(|_| op.is_some()) {
            Some(name) => {
                let name = bounded(name, MAX_SPAN_NAME_BYTES);
                span.record("graphql.operation.name", name);
                span.record("otel.name", format!("{ty} {name}"));
            }
            None => {
                span.record("otel.name", ty);
            }
        }
    }
    if via_get && op == Some(OperationType::Mutation) {
        app.metrics().observe(kind, false, started.elapsed());
        let mut resp = bad_request(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_USER_INPUT",
            "mutations are only accepted over POST",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let response = app.schema().execute(request).await;
    let (body, is_request_error) = finish(
        response,
        &query,
        app.schema(),
        params.operation_name.as_deref(),
    );
    let ok = body.get("errors").is_none();
    app.metrics().observe(kind, ok, started.elapsed());
    tracing::Span::current().record("otel.status_code", if ok { "OK" } else { "ERROR" });
    respond(media, body, is_request_error)
}

/// The longest operation name put in a span, in bytes.
const MAX_SPAN_NAME_BYTES: usize = 100;

/// At most `max` bytes of `s`, cut at a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A request error: no `data` entry at all (the operation never ran).
fn request_error(errors: Vec<ServerError>) -> Json {
    json!({ "errors": errors })
}

/// Turns an executed response into its JSON body, giving every error a code; says
/// whether it was a request error (validation failed, nothing executed).
fn finish(
    mut response: GqlResponse,
    query: &str,
    schema: &Schema,
    operation_name: Option<&str>,
) -> (Json, bool) {
    crate::graphql::take_paths(&mut response.errors);
    let is_request_error = !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.is_empty());
    if !is_request_error
        && !response.errors.is_empty()
        && let Ok(doc) = async_graphql::parser::parse_query(query)
    {
        crate::graphql::complete(schema.registry(), &doc, operation_name, &mut response);
    }
    give_codes(&mut response.errors, query, is_request_error);
    if is_request_error {
        return (request_error(response.errors), true);
    }
    let mut body = Map::new();
    body.insert(
        "data".into(),
        response.data.into_json().unwrap_or(Json::Null),
    );
    if !response.errors.is_empty() {
        body.insert(
            "errors".into(),
            serde_json::to_value(&response.errors).unwrap_or(Json::Null),
        );
    }
    if !response.extensions.is_empty() {
        body.insert(
            "extensions".into(),
            serde_json::to_value(&response.extensions).unwrap_or(Json::Null),
        );
    }
    (Json::Object(body), false)
}

fn respond(media: Media, body: Json, is_request_error: bool) -> Response {
    let status = if is_request_error && media == Media::GraphqlResponseJson {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Option<Media> {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(accept).expect("header"),
        );
        negotiate(&h)
    }

    #[test]
    fn negotiates_with_q_values() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Media::Json));
        assert_eq!(pick("*/*"), Some(Media::Json));
        assert_eq!(
            pick("application/graphql-response+json"),
            Some(Media::GraphqlResponseJson)
        );
        assert_eq!(pick("application/json"), Some(Media::Json));
        assert_eq!(
            pick("application/graphql-response+json, application/json"),
            Some(Media::GraphqlResponseJson)
        );
        assert_eq!(
            pick("application/graphql-response+json;q=0.5, application/json"),
            Some(Media::Json)
        );
        assert_eq!(
            pick("application/graphql-response+json;q=0.9, application/json;q=0.8"),
            Some(Media::GraphqlResponseJson)
        );
        assert_eq!(
            pick("application/json;q=0.00, application/graphql-response+json"),
            Some(Media::GraphqlResponseJson)
        );
        assert_eq!(pick("application/json;q=0.000"), None);
        assert_eq!(pick("text/html"), None);
        assert_eq!(pick("text/html, */*;q=0.1"), Some(Media::Json));
    }
}
