//! A small WebSocket client for the tests: speaks either subprotocol frame by
//! frame, with timeouts, so each test can assert exactly what a client receives.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    Closed(u16, String),
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY: &str = "graphql-ws";

impl Ws {
    /// Opens `base` + `/graphql` + `query` with `subprotocol` (none: no header).
    pub async fn open(base: &str, subprotocol: Option<&str>, query: &str) -> Ws {
        let url = format!("{}/graphql{query}", base.replace("http://", "ws://"));
        let mut req = url.into_client_request().expect("request");
        if let Some(p) = subprotocol {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(p).expect("header"),
            );
        }
        let (stream, _) = connect_async(req).await.expect("connect");
        Ws { stream }
    }

    /// Like [`Ws::open`], but returns the handshake error instead of failing.
    pub async fn try_open(
        base: &str,
        subprotocol: Option<&str>,
        query: &str,
    ) -> Result<Ws, String> {
        let url = format!("{}/graphql{query}", base.replace("http://", "ws://"));
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(p) = subprotocol {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(p).map_err(|e| e.to_string())?,
            );
        }
        connect_async(req)
            .await
            .map(|(stream, _)| Ws { stream })
            .map_err(|e| e.to_string())
    }

    /// Opens a graphql-transport-ws connection and completes `connection_init` with
    /// `token` (none: anonymous); fails the test unless acknowledged.
    pub async fn acked(base: &str, token: Option<&str>) -> Ws {
        let mut ws = Ws::open(base, Some(TRANSPORT_WS), "").await;
        ws.init(token).await;
        ws
    }

    pub async fn init(&mut self, token: Option<&str>) {
        let payload = token.map(|t| json!({ "token": t })).unwrap_or(json!({}));
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = self.next().await;
        assert_eq!(
            ack,
            Frame::Json(json!({ "type": "connection_ack" })),
            "expected connection_ack"
        );
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// Sends `texts` as one burst: every frame is written before one flush.
    pub async fn send_burst(&mut self, texts: &[String]) {
        for text in texts {
            self.stream
                .feed(Message::text(text.clone()))
                .await
                .expect("feed");
        }
        self.stream.flush().await.expect("flush");
    }

    /// Subscribes operation `id` (graphql-transport-ws).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next frame other than a server ping (answered) or keep-alive, within 10 s.
    pub async fn next(&mut self) -> Frame {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// The next frame within `wait`, or `None` if nothing came (pings answered).
    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Frame::Closed(1006, "stream ended".into())),
                Ok(Some(Err(e))) => return Some(Frame::Closed(1006, e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    match v["type"].as_str() {
                        Some("ping") => self.send(json!({ "type": "pong" })).await,
                        Some("ka") => {}
                        _ => return Some(Frame::Json(v)),
                    }
                }
                Message::Close(Some(f)) => {
                    return Some(Frame::Closed(u16::from(f.code), f.reason.to_string()));
                }
                Message::Close(None) => {
                    return Some(Frame::Closed(u16::from(CloseCode::Status), String::new()));
                }
                _ => {}
            }
        }
    }

    /// The next raw frame within `wait`, pings included and unanswered.
    pub async fn raw_within(&mut self, wait: Duration) -> Option<Frame> {
        match tokio::time::timeout(wait, self.stream.next()).await {
            Err(_) => None,
            Ok(Some(Ok(Message::Text(t)))) => {
                Some(Frame::Json(serde_json::from_str(t.as_str()).expect("JSON")))
            }
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                Some(Frame::Closed(u16::from(f.code), f.reason.to_string()))
            }
            Ok(_) => Some(Frame::Closed(1006, "other".into())),
        }
    }

    /// The payload of the next `next` message for `id` (fails on anything else).
    pub async fn next_payload(&mut self, id: &str) -> Value {
        match self.next().await {
            Frame::Json(v) if v["type"] == "next" && v["id"] == id => v["payload"].clone(),
            other => panic!("expected next for {id}, got {other:?}"),
        }
    }

    /// The id of the next `next` message, whichever operation it is for.
    pub async fn next_payload_of_any(&mut self) -> String {
        match self.next().await {
            Frame::Json(v) if v["type"] == "next" => {
                v["id"].as_str().unwrap_or_default().to_string()
            }
            other => panic!("expected next, got {other:?}"),
        }
    }

    /// Expects operation `id` to fail as graphql-ws's reference server fails a
    /// subscription that cannot start: a `next` whose first error has `code`,
    /// then `complete`.
    pub async fn fails_with(&mut self, id: &str, code: &str) {
        let failed = self.next_payload(id).await;
        assert_eq!(failed["errors"][0]["extensions"]["code"], code, "{failed}");
        assert_eq!(
            self.next().await,
            Frame::Json(json!({ "type": "complete", "id": id }))
        );
    }

    /// Waits for the close frame, skipping data frames; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Frame::Closed(code, reason) => return (code, reason),
                Frame::Json(_) => continue,
            }
        }
    }

    /// Asserts nothing but pings arrives for `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(f) = self.next_within(wait).await {
            panic!("expected nothing, got {f:?}");
        }
    }

    /// Sends a close frame with `code` and returns the server's reply.
    pub async fn close_handshake(&mut self, code: u16) -> Option<Frame> {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        self.stream
            .send(Message::Close(Some(frame)))
            .await
            .expect("send close");
        self.raw_within(Duration::from_secs(5)).await
    }

    /// Drops the TCP connection without a close frame.
    pub async fn abort(self) {
        drop(self.stream);
    }
}
