//! Limits that must hold (issue 16, defect 5): the subscription limit counts
//! only subscriptions, legacy-protocol peers that stop answering pings are
//! dropped, concurrent connections are capped in total and per address, one
//! `Accept` negotiator decides between JSON and an event stream, and a socket
//! closed for a second `connection_init` sees its 4429.

use std::time::Duration;

use livegate::graphql::Limits;
use livegate::transport::ws::WsConfig;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{Db, EXAMPLE_APP, Server};
use crate::wsclient::{Frame, LEGACY, TRANSPORT_WS, Ws};

#[tokio::test]
async fn an_event_stream_refused_by_q_0_gets_json() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let query = json!({ "query": "{ __typename }" });
    for accept in [
        "text/event-stream;q=0, application/json",
        "text/event-stream;q=0.5, application/json",
        "text/event-stream;q=0.1, */*",
    ] {
        let resp = s
            .client
            .post(format!("{}/graphql", s.base))
            .header("accept", accept)
            .json(&query)
            .send()
            .await
            .expect("request");
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/json"), "{accept}: got {ct}");
        let body: serde_json::Value = resp.json().await.expect("JSON body");
        assert_eq!(
            body,
            json!({ "data": { "__typename": "Query" } }),
            "{accept}"
        );
        let resp = s
            .client
            .get(format!("{}/graphql", s.base))
            .header("accept", accept)
            .query(&[("query", "{ __typename }")])
            .send()
            .await
            .expect("request");
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/json"), "GET {accept}: got {ct}");
    }
    // Named and preferred, it still streams.
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        s.client
            .post(format!("{}/graphql", s.base))
            .header("accept", "text/event-stream, application/json;q=0.9")
            .json(&query)
            .send(),
    )
    .await
    .expect("headers in time")
    .expect("request");
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "got {ct}");
    drop(resp);
    s.stop().await;
    db.drop_db().await;
}

/// The example app with `max_subscriptions_per_connection = 2` and a 1 s heartbeat.
fn small_app() -> String {
    EXAMPLE_APP
        .replace(
            "max_subscriptions_per_connection = 100",
            "max_subscriptions_per_connection = 2",
        )
        .replace("heartbeat_seconds = 30", "heartbeat_seconds = 1")
}

/// Reads frames for operation `id` until its `complete` (or `error`); returns them.
async fn frames_of(ws: &mut Ws, id: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        match ws.next().await {
            Frame::Json(v) if v["id"] == id => {
                let end = v["type"] == "complete" || v["type"] == "error";
                got.push(v);
                if end {
                    return got;
                }
            }
            Frame::Json(_) => {}
            Frame::Closed(code, reason) => panic!("closed {code} {reason} waiting for {id}"),
        }
    }
}

#[tokio::test]
async fn a_socket_full_of_subscriptions_still_runs_queries_and_mutations() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &small_app()).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    for id in ["1", "2"] {
        ws.subscribe(id, "subscription { changes { cursor } }", json!({}))
            .await;
    }
    ws.subscribe("q", "{ postsCount }", json!({})).await;
    let q = frames_of(&mut ws, "q").await;
    assert_eq!(q[0]["type"], "next", "{q:?}");
    assert!(q[0]["payload"]["data"]["postsCount"].is_number(), "{q:?}");
    assert_eq!(q[1]["type"], "complete");
    ws.subscribe(
        "m",
        "mutation { createPost(input: { title: \"over the socket\" }) { title } }",
        json!({}),
    )
    .await;
    let m = frames_of(&mut ws, "m").await;
    assert_eq!(
        m[0]["payload"]["data"]["createPost"]["title"], "over the socket",
        "{m:?}"
    );
    assert_eq!(m[1]["type"], "complete");
    ws.subscribe("3", "subscription { changes { cursor } }", json!({}))
        .await;
    let third = frames_of(&mut ws, "3").await;
    assert_eq!(third[0]["type"], "error", "{third:?}");
    assert_eq!(
        third[0]["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_burst_of_connection_inits_always_sees_4429() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &small_app()).await;
    let init = json!({ "type": "connection_init", "payload": { "token": s.token } }).to_string();
    let burst = vec![init; 100];
    for round in 0..20 {
        let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "").await;
        ws.send_burst(&burst).await;
        let (code, reason) = ws.closed().await;
        assert_eq!(
            (code, reason.as_str()),
            (4429, "Too many initialisation requests"),
            "round {round}: the close frame must reach the client"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

/// A legacy (`graphql-ws`) socket, acknowledged.
async fn legacy_acked(s: &Server) -> Ws {
    let mut ws = Ws::open(&s.base, Some(LEGACY), "").await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": s.token } }))
        .await;
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "connection_ack" }))
    );
    ws
}

#[tokio::test]
async fn a_silent_legacy_peer_is_dropped_and_a_live_one_stays() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &small_app()).await;
    // This client reads all along, so its library answers every Ping frame
    // (and it sends nothing else): it must stay up.
    let mut alive = legacy_acked(&s).await;
    // This one stops reading: its library never sees the server's Ping frames,
    // so it never answers them, as a peer that vanished would not.
    let mut silent = legacy_acked(&s).await;
    alive.silent_for(Duration::from_millis(4500)).await;
    match silent.next_within(Duration::from_secs(5)).await {
        Some(Frame::Closed(code, reason)) => {
            assert_eq!(code, 1001, "{reason}");
        }
        other => panic!("a silent legacy peer must be dropped; got {other:?}"),
    }
    alive.silent_for(Duration::from_millis(1500)).await;
    alive
        .send(json!({ "type": "start", "id": "1", "payload": { "query": "{ postsCount }" } }))
        .await;
    match alive.next().await {
        Frame::Json(v) => assert_eq!(v["type"], "data", "{v}"),
        other => panic!("the live peer is still served; got {other:?}"),
    }
    s.stop().await;
    db.drop_db().await;
}

/// A server of the example app with these connection caps.
async fn capped(db: &Db, total: usize, per_ip: usize) -> Server {
    let ws = WsConfig {
        max_connections: total,
        max_connections_per_ip: per_ip,
        ..Default::default()
    };
    let app = db.app_file("app.toml", &small_app());
    Server::start_full(db, app, Limits::default(), Server::test_auth(db), ws)
        .await
        .expect("server starts")
}

type Socket = WebSocketStream<TcpStream>;

/// Opens a graphql-transport-ws socket from `local` (a loopback address);
/// a refused handshake gives its status, `Retry-After` and JSON body.
async fn ws_from(s: &Server, local: &str) -> Result<Socket, (u16, Option<String>, Value)> {
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().expect("addr");
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local"))
        .expect("bind");
    let tcp = socket.connect(addr).await.expect("connect");
    let mut req = format!("ws://{addr}/graphql")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(TRANSPORT_WS),
    );
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(resp)) => {
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), retry, body))
        }
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

fn assert_refused(got: (u16, Option<String>, Value), why: &str) {
    let (status, retry, body) = got;
    assert_eq!(status, 503, "{why}: {body}");
    assert!(retry.is_some(), "{why}: a Retry-After header");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{why}: {body}"
    );
}

/// Opens sockets from `local` until one is admitted (a closed one's slot is
/// freed once the server has seen it go), for up to 10 s.
async fn admitted_within(s: &Server, local: &str) -> Socket {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ws_from(s, local).await {
            Ok(ws) => return ws,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("never admitted: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn refusals(s: &Server, reason: &str) -> u64 {
    let text = s.metrics().await;
    let name = format!("livegate_realtime_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test]
async fn the_total_cap_refuses_sockets_streams_and_feeds_alike() {
    let db = Db::fresh().await;
    let s = capped(&db, 3, 0).await;
    let mut ws = ws_from(&s, "127.0.0.1").await.expect("first: a socket");
    let stream = s
        .client
        .get(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .query(&[
            ("query", "subscription { changes { cursor } }"),
            ("access_token", &s.token),
        ])
        .send()
        .await
        .expect("second: an SSE stream");
    assert_eq!(stream.status(), 200);
    let feed = s
        .client
        .get(format!("{}/realtime", s.base))
        .query(&[("token", &s.token)])
        .send()
        .await
        .expect("third: a feed");
    assert_eq!(feed.status(), 200);
    assert_refused(
        ws_from(&s, "127.0.0.1")
            .await
            .err()
            .unwrap_or_else(|| panic!("expected a refusal")),
        "a fourth socket",
    );
    for (path, accept) in [
        ("/graphql/stream", "text/event-stream"),
        ("/realtime", "*/*"),
    ] {
        let resp = s
            .client
            .get(format!("{}{path}", s.base))
            .header("accept", accept)
            .query(&[
                ("query", "subscription { changes { cursor } }"),
                ("access_token", &s.token),
                ("token", &s.token),
            ])
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_refused((status, retry, body), path);
    }
    assert_eq!(refusals(&s, "total").await, 3);
    // Plain requests are not connections: they still run.
    assert_eq!(s.data("{ postsCount }", json!({})).await["postsCount"], 0);
    ws.close(None).await.expect("close");
    drop(ws);
    let _again = admitted_within(&s, "127.0.0.1").await;
    drop((stream, feed));
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_per_address_cap_counts_each_address_apart() {
    let db = Db::fresh().await;
    let s = capped(&db, 0, 2).await;
    let first = ws_from(&s, "127.0.0.1").await.expect("first");
    let _second = ws_from(&s, "127.0.0.1").await.expect("second");
    assert_refused(
        ws_from(&s, "127.0.0.1")
            .await
            .err()
            .unwrap_or_else(|| panic!("expected a refusal")),
        "a third from one address",
    );
    let _other = ws_from(&s, "127.0.0.2")
        .await
        .expect("another address has slots of its own");
    assert_eq!(refusals(&s, "per_address").await, 1);
    // A dropped connection (no close frame) frees its slot too.
    drop(first);
    let _again = admitted_within(&s, "127.0.0.1").await;
    s.stop().await;
    db.drop_db().await;
}
