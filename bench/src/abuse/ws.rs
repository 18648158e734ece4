//! WebSocket abuse, over a handshake written by hand so that any subprotocol
//! (or none, or an unknown one) can be asked for and garbage can be written
//! mid-handshake or between frames.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::cases::{Ctx, garbage};
use super::tally::summarize;
use crate::client::tcp;
use crate::stamped::Stamped;

/// The subprotocols asked for, in turn: both real ones, none, an unknown one.
const PROTOCOLS: &[Option<&str>] = &[
    Some("graphql-transport-ws"),
    Some("graphql-ws"),
    None,
    Some("mqtt"),
];

type Ws = WebSocketStream<Stamped>;

const UPGRADE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(ctx: &Ctx, proto: Option<&str>) -> String {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {UPGRADE_KEY}\r\nSec-WebSocket-Version: 13\r\n",
        ctx.path, ctx.addr
    );
    if let Some(p) = proto {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req + "\r\n"
}

/// Reads an HTTP response head (byte by byte: nothing after it may be lost).
async fn read_head(stream: &mut Stamped) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Status code of an HTTP response head.
fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Upgrades a fresh connection; `Err(outcome)` when the server refused.
async fn open(ctx: &Ctx, i: u64, proto: Option<&str>) -> anyhow::Result<Result<Ws, String>> {
    let mut stream = tcp(&ctx.target, ctx.source(i)).await?;
    ctx.tally
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stream
        .write_all(upgrade_request(ctx, proto).as_bytes())
        .await?;
    let head = read_head(&mut stream).await?;
    let status = status_of(&head);
    if status != Some(101) {
        // The refusal's body, if it has one (no wait for one that has none).
        let mut body = vec![0u8; 4096];
        let empty = head.to_ascii_lowercase().contains("content-length: 0\r\n");
        let n = if empty {
            0
        } else {
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut body))
                .await
                .unwrap_or(Ok(0))
                .unwrap_or(0)
        };
        let body = String::from_utf8_lossy(&body[..n]).into_owned();
        ctx.tally.inspect(
            "ws_handshake",
            &format!("upgrade with subprotocol {proto:?}"),
            status,
            &body,
        );
        return Ok(Err(summarize(
            &format!("upgrade refused {}", status.unwrap_or(0)),
            &body,
        )));
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(1 << 20));
    Ok(Ok(WebSocketStream::from_raw_socket(
        stream,
        Role::Client,
        Some(config),
    )
    .await))
}

fn init(i: u64, token: Option<&str>) -> Message {
    let payload = match (token, i % 4) {
        (Some(t), 0) => json!({ "Authorization": format!("Bearer {t}") }),
        (Some(t), _) => json!({ "token": t }),
        (None, _) => json!({}),
    };
    Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())
}

/// The type of a subscribe message: `start` in the legacy protocol.
fn subscribe_type(proto: Option<&str>) -> &'static str {
    if proto == Some("graphql-ws") {
        "start"
    } else {
        "subscribe"
    }
}

/// A subscribe (or legacy start) message.
fn subscribe(proto: Option<&str>, id: &str, payload: serde_json::Value) -> Message {
    Message::text(
        json!({ "type": subscribe_type(proto), "id": id, "payload": payload }).to_string(),
    )
}

const SUB: &str = "subscription { postChanged { id } }";

/// Runs one WebSocket case.
pub async fn case(ctx: &Ctx, kind: &'static str, i: u64, v: u64) -> anyhow::Result<()> {
    let proto = PROTOCOLS[v as usize % PROTOCOLS.len()];
    let label = proto.unwrap_or("no subprotocol");
    if kind == "tcp_garbage_mid_handshake" {
        return mid_handshake(ctx, kind, i, v, proto).await;
    }
    let mut ws = match open(ctx, i, proto).await? {
        Ok(ws) => ws,
        Err(refused) => {
            ctx.tally.sent(kind, 1);
            ctx.tally.outcome(kind, format!("{label}: {refused}"));
            return Ok(());
        }
    };
    let tok = ctx.token_for(i);
    let mut frames: Vec<Message> = Vec::new();
    let mut with_init = true;
    let q = |query: &str| json!({ "query": query });
    match kind {
        "ws_invalid_json" => frames.push(Message::text(
            [
                "{",
                "{\"type\":",
                "not json at all",
                "{\"type\":\"subscribe\",\"id\":\"1\",\"payload\":{\"query\":\"subscription { postChanged { id } }\"}",
                "\u{0}\u{1}\u{2}",
                "{\"type\":\"subscribe\",\"id\":\"1\",\"payload\":{\"query\":\"\\ud800\"}}",
            ][v as usize % 6],
        )),
        "ws_non_object" => frames.push(Message::text(
            ["[]", "[1,2,3]", "\"connection_init\"", "42", "null", "true"][v as usize % 6],
        )),
        "ws_unknown_type" => frames.push(Message::text(
            [
                r#"{"type":"bogus"}"#,
                r#"{"type":1}"#,
                r#"{}"#,
                r#"{"type":null,"id":"1"}"#,
                r#"{"type":"next","id":"1","payload":{}}"#,
                r#"{"type":"connection_ack"}"#,
                r#"{"type":"subscribe"}"#,
                r#"{"type":"subscribe","id":"1"}"#,
                r#"{"type":"subscribe","id":5,"payload":{"query":1}}"#,
                r#"{"type":"start","id":"1","payload":{"query":{"a":1}}}"#,
            ][v as usize % 10],
        )),
        "ws_subscribe_before_init" => {
            with_init = false;
            frames.push(subscribe(proto, "1", q(SUB)));
        }
        "ws_duplicate_id" => {
            frames.push(subscribe(proto, "d", q(SUB)));
            frames.push(subscribe(proto, "d", q(SUB)));
        }
        "ws_huge_id" => frames.push(subscribe(proto, &"x".repeat(60_000), q(SUB))),
        "ws_oversized" => frames.push(Message::text(
            json!({ "type": "subscribe", "id": "1", "payload": { "query": "{ postsCount }",
                    "variables": { "pad": "a".repeat(100_000 + (v as usize % 3) * 500_000) } } })
            .to_string(),
        )),
        "ws_binary" => {
            with_init = v.is_multiple_of(2);
            frames.push(Message::binary(garbage(i, 1 + (v as usize % 2000))));
        }
        "ws_deep_document" => {
            let doc = if v.is_multiple_of(2) {
                &ctx.p.deep_list
            } else {
                &ctx.p.deep_selection
            };
            frames.push(subscribe(proto, "1", q(doc)));
        }
        "ws_where_not_nesting" => frames.push(if v.is_multiple_of(2) {
            subscribe(
                proto,
                "1",
                q(&format!(
                    "subscription {{ postChanged(where: {}) {{ id }} }}",
                    ctx.p.not_literal
                )),
            )
        } else {
            Message::text(format!(
                r#"{{"type":"{}","id":"1","payload":{{"query":"subscription($w: PostWhere) {{ postChanged(where: $w) {{ id }} }}","variables":{{"w":{}}}}}}}"#,
                subscribe_type(proto),
                ctx.p.not_json
            ))
        }),
        "ws_where_or_terms" => frames.push(Message::text(format!(
            r#"{{"type":"{}","id":"1","payload":{{"query":"subscription($w: PostWhere) {{ postChanged(where: $w) {{ id }} }}","variables":{{"w":{}}}}}}}"#,
            subscribe_type(proto),
            ctx.p.or_json_small
        ))),
        "ws_rapid_init" => {
            with_init = false;
            for _ in 0..20 {
                frames.push(init(i, tok));
            }
        }
        "ws_out_of_order" => {
            let raw = |s: &str| Message::text(s.to_string());
            if proto == Some("graphql-ws") {
                frames.extend([
                    raw(r#"{"type":"stop","id":"nope"}"#),
                    subscribe(proto, "o", q(SUB)),
                    raw(r#"{"type":"stop","id":"o"}"#),
                    raw(r#"{"type":"stop","id":"o"}"#),
                    subscribe(proto, "o", q(SUB)),
                    raw(r#"{"type":"connection_terminate"}"#),
                    subscribe(proto, "p", q(SUB)),
                ]);
            } else {
                frames.extend([
                    raw(r#"{"type":"complete","id":"nope"}"#),
                    raw(r#"{"type":"pong"}"#),
                    subscribe(proto, "o", q(SUB)),
                    raw(r#"{"type":"complete","id":"o"}"#),
                    raw(r#"{"type":"complete","id":"o"}"#),
                    subscribe(proto, "o", q(SUB)),
                    raw(r#"{"type":"ping"}"#),
                    init(i, tok),
                ]);
            }
        }
        "ws_abrupt_disconnect" => return abrupt(ctx, kind, i, v, ws, tok, proto).await,
        "ws_garbage_bytes" => {
            with_init = v.is_multiple_of(2);
            if with_init {
                ws.send(init(i, tok)).await?;
            }
            let bytes = garbage(i, 1 + (v as usize % 300));
            ws.get_mut().write_all(&bytes).await?;
            ctx.tally.sent(kind, 1);
            let end = drain(ctx, kind, &mut ws, "garbage bytes between frames").await;
            ctx.tally.outcome(kind, format!("{label}: {end}"));
            return Ok(());
        }
        other => bail!("unknown WebSocket case {other}"),
    }
    if with_init {
        ws.send(init(i, tok)).await?;
    }
    let input = match &frames[0] {
        Message::Text(t) => t.as_str().chars().take(120).collect(),
        _ => "a binary frame".to_string(),
    };
    let mut sent = 0;
    for f in frames {
        if ws.send(f).await.is_err() {
            break;
        }
        sent += 1;
    }
    ctx.tally.sent(kind, sent);
    let end = drain(ctx, kind, &mut ws, &input).await;
    ctx.tally.outcome(kind, format!("{label}: {end}"));
    Ok(())
}

/// Reads what the server answers until it closes, or until it has been quiet
/// for a second: "close 4400", "quiet [GRAPHQL_PARSE_FAILED]", "reset".
async fn drain(ctx: &Ctx, kind: &'static str, ws: &mut Ws, input: &str) -> String {
    let mut texts = String::new();
    let until = Instant::now() + Duration::from_secs(3);
    let end = loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_secs(1)), ws.next()).await {
            Err(_) => {
                let _ = ws.close(None).await;
                break "quiet, still open".to_string();
            }
            Ok(None) => break "eof".to_string(),
            Ok(Some(Err(e))) => break format!("error {}", err_word(&e.to_string())),
            Ok(Some(Ok(Message::Close(f)))) => {
                break match f {
                    Some(f) => format!("close {}", u16::from(f.code)),
                    None => "close".to_string(),
                };
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                if texts.len() < 8192 {
                    texts.push_str(t.as_str());
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    ctx.tally.inspect(kind, input, None, &texts);
    summarize(&end, &texts)
}

/// An error in one word (connection reset, broken pipe, protocol error).
fn err_word(e: &str) -> String {
    let e = e.to_lowercase();
    ["reset", "broken pipe", "protocol", "closed"]
        .iter()
        .find(|w| e.contains(*w))
        .map(|w| w.to_string())
        .unwrap_or_else(|| e.chars().take(40).collect())
}

/// Subscribes, then vanishes: sometimes mid-frame, never with a close frame.
async fn abrupt(
    ctx: &Ctx,
    kind: &'static str,
    i: u64,
    v: u64,
    mut ws: Ws,
    tok: Option<&str>,
    proto: Option<&str>,
) -> anyhow::Result<()> {
    ws.send(init(i, tok)).await?;
    ws.send(subscribe(proto, "1", json!({ "query": SUB })))
        .await?;
    let mut sent = 1;
    if v.is_multiple_of(2) {
        // The start of a masked text frame announcing 4,000 bytes, then nothing.
        ws.get_mut()
            .write_all(&[0x81, 0xFE, 0x0F, 0xA0, 1, 2])
            .await?;
        sent += 1;
    }
    ctx.tally.sent(kind, sent);
    drop(ws);
    ctx.tally.outcome(kind, "dropped".into());
    Ok(())
}

/// An upgrade request cut short and followed by garbage, then gone.
async fn mid_handshake(
    ctx: &Ctx,
    kind: &'static str,
    i: u64,
    v: u64,
    proto: Option<&str>,
) -> anyhow::Result<()> {
    let mut stream = tcp(&ctx.target, ctx.source(i)).await?;
    ctx.tally
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let req = upgrade_request(ctx, proto);
    let cut = (v as usize * 7) % req.len();
    let mut bytes = req.as_bytes()[..cut].to_vec();
    bytes.extend(garbage(i, 1 + (v as usize % 500)));
    let _ = stream.write_all(&bytes).await;
    ctx.tally.sent(kind, 1);
    let end = if v.is_multiple_of(3) {
        "dropped".to_string()
    } else {
        let _ = stream.shutdown().await;
        let mut answer = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut answer)).await {
            Ok(Ok(0)) => "closed without answer".to_string(),
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&answer[..n]).into_owned();
                let status = status_of(&text);
                ctx.tally
                    .inspect(kind, "an upgrade request cut short", status, &text);
                summarize(&format!("http {}", status.unwrap_or(0)), &text)
            }
            Ok(Err(e)) => format!("error {}", err_word(&e.to_string())),
            Err(_) => "no answer in 1 s".to_string(),
        }
    };
    ctx.tally.outcome(kind, end);
    Ok(())
}
