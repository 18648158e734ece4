//! A small Server-Sent Events reader over reqwest, for black-box tests.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};

/// One event of a stream; a comment has `comment` set and nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl SseEvent {
    /// The data as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

pub struct Sse {
    resp: reqwest::Response,
    buf: String,
    ended: bool,
}

impl Sse {
    /// Sends `req` and expects a 200 event stream.
    pub async fn open(req: RequestBuilder) -> Sse {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if status != StatusCode::OK || !ct.starts_with("text/event-stream") {
            let body = resp.text().await.unwrap_or_default();
            panic!("expected a 200 event stream, got {status} {ct}: {body}");
        }
        Sse {
            resp,
            buf: String::new(),
            ended: false,
        }
    }

    /// The next event or comment, if one comes within `wait`.
    pub async fn raw_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let mut ev = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        let _ = rest;
                        ev.comment = true;
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => ev.event = Some(value.to_string()),
                            "id" => ev.id = Some(value.to_string()),
                            "data" => data.push(value.to_string()),
                            _ => {}
                        }
                    } else if line == "data" {
                        data.push(String::new());
                    }
                }
                ev.data = data.join("\n");
                return Some(ev);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event (comments skipped), if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.raw_within(left).await {
                Some(ev) if ev.comment && ev.event.is_none() && ev.data.is_empty() => continue,
                other => return other,
            }
        }
    }

    /// The next event; panics after 5 s.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("an event within 5 s")
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(ev) = self.next_within(wait).await {
            panic!("expected silence, got {ev:?}");
        }
    }

    /// Whether the server ends the stream within `wait` (events before the end
    /// are skipped).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.raw_within(left).await.is_none() {
                return self.ended;
            }
        }
    }
}
