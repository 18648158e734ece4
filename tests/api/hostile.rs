//! Input an attacker would send: documents and filters nested or sized to break a
//! recursive parser, and subscriptions with more than one root field. Each is
//! refused with a coded error on every transport, and the server stays up.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server};
use crate::sseclient::Sse;
use crate::wsclient::{Frame, LEGACY, Ws};

/// `{ __typename(x: [[[ ... 1 ... ]]]) }`: a few KB that once overflowed the stack.
fn nested_list(levels: usize) -> String {
    format!(
        "{{ __typename(x: {}1{}) }}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

/// `where: {not: {not: ... {title: {eq: "x"}} ...}}` written into the document.
fn nested_not_literal(levels: usize) -> String {
    format!(
        "{{ posts(where: {}{{title: {{eq: \"x\"}}}}{}) {{ id }} }}",
        "{not: ".repeat(levels),
        "}".repeat(levels)
    )
}

fn nested_not_value(levels: usize) -> Value {
    let mut w = json!({ "title": { "eq": "x" } });
    for _ in 0..levels {
        w = json!({ "not": w });
    }
    w
}

const POSTS_WHERE: &str = "query($w: PostWhere) { posts(where: $w) { id } }";

async fn post_raw(s: &Server, body: &Value) -> (StatusCode, Value) {
    let resp = s
        .client
        .post(format!("{}/graphql", s.base))
        .bearer_auth(&s.token)
        .json(body)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// Whether the first error's message contains `words`.
fn says(body: &Value, words: &str) -> bool {
    body["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.contains(words))
}

/// The server still answers a plain query.
async fn alive(s: &Server) {
    let ok = s.data("{ postsCount }", json!({})).await;
    assert!(ok["postsCount"].is_number(), "{ok}");
}

#[tokio::test]
async fn deep_or_huge_input_is_refused_over_http_and_the_server_stays_up() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;

    // Depths where the parser itself still succeeds but building the syntax
    // tree recursed past a worker's stack (roughly 400 to 850), and beyond.
    for query in [
        nested_list(100),
        nested_list(450),
        nested_list(650),
        nested_list(850),
        nested_list(2_000),
        nested_not_literal(500),
        nested_not_literal(1_200),
    ] {
        let (status, body) = post_raw(&s, &json!({ "query": query })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
        assert!(says(&body, "deep"), "the message says why: {body}");
        alive(&s).await;
    }
    // Over GET as well.
    let resp = s
        .client
        .get(format!("{}/graphql", s.base))
        .query(&[("query", nested_list(2_000))])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED", "{body}");

    // A document past the size limit, however flat.
    let long = format!("{{ {} }}", "__typename ".repeat(12_000));
    let (status, body) = post_raw(&s, &json!({ "query": long })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
    assert!(says(&body, "--max-document-bytes"), "{body}");

    // `where` trees within the bracket limit but too deep or too wide for the
    // filter: BAD_USER_INPUT naming the limit, never INTERNAL.
    let (_, body) = post_raw(&s, &json!({ "query": nested_not_literal(30) })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(says(&body, "nest at most"), "{body}");
    for w in [
        nested_not_value(100),
        json!({ "or": vec![json!({ "title": { "eq": "x" } }); 20_000] }),
        json!({ "and": vec![json!({ "or": vec![json!({ "title": { "eq": "x" } }); 200] }); 200] }),
    ] {
        let (_, body) = post_raw(
            &s,
            &json!({ "query": POSTS_WHERE, "variables": { "w": w } }),
        )
        .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        alive(&s).await;
    }
    // Deeper than JSON parsing allows: refused as a bad body.
    let (status, body) = post_raw(
        &s,
        &json!({ "query": POSTS_WHERE, "variables": { "w": nested_not_value(1_200) } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");

    // Within the limits, filters nest and combine as before.
    let ok = s
        .data(POSTS_WHERE, json!({ "w": nested_not_value(10) }))
        .await;
    assert!(ok["posts"].is_array(), "{ok}");
    let (_, body) = post_raw(&s, &json!({ "query": nested_not_literal(10) })).await;
    assert!(body["errors"].is_null(), "{body}");
    let (_, body) = post_raw(
        &s,
        &json!({ "query": POSTS_WHERE, "variables": { "w": { "or": vec![json!({ "title": { "eq": "x" } }); 100] } } }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn deep_documents_are_refused_over_websockets_and_sse() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let deep = format!(
        "subscription {{ postChanged(where: {}{{title: {{eq: \"x\"}}}}{}) {{ id }} }}",
        "{not: ".repeat(2_000),
        "}".repeat(2_000)
    );
    // graphql-transport-ws: an error for that operation; the socket stays up.
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    let mut cases = vec![("deep-not".to_string(), deep.clone())];
    for levels in [450, 550, 650, 850, 2_000] {
        cases.push((format!("list-{levels}"), nested_list(levels)));
    }
    for (id, query) in &cases {
        let id = id.as_str();
        ws.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query } }))
            .await;
        match ws.next().await {
            Frame::Json(v) if v["type"] == "error" && v["id"] == id => {
                assert_eq!(
                    v["payload"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED",
                    "{v}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    ws.subscribe("3", "{ postsCount }", json!({})).await;
    assert!(ws.next_payload("3").await["data"]["postsCount"].is_number());

    // The legacy protocol.
    let mut legacy = Ws::open(&s.base, Some(LEGACY), "").await;
    legacy
        .send(json!({ "type": "connection_init", "payload": { "token": s.token } }))
        .await;
    assert!(matches!(legacy.next().await, Frame::Json(v) if v["type"] == "connection_ack"));
    for (id, query) in &cases {
        legacy
            .send(json!({ "type": "start", "id": id, "payload": { "query": query } }))
            .await;
        match legacy.next().await {
            Frame::Json(v) if v["type"] == "error" => {
                assert_eq!(
                    v["payload"]["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED",
                    "{v}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    // SSE (distinct connections): refused before a stream opens.
    let resp = s
        .client
        .get(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .query(&[("query", deep.as_str()), ("access_token", s.token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
    alive(&s).await;
    s.stop().await;
    db.drop_db().await;
}

/// Two users of the default account: one owns what the other must not see.
async fn two_users(s: &Server) -> (crate::harness::TestUser, crate::harness::TestUser) {
    let user = |email: &'static str| s.user_for(email, livegate::access::Role::User, "default");
    (
        user("owner@example.com").await,
        user("other@example.com").await,
    )
}

/// Notes are owner-read; `changes` hints go to every signed-in viewer.
fn hints_for_all() -> String {
    EXAMPLE_APP.replace(
        "[collections.notes]\n",
        "[collections.notes]\nhints = \"all\"\n",
    )
}

const TWO_ROOTS: [&str; 5] = [
    "subscription { n: noteChanged { record { title body } } c: changes { collection } }",
    "subscription { a: noteChanged { record { title } } b: noteChanged { record { body } } }",
    "subscription { __typename noteChanged { record { title } } }",
    "subscription { noteChanged { action } noteChanged { record { title } } }",
    "subscription { ...Both } fragment Both on Subscription { noteChanged { record { title } } changes { collection } }",
];

fn refused_as_invalid(v: &Value) -> bool {
    let errors = if v["payload"].is_array() {
        &v["payload"]
    } else if v["payload"]["errors"].is_array() {
        &v["payload"]["errors"]
    } else {
        &v["errors"]
    };
    errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        && errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only one root field") || m.contains("root field"))
}

#[tokio::test]
async fn a_subscription_with_two_root_fields_is_refused_everywhere() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &hints_for_all()).await;
    let (owner, other) = two_users(&s).await;

    // graphql-transport-ws and the legacy protocol.
    let mut ws = Ws::acked(&s.base, Some(&other.token)).await;
    let mut legacy = Ws::open(&s.base, Some(LEGACY), "").await;
    legacy
        .send(json!({ "type": "connection_init", "payload": { "token": other.token } }))
        .await;
    assert!(matches!(legacy.next().await, Frame::Json(v) if v["type"] == "connection_ack"));
    for (n, query) in TWO_ROOTS.iter().enumerate() {
        let id = format!("{n}");
        ws.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query } }))
            .await;
        match ws.next().await {
            Frame::Json(v) if v["type"] == "error" && v["id"] == id.as_str() => {
                assert!(refused_as_invalid(&v), "{query}: {v}")
            }
            other => panic!("{query}: expected an error, got {other:?}"),
        }
        legacy
            .send(json!({ "type": "start", "id": id, "payload": { "query": query } }))
            .await;
        match legacy.next().await {
            Frame::Json(v) if v["type"] == "error" || v["type"] == "data" => {
                assert!(refused_as_invalid(&v), "{query}: {v}")
            }
            other => panic!("{query}: expected an error, got {other:?}"),
        }
    }

    // SSE, distinct connections: the error on the stream, then complete.
    let mut sse = Sse::open(
        s.client
            .get(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .query(&[
                ("query", TWO_ROOTS[0]),
                ("access_token", other.token.as_str()),
            ]),
    )
    .await;
    let ev = sse.next().await;
    assert!(refused_as_invalid(&ev.json()), "{:?}", ev);

    // SSE, single connection: reserve, open the stream, then the operation.
    let reserved = s
        .client
        .put(format!("{}/graphql/stream", s.base))
        .bearer_auth(&other.token)
        .send()
        .await
        .expect("reserve");
    assert_eq!(reserved.status(), StatusCode::CREATED);
    let stream_token = reserved.text().await.expect("token");
    let mut single = Sse::open(
        s.client
            .get(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .header("x-graphql-event-stream-token", &stream_token)
            .bearer_auth(&other.token),
    )
    .await;
    let op = s
        .client
        .post(format!("{}/graphql/stream", s.base))
        .bearer_auth(&other.token)
        .header("x-graphql-event-stream-token", &stream_token)
        .json(&json!({ "query": TWO_ROOTS[0], "extensions": { "operationId": "x" } }))
        .send()
        .await
        .expect("operation");
    assert!(op.status().is_success(), "{}", op.status());
    let ev = single.next().await;
    assert!(refused_as_invalid(&ev.json()["payload"]), "{:?}", ev);
    assert_eq!(single.next().await.event.as_deref(), Some("complete"));

    // Plain HTTP.
    let body = s.gql_as(Some(&other.token), TWO_ROOTS[0], json!({})).await;
    assert!(refused_as_invalid(&body), "{body}");

    // And whatever was refused delivers nothing: the owner's private note reaches
    // no one else.
    let created = s
        .gql_as(
            Some(&owner.token),
            "mutation { createNote(input: { title: \"secret\", body: \"private\" }) { id } }",
            json!({}),
        )
        .await;
    assert!(created["errors"].is_null(), "{created}");
    ws.silent_for(Duration::from_millis(500)).await;
    legacy.silent_for(Duration::from_millis(300)).await;
    single.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

/// Comments may point at a note, which only its owner may read.
fn comments_on_notes() -> String {
    EXAMPLE_APP.replace(
        "[collections.comments.fields]\n",
        "[collections.comments.fields]\nnote = { type = \"ref\", collection = \"notes\" }\n",
    )
}

#[tokio::test]
async fn a_shared_render_never_carries_refs_resolved_for_another_viewer() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &comments_on_notes()).await;
    let (owner, other) = two_users(&s).await;
    let note = s
        .gql_as(
            Some(&owner.token),
            "mutation { createNote(input: { title: \"secret\" }) { id } }",
            json!({}),
        )
        .await;
    let note_id = note["data"]["createNote"]["id"]
        .as_str()
        .expect("note id")
        .to_string();
    let post = crate::harness::create_post(&s, json!({ "title": "p" })).await;
    let post_id = post["id"].as_str().expect("post id").to_string();
    // The same document for both viewers, straight and through a fragment; the
    // viewer who may not read the note joins first each time.
    let documents = [
        "subscription { commentChanged { record { body note { title } } } }",
        "subscription { commentChanged { ...C } } fragment C on CommentChange { record { body note { title } } }",
    ];
    for document in documents {
        let mut seen = Vec::new();
        let mut socks = Vec::new();
        for viewer in [&other, &owner] {
            let mut ws = Ws::acked(&s.base, Some(&viewer.token)).await;
            ws.subscribe("1", document, json!({})).await;
            socks.push(ws);
        }
        let mut sse = Vec::new();
        for viewer in [&other, &owner] {
            sse.push(
                Sse::open(
                    s.client
                        .get(format!("{}/graphql/stream", s.base))
                        .header("accept", "text/event-stream")
                        .query(&[("query", document), ("access_token", viewer.token.as_str())]),
                )
                .await,
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let made = s
            .gql_as(
                Some(&owner.token),
                "mutation($p: ID!, $n: ID!) { createComment(input: { body: \"hi\", postId: $p, noteId: $n }) { id } }",
                json!({ "p": post_id, "n": note_id }),
            )
            .await;
        assert!(made["errors"].is_null(), "{made}");
        for ws in &mut socks {
            seen.push(
                ws.next_payload("1").await["data"]["commentChanged"]["record"]["note"].clone(),
            );
        }
        for stream in &mut sse {
            seen.push(
                stream.next().await.json()["data"]["commentChanged"]["record"]["note"].clone(),
            );
        }
        assert_eq!(
            seen,
            vec![
                Value::Null,
                json!({ "title": "secret" }),
                Value::Null,
                json!({ "title": "secret" })
            ],
            "{document}: each viewer's own access decides the ref"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

/// `F0` spreads `F1` twice, `F1` spreads `F2` twice, and so on: about a
/// kilobyte that expands to 2^levels selections.
fn fragment_bomb(operation: &str, on: &str, levels: usize) -> String {
    let mut q = format!("{operation} {{ ...F0 }}");
    for i in 0..levels {
        q.push_str(&format!(
            " fragment F{i} on {on} {{ ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    q.push_str(&format!(" fragment F{levels} on {on} {{ __typename }}"));
    q
}

#[tokio::test]
async fn fragments_that_expand_exponentially_are_refused_at_once() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let started = std::time::Instant::now();
    for query in [
        fragment_bomb("query", "Query", 30),
        fragment_bomb("subscription", "Subscription", 30),
    ] {
        let (_, body) = post_raw(&s, &json!({ "query": query })).await;
        assert_eq!(code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
        assert!(says(&body, "expands"), "{body}");
    }
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("1", &fragment_bomb("query", "Query", 30), json!({}))
        .await;
    match ws.next().await {
        Frame::Json(v) if v["type"] == "error" => {
            assert_eq!(
                v["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
                "{v}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Each took moments; expanded, any one would take minutes.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    alive(&s).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn in_lists_are_bounded_across_the_whole_filter() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let ids: Vec<String> = (0..600).map(|i| format!("id-{i}")).collect();
    let two_lists = json!({ "or": [{ "id": { "in": ids } }, { "id": { "notIn": ids } }] });
    let (_, body) = post_raw(
        &s,
        &json!({ "query": POSTS_WHERE, "variables": { "w": two_lists } }),
    )
    .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(says(&body, "1000 values"), "{body}");
    let one_list = json!({ "id": { "in": ids } });
    let ok = s.data(POSTS_WHERE, json!({ "w": one_list })).await;
    assert!(ok["posts"].is_array(), "{ok}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_fractional_expiry_is_an_expiry_not_1970() {
    // RFC 7519 NumericDates may be fractional; one was read as 0, so a valid
    // token's socket closed at once as "expired" (found by fuzzing).
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let user = s
        .user_for("float@example.com", livegate::access::Role::User, "default")
        .await;
    let exp = chrono::Utc::now().timestamp() as f64 + 3600.5;
    let claims = json!({ "sub": user.id, "exp": exp, "email": "float@example.com" });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::harness::TEST_SECRET.as_bytes()),
    )
    .expect("token");
    let me = s.gql_as(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], user.id.as_str(), "{me}");
    let mut ws = Ws::acked(&s.base, Some(&token)).await;
    ws.subscribe("1", "subscription { postChanged { id } }", json!({}))
        .await;
    ws.silent_for(Duration::from_millis(1500)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn arguments_of_the_wrong_shape_are_bad_input_not_internal() {
    // Found by fuzzing: a string where an input object belongs got past
    // validation and answered INTERNAL.
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let (_, body) = post_raw(
        &s,
        &json!({ "query": "mutation($i: PostCreateInput!) { createPost(input: $i) { id } }", "variables": { "i": "tede" } }),
    )
    .await;
    assert_ne!(code(&body), "INTERNAL", "{body}");
    assert!(
        code(&body) == "BAD_USER_INPUT" || code(&body) == "GRAPHQL_VALIDATION_FAILED",
        "{body}"
    );
    // An integer ID is an ID (GraphQL coerces it): no such row, not a failure.
    for query in [
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
        "query($id: ID!) { post(id: $id) { id } }",
    ] {
        let (_, body) = post_raw(&s, &json!({ "query": query, "variables": { "id": 5 } })).await;
        assert_ne!(code(&body), "INTERNAL", "{body}");
    }
    s.stop().await;
    db.drop_db().await;
}
