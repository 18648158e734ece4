//! The two WebSocket subprotocols as one pure state machine: client frames and
//! driver events in, [`Out`] actions out. No sockets, no clocks, so every rule of
//! graphql-ws's PROTOCOL.md (and of subscriptions-transport-ws) is unit-testable.
//!
//! - `graphql-transport-ws` (graphql-ws): `connection_init` → `connection_ack`;
//!   `subscribe` → `next`* → `complete` | `error`; `ping`/`pong`; close codes 4400
//!   bad message, 4401 subscribe before ack, 4403 forbidden, 4409 duplicate id,
//!   4429 second init (4408 init timeout is the driver's).
//! - `graphql-ws` (legacy subscriptions-transport-ws): `connection_init` →
//!   `connection_ack` (+ `ka`); `start` → `data`* → `complete` | `error`; `stop`;
//!   `connection_terminate`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

/// Which subprotocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `graphql-transport-ws`, the graphql-ws protocol.
    TransportWs,
    /// `graphql-ws`, the legacy subscriptions-transport-ws protocol.
    Legacy,
}

impl Proto {
    /// The subprotocol name.
    pub fn name(self) -> &'static str {
        match self {
            Proto::TransportWs => "graphql-transport-ws",
            Proto::Legacy => "graphql-ws",
        }
    }
}

/// A GraphQL request carried by `subscribe` / `start`.
pub use crate::app::operation::OpRequest;
use crate::app::operation::{MAX_IN_FLIGHT, counts_as_subscription, too_many_in_flight};
use crate::graphql::persisted::{Persisted, PersistedError, requested_id};

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Send this text frame.
    Send(String),
    /// Close the socket with this code and reason (then stop).
    Close(u16, String),
    /// Authenticate the `connection_init` payload, then call `accepted`/`refused`.
    Authenticate(Map<String, Json>),
    /// Start executing operation `id`.
    Start(String, OpRequest),
    /// Stop operation `id` (the client completed/stopped it).
    Stop(String),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Machine {
    proto: Proto,
    init_received: bool,
    acked: bool,
    active: HashSet<String>,
    /// The running operations that count toward the limit: subscriptions
    /// (and live queries), never a query or mutation in flight.
    subscriptions: HashSet<String>,
    max_subscriptions: usize,
    /// Documents requests may name by id.
    persisted: Arc<Persisted>,
}

fn frame(v: Json) -> Out {
    Out::Send(v.to_string())
}

/// A subscribe payload: the request (its query empty when it names a persisted
/// document instead, see `graphql::persisted`) and the id it names, if any.
fn parse_request(payload: Option<&Json>) -> Option<(OpRequest, Named)> {
    let p = payload?.as_object()?;
    let object = |k: &str| match p.get(k) {
        None | Some(Json::Null) => Some(Map::new()),
        Some(Json::Object(m)) => Some(m.clone()),
        Some(_) => None,
    };
    let extensions = object("extensions")?;
    let named = requested_id(&extensions, p.get("documentId"));
    let query = match p.get("query") {
        Some(Json::String(q)) => q.clone(),
        None | Some(Json::Null) if !matches!(named, Ok(None)) => String::new(),
        _ => return None,
    };
    let operation_name = match p.get("operationName") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    Some((
        OpRequest {
            query,
            operation_name,
            variables: object("variables")?,
            extensions,
        },
        named,
    ))
}

/// The persisted document a request names, if any.
type Named = Result<Option<String>, PersistedError>;

impl Machine {
    /// A fresh connection allowing `max_subscriptions` concurrent subscriptions
    /// (queries and mutations run beside them, whatever their number).
    pub fn new(proto: Proto, max_subscriptions: usize, persisted: Arc<Persisted>) -> Machine {
        Machine {
            persisted,
            proto,
            init_received: false,
            acked: false,
            active: HashSet::new(),
            subscriptions: HashSet::new(),
            max_subscriptions,
        }
    }

    /// Forgets operation `id`; whether it was running.
    fn remove(&mut self, id: &str) -> bool {
        self.subscriptions.remove(id);
        self.active.remove(id)
    }

    /// The subprotocol.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Whether `connection_init` arrived (the init timeout no longer applies).
    pub fn initialised(&self) -> bool {
        self.init_received
    }

    /// Whether operation `id` is running.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.contains(id)
    }

    /// How many operations run.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// A text frame from the client.
    pub fn on_text(&mut self, text: &str) -> Vec<Out> {
        let bad = |why: &str| vec![Out::Close(4400, why.to_string())];
        let Ok(Json::Object(msg)) = serde_json::from_str::<Json>(text) else {
            return match self.proto {
                Proto::TransportWs => bad("Invalid message received"),
                Proto::Legacy => vec![frame(
                    json!({ "type": "connection_error", "payload": { "message": "Message must be a JSON object" } }),
                )],
            };
        };
        let ty = msg.get("type").and_then(Json::as_str).unwrap_or_default();
        let id = msg.get("id").and_then(Json::as_str).map(str::to_string);
        match (self.proto, ty) {
            (_, "connection_init") => {
                if self.init_received {
                    return match self.proto {
                        Proto::TransportWs => {
                            vec![Out::Close(4429, "Too many initialisation requests".into())]
                        }
                        Proto::Legacy => vec![],
                    };
                }
                self.init_received = true;
                let payload = match msg.get("payload") {
                    Some(Json::Object(p)) => p.clone(),
                    None | Some(Json::Null) => Map::new(),
                    Some(_) if self.proto == Proto::TransportWs => {
                        return bad("Invalid message received");
                    }
                    Some(_) => Map::new(),
                };
                vec![Out::Authenticate(payload)]
            }
            (Proto::TransportWs, "ping") => {
                let mut pong = json!({ "type": "pong" });
                if let Some(p) = msg.get("payload") {
                    pong["payload"] = p.clone();
                }
                vec![frame(pong)]
            }
            (Proto::TransportWs, "pong") => vec![],
            (Proto::TransportWs, "subscribe") => {
                if !self.acked {
                    return vec![Out::Close(4401, "Unauthorized".into())];
                }
                let (Some(id), Some(request)) = (
                    id.filter(|i| !i.is_empty()),
                    parse_request(msg.get("payload")),
                ) else {
                    return bad("Invalid message received");
                };
                if self.active.contains(&id) {
                    return vec![Out::Close(
                        4409,
                        format!("Subscriber for {id} already exists"),
                    )];
                }
                self.start(id, request)
            }
            (Proto::TransportWs, "complete") => match id {
                Some(id) if self.remove(&id) => vec![Out::Stop(id)],
                Some(_) => vec![],
                None => bad("Invalid message received"),
            },
            (Proto::Legacy, "start") => {
                let Some(id) = id.filter(|i| !i.is_empty()) else {
                    return vec![frame(
                        json!({ "type": "error", "payload": { "message": "start needs an id" } }),
                    )];
                };
                if !self.acked {
                    return vec![frame(
                        json!({ "type": "error", "id": id, "payload": { "message": "send connection_init first" } }),
                    )];
                }
                let Some(request) = parse_request(msg.get("payload")) else {
                    return vec![frame(
                        json!({ "type": "error", "id": id, "payload": { "message": "start needs a payload with a query" } }),
                    )];
                };
                if self.active.contains(&id) {
                    // subscriptions-transport-ws servers replace the operation.
                    let mut out = vec![Out::Stop(id.clone())];
                    self.remove(&id);
                    out.extend(self.start(id, request));
                    return out;
                }
                self.start(id, request)
            }
            (Proto::Legacy, "stop") => match id {
                Some(id) if self.remove(&id) => vec![
                    Out::Stop(id.clone()),
                    frame(json!({ "type": "complete", "id": id })),
                ],
                _ => vec![],
            },
            (Proto::Legacy, "connection_terminate") => {
                vec![Out::Close(1000, "Normal Closure".into())]
            }
            (Proto::TransportWs, _) => bad("Invalid message received"),
            (Proto::Legacy, other) => {
                vec![frame(
                    json!({ "type": "error", "id": id, "payload": { "message": format!("unknown message type \"{other}\"") } }),
                )]
            }
        }
    }

    fn start(&mut self, id: String, (mut request, named): (OpRequest, Named)) -> Vec<Out> {
        match named.and_then(|named| self.persisted.resolve(&request.query, named.as_deref())) {
            Ok(Some(text)) => request.query = text.to_string(),
            Ok(None) => {}
            Err(e) => return vec![self.error_frame(&id, vec![e.to_json()])],
        }
        let subscription = counts_as_subscription(&request);
        if subscription {
            if self.subscriptions.len() >= self.max_subscriptions {
                let error = json!({ "message": format!("at most {} subscriptions per connection", self.max_subscriptions), "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" } });
                return vec![self.error_frame(&id, vec![error])];
            }
            self.subscriptions.insert(id.clone());
        } else if self.active.len() - self.subscriptions.len() >= MAX_IN_FLIGHT {
            return vec![self.error_frame(&id, vec![too_many_in_flight()])];
        }
        self.active.insert(id.clone());
        vec![Out::Start(id, request)]
    }

    fn error_frame(&self, id: &str, errors: Vec<Json>) -> Out {
        match self.proto {
            Proto::TransportWs => frame(json!({ "type": "error", "id": id, "payload": errors })),
            Proto::Legacy => {
                frame(json!({ "type": "error", "id": id, "payload": { "errors": errors } }))
            }
        }
    }

    /// The driver authenticated `connection_init`.
    pub fn accepted(&mut self) -> Vec<Out> {
        self.acked = true;
        let mut out = vec![frame(json!({ "type": "connection_ack" }))];
        if self.proto == Proto::Legacy {
            out.push(frame(json!({ "type": "ka" })));
        }
        out
    }

    /// The driver refused `connection_init` because of `why`.
    pub fn refused(&mut self, why: &str) -> Vec<Out> {
        match self.proto {
            Proto::TransportWs => vec![Out::Close(4403, format!("Forbidden: {why}"))],
            Proto::Legacy => vec![
                frame(
                    json!({ "type": "connection_error", "payload": { "message": format!("Forbidden: {why}") } }),
                ),
                Out::Close(4403, format!("Forbidden: {why}")),
            ],
        }
    }

    /// A result of operation `id` (ignored once it stopped).
    pub fn result(&mut self, id: &str, payload: Json) -> Vec<Out> {
        if !self.active.contains(id) {
            return vec![];
        }
        let ty = match self.proto {
            Proto::TransportWs => "next",
            Proto::Legacy => "data",
        };
        vec![frame(json!({ "type": ty, "id": id, "payload": payload }))]
    }

    /// Like [`Machine::result`] with the payload already serialized: the frame
    /// text, or `None` once the operation stopped. The hot path: no JSON tree, no
    /// formatting machinery, one allocation per delivery.
    pub fn result_text(&mut self, id: &str, payload: &str) -> Option<String> {
        if !self.active.contains(id) {
            return None;
        }
        Some(next_frame(self.proto, id, payload))
    }

    /// Operation `id` failed before producing results (validation, access, …).
    pub fn failed(&mut self, id: &str, errors: Vec<Json>) -> Vec<Out> {
        if !self.remove(id) {
            return vec![];
        }
        vec![self.error_frame(id, errors)]
    }

    /// Operation `id` has no more results.
    pub fn finished(&mut self, id: &str) -> Vec<Out> {
        if !self.remove(id) {
            return vec![];
        }
        vec![frame(json!({ "type": "complete", "id": id }))]
    }

    /// The keep-alive frame to send on each heartbeat.
    pub fn heartbeat(&self) -> Out {
        match self.proto {
            Proto::TransportWs => frame(json!({ "type": "ping" })),
            Proto::Legacy => frame(json!({ "type": "ka" })),
        }
    }
}

/// The text of a result frame of operation `id` (`next`, or the legacy `data`)
/// with its payload already serialized. The hot path: no JSON tree, no
/// formatting machinery, one allocation per delivery.
pub fn next_frame(proto: Proto, id: &str, payload: &str) -> String {
    let ty = match proto {
        Proto::TransportWs => r#"{"type":"next","id":"#,
        Proto::Legacy => r#"{"type":"data","id":"#,
    };
    let mut text = String::with_capacity(ty.len() + id.len() + payload.len() + 16);
    text.push_str(ty);
    // Ids are short, plain strings nearly always; quote any other properly.
    if id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        text.push('"');
        text.push_str(id);
        text.push('"');
    } else {
        text.push_str(&serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into()));
    }
    text.push_str(r#","payload":"#);
    text.push_str(payload);
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str) -> String {
        json!({ "type": "subscribe", "id": id, "payload": { "query": "subscription { changes { cursor } }" } }).to_string()
    }

    fn acked(proto: Proto) -> Machine {
        let mut m = Machine::new(proto, 2, Default::default());
        assert!(matches!(
            m.on_text(r#"{"type":"connection_init"}"#).as_slice(),
            [Out::Authenticate(_)]
        ));
        assert_eq!(
            m.accepted()[0],
            Out::Send(r#"{"type":"connection_ack"}"#.into())
        );
        m
    }

    #[test]
    fn result_frames_are_json_whatever_the_id() {
        for proto in [Proto::TransportWs, Proto::Legacy] {
            let mut m = acked(proto);
            for id in ["1", "a-b_C", "quote\"d \\ and \u{e9}"] {
                let (start, stop) = match proto {
                    Proto::TransportWs => ("subscribe", "complete"),
                    Proto::Legacy => ("start", "stop"),
                };
                let frame = json!({ "type": start, "id": id, "payload": { "query": "subscription { changes { cursor } }" } });
                assert!(matches!(
                    m.on_text(&frame.to_string()).as_slice(),
                    [Out::Start(..)]
                ));
                let text = m.result_text(id, r#"{"data":{"x":1}}"#).expect("active");
                let v: Json = serde_json::from_str(&text).expect("valid JSON");
                let ty = if proto == Proto::TransportWs {
                    "next"
                } else {
                    "data"
                };
                assert_eq!(
                    v,
                    json!({ "type": ty, "id": id, "payload": { "data": { "x": 1 } } })
                );
                m.on_text(&json!({ "type": stop, "id": id }).to_string());
                assert_eq!(m.result_text(id, "{}"), None, "stopped: nothing more");
            }
        }
    }

    #[test]
    fn close_codes() {
        let mut m = Machine::new(Proto::TransportWs, 10, Default::default());
        assert_eq!(
            m.on_text(&sub("1")),
            vec![Out::Close(4401, "Unauthorized".into())]
        );
        assert_eq!(
            m.on_text("not json"),
            vec![Out::Close(4400, "Invalid message received".into())]
        );
        assert_eq!(
            m.on_text(r#"{"type":"nope"}"#),
            vec![Out::Close(4400, "Invalid message received".into())]
        );
        let mut m = acked(Proto::TransportWs);
        assert_eq!(
            m.on_text(r#"{"type":"connection_init"}"#),
            vec![Out::Close(4429, "Too many initialisation requests".into())]
        );
        assert!(matches!(m.on_text(&sub("1")).as_slice(), [Out::Start(id, _)] if id == "1"));
        assert_eq!(
            m.on_text(&sub("1")),
            vec![Out::Close(4409, "Subscriber for 1 already exists".into())]
        );
        assert_eq!(
            m.on_text(r#"{"type":"subscribe","id":"2","payload":{}}"#),
            vec![Out::Close(4400, "Invalid message received".into())]
        );
        assert_eq!(
            m.refused("token expired"),
            vec![Out::Close(4403, "Forbidden: token expired".into())]
        );
    }

    #[test]
    fn lifecycle_and_limits() {
        let mut m = acked(Proto::TransportWs);
        assert!(matches!(m.on_text(&sub("a")).as_slice(), [Out::Start(..)]));
        assert!(matches!(m.on_text(&sub("b")).as_slice(), [Out::Start(..)]));
        let third = m.on_text(&sub("c"));
        assert!(
            matches!(&third[..], [Out::Send(s)] if s.contains("TOO_MANY_SUBSCRIPTIONS") && s.contains(r#""id":"c""#)),
            "{third:?}"
        );
        assert_eq!(
            m.result("a", json!({ "data": 1 })),
            vec![Out::Send(
                r#"{"type":"next","id":"a","payload":{"data":1}}"#.into()
            )]
        );
        assert_eq!(
            m.on_text(r#"{"type":"complete","id":"a"}"#),
            vec![Out::Stop("a".into())]
        );
        assert_eq!(
            m.result("a", json!({})),
            vec![],
            "nothing is sent for a completed operation"
        );
        assert_eq!(m.finished("a"), vec![], "nor a complete");
        assert_eq!(
            m.finished("b"),
            vec![Out::Send(r#"{"type":"complete","id":"b"}"#.into())]
        );
        assert!(
            matches!(m.on_text(&sub("a")).as_slice(), [Out::Start(..)]),
            "an id may be reused once complete"
        );
        assert_eq!(
            m.on_text(r#"{"type":"ping","payload":{"x":1}}"#),
            vec![Out::Send(r#"{"type":"pong","payload":{"x":1}}"#.into())]
        );
        assert_eq!(m.on_text(r#"{"type":"pong"}"#), vec![]);
    }

    #[test]
    fn only_subscriptions_count_toward_the_limit() {
        let op = |id: &str, query: &str| {
            json!({ "type": "subscribe", "id": id, "payload": { "query": query } }).to_string()
        };
        let mut m = acked(Proto::TransportWs);
        assert!(matches!(m.on_text(&sub("a")).as_slice(), [Out::Start(..)]));
        assert!(matches!(m.on_text(&sub("b")).as_slice(), [Out::Start(..)]));
        for (id, query) in [
            ("q", "{ me { id } }"),
            ("m", "mutation { signOut(refreshToken: \"x\") }"),
            ("n", "query A { me { id } } mutation B { x }"),
        ] {
            let mut frame = op(id, query);
            if id == "n" {
                frame = json!({ "type": "subscribe", "id": id, "payload": { "query": query, "operationName": "A" } }).to_string();
            }
            assert!(
                matches!(m.on_text(&frame).as_slice(), [Out::Start(i, _)] if i == id),
                "{id} runs beside a full set of subscriptions"
            );
        }
        for (id, query) in [
            ("s", "subscription { changes { cursor } }"),
            ("l", "query @live { me { id } }"),
            ("bad", "subscription {"),
        ] {
            let out = m.on_text(&op(id, query));
            assert!(
                matches!(&out[..], [Out::Send(s)] if s.contains("TOO_MANY_SUBSCRIPTIONS")),
                "{id}: {out:?}"
            );
        }
        assert!(!m.finished("q").is_empty(), "the query ends on its own");
        assert!(!m.finished("a").is_empty());
        assert!(
            matches!(m.on_text(&sub("c")).as_slice(), [Out::Start(..)]),
            "an ended subscription frees its slot"
        );
    }

    #[test]
    fn queries_in_flight_are_bounded_too() {
        let query = |id: &str| {
            json!({ "type": "subscribe", "id": id, "payload": { "query": "{ me { id } }" } })
                .to_string()
        };
        let mut m = acked(Proto::TransportWs);
        for n in 0..MAX_IN_FLIGHT {
            assert!(matches!(
                m.on_text(&query(&format!("q{n}"))).as_slice(),
                [Out::Start(..)]
            ));
        }
        let out = m.on_text(&query("over"));
        assert!(
            matches!(&out[..], [Out::Send(s)] if s.contains("RATE_LIMITED") && s.contains("\"over\"")),
            "{out:?}"
        );
        assert!(
            matches!(m.on_text(&sub("s")).as_slice(), [Out::Start(..)]),
            "subscriptions apart"
        );
        assert!(!m.finished("q0").is_empty());
        assert!(
            matches!(m.on_text(&query("next")).as_slice(), [Out::Start(..)]),
            "a finished one frees its place"
        );
    }

    #[test]
    fn legacy() {
        let mut m = Machine::new(Proto::Legacy, 5, Default::default());
        m.on_text(r#"{"type":"connection_init","payload":{"token":"t"}}"#);
        let ack = m.accepted();
        assert_eq!(ack.len(), 2, "ack and a first ka");
        let start = json!({ "type": "start", "id": "1", "payload": { "query": "subscription { changes { cursor } }" } }).to_string();
        assert!(matches!(m.on_text(&start).as_slice(), [Out::Start(..)]));
        assert_eq!(
            m.result("1", json!({ "data": {} })),
            vec![Out::Send(
                r#"{"type":"data","id":"1","payload":{"data":{}}}"#.into()
            )]
        );
        assert_eq!(
            m.on_text(r#"{"type":"stop","id":"1"}"#),
            vec![
                Out::Stop("1".into()),
                Out::Send(r#"{"type":"complete","id":"1"}"#.into())
            ]
        );
        assert_eq!(
            m.on_text(r#"{"type":"connection_terminate"}"#),
            vec![Out::Close(1000, "Normal Closure".into())]
        );
        assert_eq!(m.heartbeat(), Out::Send(r#"{"type":"ka"}"#.into()));
    }
}
