//! Memory budgets: a stalled reader costs its connection a bounded number of
//! bytes (`--max-buffer-bytes`), not a copy of every large frame written while
//! it stalls, and a record is capped in size (`--max-record-bytes`).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::harness::{Db, EXAMPLE_APP, Server};
use crate::wsclient::{TRANSPORT_WS, Ws};
use livegate::graphql::Limits;
use livegate::transport::ws::WsConfig;

const CREATE: &str = "mutation($i: PostCreateInput!) { createPost(input: $i) { id } }";
const SUBSCRIPTION: &str = "subscription { postChanged { action record { title body } } }";

/// A TCP connection to `base` whose receive buffer is a few KiB, so that a
/// client that stops reading pushes back on the server at once instead of the
/// kernel absorbing megabytes for it.
async fn small_window(base: &str) -> TcpStream {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

/// A graphql-transport-ws client on a small window, subscribed, that will
/// never read again.
async fn stalled_subscriber(s: &Server) -> WebSocketStream<TcpStream> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/graphql", s.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(TRANSPORT_WS),
    );
    let (mut ws, _) = client_async(req, small_window(&s.base).await)
        .await
        .expect("handshake");
    let init = json!({ "type": "connection_init", "payload": { "token": s.token } });
    ws.send(Message::text(init.to_string()))
        .await
        .expect("init");
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("ack in time");
    assert!(
        matches!(&ack, Some(Ok(Message::Text(t))) if t.as_str().contains("connection_ack")),
        "expected connection_ack, got {ack:?}"
    );
    let sub = json!({ "type": "subscribe", "id": "1", "payload": { "query": SUBSCRIPTION } });
    ws.send(Message::text(sub.to_string()))
        .await
        .expect("subscribe");
    ws
}

/// This process's resident memory (the server runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The server's count of realtime connections it closed with `code` over `protocol`.
async fn closes(s: &Server, protocol: &str, code: u16) -> u64 {
    let text = s.metrics().await;
    let want = format!("protocol=\"{protocol}\",code=\"{code}\"");
    text.lines()
        .filter(|l| l.starts_with("livegate_realtime_closes_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const MIB: u64 = 1024 * 1024;
const STALLED: usize = 100;
const WRITES: usize = 60;
const ROW_BYTES: usize = 1_000_000;
/// What 100 stalled readers may cost at the default budget (4 MiB waiting each,
/// plus about one 1 MB frame in each socket's own write buffer: ~500 MiB), with
/// room for the live subscriber, the writes and the rest of the test binary.
/// Without a byte budget every stalled reader keeps a copy of every frame:
/// 100 × ~55 MB ≈ 5.5 GB over these writes.
const BOUND: u64 = 900 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_of_large_rows_cost_bounded_memory_and_live_ones_miss_nothing() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_subscriber(&s).await);
    }
    let mut live = Ws::acked(&s.base, Some(&s.token)).await;
    live.subscribe("live", SUBSCRIPTION, json!({})).await;
    // Every subscription is on the bus before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reader = tokio::spawn(async move {
        let mut titles = Vec::new();
        for _ in 0..WRITES {
            let p = live.next_payload("live").await;
            let record = &p["data"]["postChanged"]["record"];
            assert_eq!(record["body"].as_str().map(str::len), Some(ROW_BYTES));
            titles.push(record["title"].as_str().expect("title").to_string());
        }
        titles
    });

    let base = rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let body = "x".repeat(ROW_BYTES);
    for i in 0..WRITES {
        let input = json!({ "title": format!("big {i}"), "body": body });
        let (status, resp) = s
            .post(Some(&s.token), &[], CREATE, json!({ "i": input }))
            .await;
        assert_eq!(status, 200, "write {i}: {resp}");
        assert!(resp.get("errors").is_none(), "write {i}: {resp}");
        let grown = peak.load(std::sync::atomic::Ordering::SeqCst) - base;
        // Stop early when it already failed: the unbounded case would take gigabytes.
        assert!(
            grown < BOUND,
            "after {} writes of 1 MB the server grew by {} MiB, over the {} MiB bound",
            i + 1,
            grown / MIB,
            BOUND / MIB
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let titles = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the live subscriber got every event in time")
        .expect("live reader");
    let expected: Vec<String> = (0..WRITES).map(|i| format!("big {i}")).collect();
    assert_eq!(
        titles, expected,
        "the live subscriber missed nothing, in order"
    );
    // Every stalled reader was told to resume (1013); none was kept.
    let mut overflowed = 0;
    for _ in 0..150 {
        overflowed = closes(&s, TRANSPORT_WS, 1013).await;
        if overflowed >= STALLED as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        overflowed, STALLED as u64,
        "each stalled reader was closed with 1013"
    );
    sampler.abort();
    let grown = peak.load(std::sync::atomic::Ordering::SeqCst) - base;
    assert!(
        grown < BOUND,
        "the server grew by {} MiB, over the {} MiB bound",
        grown / MIB,
        BOUND / MIB
    );
    eprintln!(
        "{STALLED} stalled readers, {WRITES} rows of 1 MB: grew by {} MiB (bound {} MiB)",
        grown / MIB,
        BOUND / MIB
    );
    drop(stalled);
}

/// A distinct-connections SSE stream whose client stops reading ends once its
/// results pass the byte budget, long before the count bound, so that it
/// resumes with `Last-Event-ID`.
#[tokio::test]
async fn a_stalled_sse_stream_ends_past_its_byte_budget() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let ws = WsConfig {
        max_buffer_bytes: 256 * 1024,
        ..Default::default()
    };
    let s = Server::start_full(&db, app, Limits::default(), Server::test_auth(&db), ws)
        .await
        .expect("server starts");
    let mut conn = small_window(&s.base).await;
    let query: String = form_urlencoded::byte_serialize(SUBSCRIPTION.as_bytes()).collect();
    let request = format!(
        "GET /graphql/stream?query={query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        s.base.trim_start_matches("http://"),
        s.token
    );
    conn.write_all(request.as_bytes()).await.expect("request");
    // The head and the opening comment, then stop reading.
    let mut head = [0u8; 1024];
    let n = conn.read(&mut head).await.expect("head");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 40 rows of 100 KB: 4 MB, far past 256 KiB, far below the count bound
    // (16,384 events), and more than a small window and a socket buffer hold.
    const ROWS: usize = 40;
    let body = "y".repeat(100_000);
    for i in 0..ROWS {
        let input = json!({ "title": format!("mid {i}"), "body": body });
        s.data(CREATE, json!({ "i": input })).await;
    }
    // Now read: some events, then the end of the stream instead of all 40.
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut text)).await;
    assert!(
        read.is_ok(),
        "the stream ended (it would stay open, every event kept, without a byte budget)"
    );
    let text = String::from_utf8_lossy(&text);
    let got = text.matches("event: next").count();
    assert!(
        got < ROWS,
        "the stalled stream ended before delivering everything ({got} of {ROWS})"
    );
}

/// A record over `--max-record-bytes` is refused with BAD_USER_INPUT naming
/// the limit, and nothing is written or published.
#[tokio::test]
async fn a_record_over_the_size_cap_is_refused_and_nothing_is_published() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let limits = Limits {
        max_record_bytes: 64 * 1024,
        ..Limits::default()
    };
    let s = Server::start_with(&db, app, limits).await.expect("start");
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "s",
        "subscription { postChanged { action record { title } } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (code, err) = s
        .error_code(
            CREATE,
            json!({ "i": { "title": "too big", "body": "z".repeat(70 * 1024) } }),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains("65536"), "names the limit: {message}");
    assert!(
        message.contains("--max-record-bytes"),
        "names the flag: {message}"
    );

    // An update that would grow a row past the cap is refused the same way.
    let id = s
        .data(CREATE, json!({ "i": { "title": "small", "body": "ok" } }))
        .await["createPost"]["id"]
        .clone();
    let created = ws.next_payload("s").await;
    assert_eq!(created["data"]["postChanged"]["record"]["title"], "small");
    let (code, err) = s
        .error_code(
            "mutation($id: ID!, $i: PostUpdateInput!) { updatePost(id: $id, input: $i) { id } }",
            json!({ "id": id, "i": { "title": "grown", "body": "z".repeat(70 * 1024) } }),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{err}");

    // Nothing was written, and no event was published.
    let rows: Value = s.data("{ posts { title } }", json!({})).await;
    assert_eq!(rows["posts"], json!([{ "title": "small" }]));
    ws.silent_for(Duration::from_millis(500)).await;
}
