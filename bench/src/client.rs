//! Minimal protocol clients for the load generator: tokens, GraphQL over HTTP,
//! graphql-transport-ws and GraphQL over SSE (distinct connections), with
//! connections spread over several loopback source addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use nix::sys::socket::{setsockopt, sockopt};

use crate::Target;
use crate::stamped::{Arrival, Stamped};

/// An HS256 token for user `sub` of the default account.
pub fn token(secret: &str, sub: &str) -> String {
    let claims = json!({ "sub": sub, "role": "USER", "account": "default", "exp": now_nanos() / 1_000_000_000 + 24 * 3600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Wall-clock nanoseconds (shared by sender and receivers on one machine).
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn server_addr(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("{host} is not IP:port"))?;
    Ok((addr, format!("/{path}")))
}

/// A TCP connection to the target from loopback source `source`, with kernel
/// receive timestamps on.
pub async fn tcp(target: &Target, source: IpAddr) -> anyhow::Result<Stamped> {
    let (addr, _) = server_addr(&target.url)?;
    let socket = TcpSocket::new_v4()?;
    // Let connect() pick the port, by the whole 4-tuple: bind() would reserve one
    // per address, and with an earlier scenario's tens of thousands of ports in
    // TIME_WAIT its search stalls the generator for seconds (the server then
    // closes connections whose `connection_init` is late, 4408).
    setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(Stamped::new(socket.connect(addr).await?)?)
}

pub type Ws = WebSocketStream<Stamped>;

/// Opens a graphql-transport-ws connection and completes init with `token`.
pub async fn ws_open(target: &Target, source: IpAddr, token: &str) -> anyhow::Result<Ws> {
    let stream = tcp(target, source).await?;
    let url = target.url.replace("http://", "ws://");
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // Small buffers, as the server has: tungstenite's defaults (128 KiB each way,
    // zeroed per connection) made opening thousands of connections page-fault the
    // generator's one core for seconds.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(req, stream, Some(config)).await?;
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": { "token": token } }).to_string(),
    ))
    .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                match v["type"].as_str() {
                    Some("connection_ack") => return Ok(ws),
                    Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                    _ => {}
                }
            }
            Some(Ok(Message::Close(f))) => bail!("closed before ack: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before ack"),
        }
    }
}

/// Sends `subscribe` for `query` as operation `id`.
pub async fn ws_subscribe(ws: &mut Ws, id: &str, query: &str) -> anyhow::Result<()> {
    ws.send(Message::text(
        json!({ "type": "subscribe", "id": id, "payload": { "query": query } }).to_string(),
    ))
    .await?;
    Ok(())
}

/// The text of the next `next` frame and when it arrived (see [`Stamped`]),
/// answering pings; `None` when the operation or connection ends. The frame is
/// not parsed: the generator plays every client on one core.
pub async fn ws_next(ws: &mut Ws) -> Option<(String, u128)> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                let t = t.as_str();
                if t.starts_with(r#"{"type":"next""#) || t.contains(r#""type":"next""#) {
                    return Some((t.to_string(), ws.get_ref().arrival().nanos()));
                }
                if t.contains(r#""type":"ping""#) {
                    let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                } else if t.contains(r#""type":"error""#) || t.contains(r#""type":"complete""#) {
                    return None;
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A GraphQL-over-SSE subscription (distinct connections mode) on a connection
/// of its own: yields each `next` event's data.
pub struct Sse {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    arrival: Arrival,
}

pub async fn sse_open(
    target: &Target,
    source: IpAddr,
    token: &str,
    query: &str,
) -> anyhow::Result<Sse> {
    let (addr, path) = server_addr(&target.url)?;
    let stream = tcp(target, source).await?;
    let arrival = stream.arrival();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({ "query": query }).to_string(),
        )))?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("SSE subscribe: HTTP {}", resp.status());
    }
    Ok(Sse {
        body: resp.into_body(),
        buf: Vec::new(),
        arrival,
    })
}

impl Sse {
    /// The next `next` event's data, unparsed, and when its last bytes arrived;
    /// `None` when the stream ends.
    pub async fn next(&mut self) -> Option<(String, u128)> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut event = "message";
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = match e.trim() {
                            "next" => "next",
                            "complete" => "complete",
                            _ => "other",
                        };
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                match event {
                    "next" | "message" if !data.is_empty() => {
                        return Some((data, self.arrival.nanos()));
                    }
                    "complete" => return None,
                    _ => continue,
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(chunk) = frame.into_data() {
                self.buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// A subscriber of either transport.
pub enum Subscriber {
    Ws(Box<Ws>),
    Sse(Box<Sse>),
}

impl Subscriber {
    /// The next event's frame and its arrival time; `None` at the end.
    pub async fn next(&mut self) -> Option<(String, u128)> {
        match self {
            Subscriber::Ws(ws) => ws_next(ws).await,
            Subscriber::Sse(sse) => sse.next().await,
        }
    }
}

/// POSTs a GraphQL request; returns the body and the time it took.
pub async fn gql(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<(Value, Duration)> {
    let started = std::time::Instant::now();
    let body: Value = client
        .post(&target.url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    let took = started.elapsed();
    if body.get("errors").is_some() {
        bail!("GraphQL errors: {body}");
    }
    Ok((body, took))
}

/// The server's resident memory in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) the process has used, in seconds. The kernel reports
/// it in USER_HZ ticks, 100 per second on Linux.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A client for many concurrent HTTP requests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}
