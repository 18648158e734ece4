//! Persisted documents: automatic persisted queries (a hash instead of the
//! text, registered by sending both once) over HTTP GET and POST, graphql-ws
//! and GraphQL over SSE; a manifest (`--persisted-documents`) and
//! `--only-persisted`, which refuses every other document on every transport.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{CREATE_POST, Db, EXAMPLE_APP, Server, create_post};
use crate::sseclient::Sse;
use crate::wsclient::{Frame, LEGACY, Ws};

const COUNT: &str = "{ postsCount }";
const CHANGED: &str = "subscription { postChanged { action record { title } } }";

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn apq(text: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256(text) } })
}

/// POSTs `body` to /graphql; the status and the body answered.
async fn post(s: &Server, body: Value) -> (u16, Value) {
    let resp = s
        .client
        .post(format!("{}/graphql", s.base))
        .bearer_auth(&s.token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

/// GETs /graphql with `params`; the status and the body answered.
async fn get(s: &Server, params: &[(&str, String)]) -> (u16, Value) {
    let resp = s
        .client
        .get(format!("{}/graphql", s.base))
        .bearer_auth(&s.token)
        .query(params)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn automatic_persisted_queries_over_http_get_and_post() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    create_post(&s, json!({ "title": "one" })).await;

    // The hash alone, before the server knows it: the error clients retry on.
    let (status, body) = post(&s, json!({ "extensions": apq(COUNT) })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(body.get("data").is_none(), "{body}");
    assert!(status == 200 || status == 400, "{status}");
    // The same over GET.
    let by_get = [("extensions", apq(COUNT).to_string())];
    let (_, body) = get(&s, &by_get).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // Text and a hash that is not its hash: refused, and nothing registered.
    let (status, body) = post(
        &s,
        json!({ "query": "{ posts { id } }", "extensions": apq(COUNT) }),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
    let (_, body) = post(&s, json!({ "extensions": apq(COUNT) })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // Text with its hash: runs, and registers it.
    let (status, body) = post(&s, json!({ "query": COUNT, "extensions": apq(COUNT) })).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "data": { "postsCount": 1 } }))
    );
    // From then on the hash alone runs it, over POST and over GET.
    let (_, body) = post(&s, json!({ "extensions": apq(COUNT) })).await;
    assert_eq!(body, json!({ "data": { "postsCount": 1 } }));
    let (status, body) = get(&s, &by_get).await;
    assert_eq!(
        (status, body),
        (200, json!({ "data": { "postsCount": 1 } }))
    );
    // A registered mutation is still refused over GET.
    let create = r#"mutation { createPost(input: { title: "x" }) { id } }"#;
    let (status, body) = post(&s, json!({ "query": create, "extensions": apq(create) })).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&s, &[("extensions", apq(create).to_string())]).await;
    assert_eq!(status, 405);

    // Malformed references say what is expected.
    for extensions in [
        json!({ "persistedQuery": { "version": 2, "sha256Hash": sha256(COUNT) } }),
        json!({ "persistedQuery": { "version": 1 } }),
        json!({ "persistedQuery": "abc" }),
    ] {
        let (status, body) = post(&s, json!({ "extensions": extensions })).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn automatic_persisted_queries_over_graphql_ws_and_sse() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    let by_hash = |id: &str| json!({ "type": "subscribe", "id": id, "payload": { "extensions": apq(CHANGED) } });
    ws.send(by_hash("1")).await;
    match ws.next().await {
        Frame::Json(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["id"], "1");
            assert_eq!(
                v["payload"][0]["extensions"]["code"],
                "PERSISTED_QUERY_NOT_FOUND"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Registered over the socket, then by hash alone on a second subscription.
    ws.send(json!({ "type": "subscribe", "id": "2", "payload": { "query": CHANGED, "extensions": apq(CHANGED) } })).await;
    ws.send(by_hash("3")).await;
    // Over SSE too, once registered (the socket's frames run in order, but
    // apart from this request: wait until the hash is known).
    let registered = async {
        while code(&post(&s, json!({ "extensions": apq(CHANGED) })).await.1)
            == "PERSISTED_QUERY_NOT_FOUND"
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), registered)
        .await
        .expect("registered over the socket");
    let mut sse = Sse::open(
        s.client
            .post(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .bearer_auth(&s.token)
            .json(&json!({ "extensions": apq(CHANGED) })),
    )
    .await;
    assert!(
        s.metric_becomes("livegate_realtime_subscriptions", 3.0)
            .await,
        "two subscriptions on the socket and one stream"
    );
    create_post(&s, json!({ "title": "hashed" })).await;
    let mut got = vec![
        ws.next_payload_of_any().await,
        ws.next_payload_of_any().await,
    ];
    got.sort();
    assert_eq!(got, vec!["2".to_string(), "3".to_string()]);
    let ev = sse.next().await;
    assert_eq!(
        ev.json()["data"]["postChanged"]["record"]["title"],
        "hashed"
    );
    // A hash unknown over SSE is refused before the stream starts.
    let resp = s
        .client
        .post(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .bearer_auth(&s.token)
        .json(&json!({ "extensions": apq("subscription { changes { cursor } }") }))
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn only_persisted_runs_the_manifest_and_refuses_the_rest_everywhere() {
    let db = Db::fresh().await;
    // The manifest as graphql-codegen's client preset writes it.
    let manifest = json!({
        sha256(COUNT): COUNT,
        format!("sha256:{}", sha256(CHANGED)): CHANGED,
        sha256(CREATE_POST): CREATE_POST,
    });
    let path = db.dir.path().join("persisted-documents.json");
    std::fs::write(&path, manifest.to_string()).expect("write");
    let s = Server::start_with_persisted(&db, EXAMPLE_APP, Some(path), true)
        .await
        .expect("start");
    create_post(&s, json!({ "title": "one" })).await;

    // By id, as `documentId` or as an APQ hash, and by its exact text.
    for body in [
        json!({ "documentId": sha256(COUNT) }),
        json!({ "documentId": format!("sha256:{}", sha256(COUNT)) }),
        json!({ "extensions": apq(COUNT) }),
        json!({ "query": COUNT }),
    ] {
        let (status, answer) = post(&s, body.clone()).await;
        assert_eq!(
            (status, answer),
            (200, json!({ "data": { "postsCount": 1 } })),
            "{body}"
        );
    }
    // Anything else, even with its own hash (no registration).
    let other = "{ posts { id } }";
    for body in [
        json!({ "query": other }),
        json!({ "query": other, "extensions": apq(other) }),
    ] {
        let (status, answer) = post(&s, body).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "PERSISTED_QUERY_REQUIRED"),
            "{answer}"
        );
        assert!(answer.get("data").is_none());
    }
    let (_, answer) = post(&s, json!({ "extensions": apq(other) })).await;
    assert_eq!(code(&answer), "PERSISTED_QUERY_NOT_FOUND", "{answer}");
    let (_, answer) = get(&s, &[("query", other.to_string())]).await;
    assert_eq!(code(&answer), "PERSISTED_QUERY_REQUIRED", "{answer}");

    // graphql-ws: a subscription of the manifest by id runs, another is refused.
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send(json!({ "type": "subscribe", "id": "free", "payload": { "query": "subscription { changes { cursor } }" } })).await;
    match ws.next().await {
        Frame::Json(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(
                v["payload"][0]["extensions"]["code"],
                "PERSISTED_QUERY_REQUIRED"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    ws.send(
        json!({ "type": "subscribe", "id": "known", "payload": { "documentId": sha256(CHANGED) } }),
    )
    .await;
    // SSE: refused before the stream starts.
    let resp = s
        .client
        .get(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .bearer_auth(&s.token)
        .query(&[("query", "subscription { changes { cursor } }")])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "PERSISTED_QUERY_REQUIRED", "{body}");

    // Legacy subscriptions-transport-ws too.
    let mut legacy = Ws::open(&s.base, Some(LEGACY), "").await;
    legacy.init(Some(&s.token)).await;
    legacy.send(json!({ "type": "start", "id": "free", "payload": { "query": "subscription { changes { cursor } }" } })).await;
    match legacy.next().await {
        Frame::Json(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(
                v["payload"]["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_REQUIRED",
                "{v}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }

    assert!(
        s.metric_becomes("livegate_realtime_subscriptions", 1.0)
            .await
    );
    create_post(&s, json!({ "title": "two" })).await;
    let payload = ws.next_payload("known").await;
    assert_eq!(payload["data"]["postChanged"]["record"]["title"], "two");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_bad_manifest_stops_the_server_with_its_name() {
    let db = Db::fresh().await;
    let path = db.dir.path().join("manifest.json");
    for (text, words) in [
        ("[1, 2]", "not a JSON object"),
        (r#"{ "a": 3 }"#, "is not a string"),
        (r#"{ "a": "{ posts { " }"#, "does not parse"),
    ] {
        std::fs::write(&path, text).expect("write");
        let err =
            match Server::start_with_persisted(&db, EXAMPLE_APP, Some(path.clone()), false).await {
                Ok(_) => panic!("a manifest {text} was accepted"),
                Err(e) => format!("{e:#}"),
            };
        assert!(err.contains("manifest.json"), "{err}");
        assert!(err.contains(words), "{err} should say {words}");
    }
    let err = match Server::start_with_persisted(&db, EXAMPLE_APP, None, true).await {
        Ok(_) => panic!("--only-persisted without a manifest was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--persisted-documents"), "{err}");
    db.drop_db().await;
}

#[tokio::test]
async fn a_text_the_guard_refuses_is_never_registered_so_its_hash_cannot_crash_the_server() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    // Far deeper than the guard allows: parsing it would overflow the stack.
    let deep = format!(
        "{{ postsCount(x: {}1{}) }}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let hash = sha256(&deep);
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send(json!({ "type": "subscribe", "id": "d", "payload": { "query": deep, "extensions": apq(&deep) } })).await;
    let refused = ws.next().await;
    assert!(
        format!("{refused:?}").contains("GRAPHQL_PARSE_FAILED")
            || format!("{refused:?}").contains("nests"),
        "{refused:?}"
    );
    // Named by its hash over HTTP and SSE: unknown, and the server lives on.
    let (_, body) = post(
        &s,
        json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } }),
    )
    .await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let resp = s
        .client
        .get(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .bearer_auth(&s.token)
        .query(&[("extensions", ext.as_str())])
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(s.data(COUNT, json!({})).await["postsCount"], 0);
    s.stop().await;
    db.drop_db().await;
}
