//! A signed-out session's sockets and streams end even when the connection was
//! too busy to hear its revocation: revocations reach live connections on a
//! bounded channel, and one that fell behind re-checks its session.

use std::time::Duration;

use livegate::auth::REVOCATIONS_BUFFER;
use serde_json::json;
use sha2::{Digest, Sha256};

use livegate::graphql::Limits;
use livegate::transport::ws::WsConfig;

use crate::harness::{Db, EXAMPLE_APP, Server, create_post, eventually, sign_out, signed_up};
use crate::sseclient::Sse;
use crate::wsclient::{Frame, LEGACY, Ws};

const SUBSCRIPTION: &str = "subscription { postChanged { cursor record { body } } }";

/// More sessions of `user_id` than the revocation channel holds, as refresh
/// tokens. Made in the store: `signIn` allows 30 a minute per address, and
/// these are only there to be signed out over the API.
async fn spare_sessions(s: &Server, user_id: &str) -> Vec<String> {
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut tokens = Vec::new();
    for i in 0..REVOCATIONS_BUFFER + 100 {
        let token = format!("spare-{i}-{}", uuid::Uuid::now_v7());
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        s.state
            .store()
            .create_session(user_id, &hash, expires)
            .await
            .expect("session");
        tokens.push(token);
    }
    tokens
}

/// Signs out every session of `tokens`, many per request, so that the
/// revocations go by faster than a stalled connection could take them.
async fn sign_out_all(s: &Server, tokens: &[String]) {
    for chunk in tokens.chunks(400) {
        let fields: String = chunk
            .iter()
            .enumerate()
            .map(|(i, t)| format!("s{i}: signOut(refreshToken: \"{t}\") "))
            .collect();
        let out = s
            .gql_as(None, &format!("mutation {{ {fields}}}"), json!({}))
            .await;
        assert!(out.get("errors").is_none(), "{out}");
        assert_eq!(out["data"]["s0"], true);
    }
}

/// Writes big rows, enough to fill a reader's socket buffers many times over,
/// so a client that reads nothing stalls its connection on the server.
///
/// The server's byte budget per connection is raised well past what this
/// queues, so that the connection stays up, stalled, for the sign-out to
/// reach (with the default budget it would be closed for falling behind).
async fn stalled_server(db: &Db) -> Server {
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let ws = WsConfig {
        max_buffer_bytes: 256 << 20,
        ..WsConfig::default()
    };
    Server::start_full(db, app, Limits::default(), Server::test_auth(db), ws)
        .await
        .expect("server starts")
}

async fn fill_socket(s: &Server) {
    let body = "x".repeat(400_000);
    for i in 0..40 {
        create_post(s, json!({ "title": format!("big {i}"), "body": body })).await;
    }
}

#[tokio::test]
async fn a_stalled_stream_still_ends_on_sign_out() {
    let db = Db::fresh().await;
    let s = stalled_server(&db).await;
    let me = signed_up(&s, "stalled-sse@example.com").await;
    let spare = spare_sessions(&s, me["user"]["id"].as_str().expect("id")).await;
    let mut stream = Sse::open(
        s.client
            .get(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .query(&[
                ("query", SUBSCRIPTION),
                ("access_token", me["accessToken"].as_str().expect("token")),
            ]),
    )
    .await;
    // The client reads nothing: its stream stalls on a full socket, and the
    // server stops polling it, revocations and all.
    fill_socket(&s).await;
    sign_out(&s, &me["refreshToken"]).await;
    sign_out_all(&s, &spare).await;
    // Now it reads: what was in flight, then the end (not heartbeats forever).
    let mut events = 0;
    while stream.next_within(Duration::from_secs(5)).await.is_some() {
        events += 1;
    }
    assert!(events > 0, "the stream carried the rows written before");
    assert!(
        stream.ends_within(Duration::from_millis(100)).await,
        "a signed-out session's stream ends, though it missed the revocation"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_stalled_socket_still_closes_on_sign_out() {
    let db = Db::fresh().await;
    let s = stalled_server(&db).await;
    let me = signed_up(&s, "stalled-ws@example.com").await;
    let spare = spare_sessions(&s, me["user"]["id"].as_str().expect("id")).await;
    let mut ws = Ws::open(&s.base, Some(LEGACY), "").await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": me["accessToken"] } }))
        .await;
    assert_eq!(
        ws.raw_within(Duration::from_secs(5)).await,
        Some(Frame::Json(json!({ "type": "connection_ack" })))
    );
    ws.send(json!({ "type": "start", "id": "1", "payload": { "query": SUBSCRIPTION } }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The client reads nothing: the rows queue up for its full socket. Then it
    // asks something the connection itself must answer, and the connection's
    // task waits for the socket (up to its 10 s send timeout), deaf to
    // revocations meanwhile.
    fill_socket(&s).await;
    ws.send(json!({ "type": "start", "id": "2", "payload": { "query": "{" } }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sign_out(&s, &me["refreshToken"]).await;
    sign_out_all(&s, &spare).await;
    // Now it reads: the queued rows, the answer, then the close.
    let (code, reason) = ws.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (4403, "Forbidden: session signed out"),
        "a signed-out session's socket closes, though it missed the revocation"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_live_session_is_looked_up_once_and_a_sign_out_counts_at_once() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let store = s.state.store().clone();
    // On PostgreSQL nothing is remembered until revocations are heard.
    assert!(eventually(Duration::from_secs(5), || store.is_following()).await);
    let session = signed_up(&s, "kim@test.local").await;
    let access = session["accessToken"].as_str().expect("access token");
    let query = "query { posts(limit: 1) { id } }";
    let before = s.state.store().session_lookups();
    for _ in 0..20 {
        let got = s.gql_as(Some(access), query, json!({})).await;
        assert!(got.get("errors").is_none(), "{got}");
    }
    let looked_up = s.state.store().session_lookups() - before;
    assert!(
        looked_up <= 2,
        "20 requests of one live session looked it up {looked_up} times"
    );
    // Signed out: the very next request with its access token is refused,
    // remembered or not.
    sign_out(&s, &session["refreshToken"]).await;
    let refused = s.gql_as(Some(access), query, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    s.stop().await;
    db.drop_db().await;
}
