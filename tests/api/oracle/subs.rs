//! The scoping oracle's subscribers: one background task per subscription that
//! speaks one transport (graphql-ws, legacy graphql-ws, SSE distinct or single
//! connection mode, the `/realtime` feed) and records everything it receives, so
//! the oracle can compare it afterwards with what the access rules allow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::sseclient::Sse;
use crate::wsclient::{Frame, LEGACY, TRANSPORT_WS, Ws};

/// How a subscriber talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Legacy,
    SseDistinct,
    SseSingle,
    Feed,
}

impl Transport {
    pub const ALL: [Transport; 5] = [
        Transport::Ws,
        Transport::Legacy,
        Transport::SseDistinct,
        Transport::SseSingle,
        Transport::Feed,
    ];
}

/// What a subscriber received, in arrival order.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The connection is open and the operation sent.
    pub ready: bool,
    /// Each event: the root field's object (for the feed, `{collection, action,
    /// cursor}`), in arrival order, across reconnections.
    pub events: Vec<Value>,
    /// `extensions.code` of every error received.
    pub errors: Vec<String>,
    /// Why a connection ended (close frames, `complete`, end of stream).
    pub ended: Vec<String>,
}

pub type Shared = Arc<Mutex<Inbox>>;

/// One subscription to open.
#[derive(Debug, Clone)]
pub struct Spec {
    pub transport: Transport,
    /// The GraphQL document (unused by the feed).
    pub query: String,
    pub variables: Value,
    /// The root field whose objects are recorded.
    pub field: String,
    /// `None`: anonymous.
    pub token: Option<String>,
    /// The account slug an anonymous viewer names (`None`: the default account).
    pub account: Option<String>,
    /// For the feed: `?collections=`.
    pub feed_collections: Option<String>,
    /// Resume after this cursor: as the `after` variable for GraphQL transports,
    /// `Last-Event-ID` (or `?after=` on the feed) for SSE when `last_event_id`.
    pub after: Option<String>,
    pub last_event_id: bool,
}

/// Opens `spec` on `base` in a background task that records into `inbox`.
pub fn spawn(base: String, spec: Spec, inbox: Shared) -> JoinHandle<()> {
    tokio::spawn(async move {
        match spec.transport {
            Transport::Ws | Transport::Legacy => ws(&base, &spec, &inbox).await,
            Transport::SseDistinct => sse_distinct(&base, &spec, &inbox).await,
            Transport::SseSingle => sse_single(&base, &spec, &inbox).await,
            Transport::Feed => feed(&base, &spec, &inbox).await,
        }
    })
}

fn lock(inbox: &Shared) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records one GraphQL execution result (`{data}` or `{errors}`).
fn record_result(inbox: &Shared, field: &str, result: &Value) {
    let mut inbox = lock(inbox);
    if let Some(errors) = result["errors"].as_array().filter(|e| !e.is_empty()) {
        for e in errors {
            inbox.errors.push(code_of(e));
        }
        return;
    }
    match result["data"].get(field) {
        Some(v) if v.is_object() => inbox.events.push(v.clone()),
        _ => inbox.errors.push(format!("unexpected result {result}")),
    }
}

fn code_of(error: &Value) -> String {
    error["extensions"]["code"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("no code in {error}"))
}

/// The variables with the resume cursor, when the transport takes it as `after`.
fn variables(spec: &Spec) -> Value {
    let mut vars = spec.variables.clone();
    if let (Some(after), false) = (&spec.after, spec.last_event_id)
        && let Some(map) = vars.as_object_mut()
    {
        map.insert("after".into(), json!(after));
    }
    vars
}

async fn ws(base: &str, spec: &Spec, inbox: &Shared) {
    let legacy = spec.transport == Transport::Legacy;
    let mut ws = Ws::open(base, Some(if legacy { LEGACY } else { TRANSPORT_WS }), "").await;
    let mut payload = json!({});
    if let Some(t) = &spec.token {
        payload["token"] = json!(t);
    }
    if let Some(a) = &spec.account {
        payload["account"] = json!(a);
    }
    ws.send(json!({ "type": "connection_init", "payload": payload }))
        .await;
    match ws.next().await {
        Frame::Json(v) if v["type"] == "connection_ack" => {}
        other => {
            lock(inbox).ended.push(format!("no ack: {other:?}"));
            return;
        }
    }
    let op = json!({ "query": spec.query, "variables": variables(spec) });
    let kind = if legacy { "start" } else { "subscribe" };
    ws.send(json!({ "type": kind, "id": "s", "payload": op }))
        .await;
    lock(inbox).ready = true;
    loop {
        let Some(frame) = ws.next_within(Duration::from_secs(3600)).await else {
            continue;
        };
        match frame {
            Frame::Json(v) => match v["type"].as_str() {
                Some("next") | Some("data") => record_result(inbox, &spec.field, &v["payload"]),
                Some("error") => {
                    // graphql-ws sends a list of errors; the legacy protocol one
                    // error, or `{errors}`.
                    let errors = match &v["payload"] {
                        Value::Array(list) => list.clone(),
                        one => match one["errors"].as_array() {
                            Some(list) => list.clone(),
                            None => vec![one.clone()],
                        },
                    };
                    let mut inbox = lock(inbox);
                    inbox.errors.extend(errors.iter().map(code_of));
                    inbox.ended.push("error".into());
                    return;
                }
                Some("complete") => {
                    lock(inbox).ended.push("complete".into());
                    return;
                }
                _ => lock(inbox).errors.push(format!("unexpected frame {v}")),
            },
            Frame::Closed(code, reason) => {
                lock(inbox).ended.push(format!("closed {code} {reason}"));
                return;
            }
        }
    }
}

/// A request with the viewer's credentials: bearer token, or `X-Account`.
fn credentials(req: reqwest::RequestBuilder, spec: &Spec) -> reqwest::RequestBuilder {
    let req = match &spec.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    match &spec.account {
        Some(a) => req.header("x-account", a),
        None => req,
    }
}

fn with_last_event_id(req: reqwest::RequestBuilder, spec: &Spec) -> reqwest::RequestBuilder {
    match (&spec.after, spec.last_event_id) {
        (Some(after), true) => req.header("last-event-id", after),
        _ => req,
    }
}

/// Reads a stream to its end, handing each event to `on`.
async fn drain(sse: &mut Sse, inbox: &Shared, mut on: impl FnMut(&crate::sseclient::SseEvent)) {
    loop {
        match sse.next_within(Duration::from_secs(3600)).await {
            Some(ev) => on(&ev),
            None => {
                lock(inbox).ended.push("stream ended".into());
                return;
            }
        }
    }
}

async fn sse_distinct(base: &str, spec: &Spec, inbox: &Shared) {
    let client = reqwest::Client::new();
    let req = client
        .post(format!("{base}/graphql/stream"))
        .header("accept", "text/event-stream")
        .json(&json!({ "query": spec.query, "variables": variables(spec) }));
    let mut sse = Sse::open(with_last_event_id(credentials(req, spec), spec)).await;
    lock(inbox).ready = true;
    drain(&mut sse, inbox, |ev| match ev.event.as_deref() {
        Some("next") => record_result(inbox, &spec.field, &ev.json()),
        Some("complete") => lock(inbox).ended.push("complete".into()),
        _ => lock(inbox).errors.push(format!("unexpected event {ev:?}")),
    })
    .await;
}

async fn sse_single(base: &str, spec: &Spec, inbox: &Shared) {
    let client = reqwest::Client::new();
    let url = format!("{base}/graphql/stream");
    let resp = credentials(client.put(&url), spec)
        .send()
        .await
        .expect("reserve");
    assert_eq!(resp.status().as_u16(), 201, "a reservation");
    let token = resp.text().await.expect("reservation token");
    let open = client
        .get(&url)
        .header("accept", "text/event-stream")
        .query(&[("token", &token)]);
    let mut sse = Sse::open(credentials(open, spec)).await;
    let op = client
        .post(&url)
        .header("x-graphql-event-stream-token", &token)
        .json(&json!({ "query": spec.query, "variables": variables(spec), "extensions": { "operationId": "s" } }));
    let resp = credentials(op, spec).send().await.expect("operation");
    if resp.status().as_u16() != 202 {
        // A refused operation answers with its errors instead.
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        record_result(inbox, &spec.field, &body);
        lock(inbox)
            .ended
            .push(format!("operation refused with {status}"));
        return;
    }
    lock(inbox).ready = true;
    drain(&mut sse, inbox, |ev| match ev.event.as_deref() {
        Some("next") => record_result(inbox, &spec.field, &ev.json()["payload"]),
        Some("complete") => lock(inbox).ended.push("complete".into()),
        _ => lock(inbox).errors.push(format!("unexpected event {ev:?}")),
    })
    .await;
}

async fn feed(base: &str, spec: &Spec, inbox: &Shared) {
    let client = reqwest::Client::new();
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(c) = &spec.feed_collections {
        query.push(("collections", c.clone()));
    }
    if let Some(t) = &spec.token {
        query.push(("token", t.clone()));
    }
    if let Some(a) = &spec.account {
        query.push(("account", a.clone()));
    }
    if let (Some(after), false) = (&spec.after, spec.last_event_id) {
        query.push(("after", after.clone()));
    }
    let req = client.get(format!("{base}/realtime")).query(&query);
    let mut sse = Sse::open(with_last_event_id(req, spec)).await;
    lock(inbox).ready = true;
    drain(&mut sse, inbox, |ev| {
        if ev.event.as_deref() == Some("change") {
            let mut v = ev.json();
            v["cursor"] = json!(ev.id.clone().unwrap_or_default());
            lock(inbox).events.push(v);
        } else {
            lock(inbox).errors.push(format!("unexpected event {ev:?}"));
        }
    })
    .await;
}
