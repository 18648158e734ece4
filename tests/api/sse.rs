//! GraphQL over SSE (graphql-sse's two modes) and the `/realtime` EventSource
//! feed: every status code of the protocol, the events and their cursors,
//! resume with `Last-Event-ID` while writes go on, scoping, heartbeat and expiry.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post, eventually, writer};
use crate::sseclient::Sse;
use crate::wsclient::Ws;

const STREAM: &str = "text/event-stream";
const TOKEN_HEADER: &str = "x-graphql-event-stream-token";
const POST_CHANGED: &str = "subscription { postChanged { action cursor record { title } } }";

fn app_with(anonymous: bool, heartbeat: u32) -> String {
    EXAMPLE_APP
        .replace("anonymous = true", &format!("anonymous = {anonymous}"))
        .replace(
            "heartbeat_seconds = 30",
            &format!("heartbeat_seconds = {heartbeat}"),
        )
        .replace(
            "max_subscriptions_per_connection = 100",
            "max_subscriptions_per_connection = 2",
        )
}

fn get(s: &Server, path: &str) -> reqwest::RequestBuilder {
    s.client.get(format!("{}{path}", s.base))
}

fn subscribe_get(
    s: &Server,
    path: &str,
    query: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut q = vec![("query", query.to_string())];
    if let Some(t) = token {
        q.push(("access_token", t.to_string()));
    }
    get(s, path).header("accept", STREAM).query(&q)
}

fn cursor_of(ev: &crate::sseclient::SseEvent) -> i64 {
    ev.id
        .as_deref()
        .expect("a change event carries an id")
        .parse()
        .expect("numeric cursor")
}

#[tokio::test]
async fn distinct_connections_mode_over_get_and_post() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &app_with(false, 30)).await;
    // A subscription over GET on /graphql/stream, credentials in the URL.
    let mut by_get = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        POST_CHANGED,
        Some(&s.token),
    ))
    .await;
    // The same over POST on /graphql, credentials in the header.
    let mut by_post = Sse::open(
        s.client
            .post(format!("{}/graphql", s.base))
            .header("accept", STREAM)
            .bearer_auth(&s.token)
            .json(&json!({ "query": POST_CHANGED })),
    )
    .await;
    let p = create_post(&s, json!({ "title": "hello" })).await;
    assert!(p["id"].is_string());
    for sse in [&mut by_get, &mut by_post] {
        let ev = sse.next().await;
        assert_eq!(ev.event.as_deref(), Some("next"));
        let data = ev.json();
        assert_eq!(data["data"]["postChanged"]["action"], "CREATE", "{data}");
        assert_eq!(data["data"]["postChanged"]["record"]["title"], "hello");
        assert_eq!(
            ev.id.as_deref(),
            data["data"]["postChanged"]["cursor"].as_str(),
            "the event id is the change's cursor"
        );
    }
    // A query and a mutation over SSE: one `next`, then `complete`, then the end.
    let mut query = Sse::open(subscribe_get(
        &s,
        "/graphql",
        "{ postsCount }",
        Some(&s.token),
    ))
    .await;
    let ev = query.next().await;
    assert_eq!(ev.json(), json!({ "data": { "postsCount": 1 } }));
    assert_eq!(ev.id, None, "only change events carry cursors");
    let complete = query.next().await;
    assert_eq!(complete.event.as_deref(), Some("complete"));
    assert_eq!(
        complete.data, "null",
        "an EventSource dispatches no event without data"
    );
    assert!(query.ends_within(Duration::from_secs(2)).await);
    let mut mutation = Sse::open(
        s.client
            .post(format!("{}/graphql/stream", s.base))
            .header("accept", STREAM)
            .bearer_auth(&s.token)
            .json(&json!({ "query": "mutation { createPost(input: { title: \"via sse\" }) { title } }" })),
    )
    .await;
    assert_eq!(
        mutation.next().await.json(),
        json!({ "data": { "createPost": { "title": "via sse" } } })
    );
    assert_eq!(mutation.next().await.event.as_deref(), Some("complete"));
    assert_eq!(
        by_get.next().await.json()["data"]["postChanged"]["record"]["title"],
        "via sse"
    );

    // Validation errors arrive on an accepted stream as a `next` with errors.
    let mut invalid = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        "subscription { nope }",
        Some(&s.token),
    ))
    .await;
    let ev = invalid.next().await;
    assert_eq!(ev.event.as_deref(), Some("next"));
    assert_eq!(
        ev.json()["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(invalid.next().await.event.as_deref(), Some("complete"));
    let mut unparsable = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        "subscription {",
        Some(&s.token),
    ))
    .await;
    assert_eq!(
        unparsable.next().await.json()["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );

    // Refused in HTTP: a mutation over GET (405), bad or missing credentials (401).
    let resp = subscribe_get(
        &s,
        "/graphql/stream",
        "mutation { createPost(input: { title: \"x\" }) { id } }",
        Some(&s.token),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = subscribe_get(&s, "/graphql/stream", POST_CHANGED, Some("not-a-token"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let resp = subscribe_get(&s, "/graphql/stream", POST_CHANGED, None)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "this app does not allow anonymous realtime clients"
    );
    // Not a stream and no reservation: nothing to do here.
    let resp = get(&s, "/graphql/stream").send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn single_connection_mode_and_its_status_codes() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &app_with(false, 30)).await;
    let url = format!("{}/graphql/stream", s.base);
    let put = || s.client.put(&url).bearer_auth(&s.token);
    // PUT reserves: 201 and the token as text; a PUT of a token in use is 409.
    let resp = put().send().await.expect("put");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let token = resp.text().await.expect("token");
    assert!(token.len() >= 32, "an unguessable token: {token}");
    let resp = put()
        .header(TOKEN_HEADER, &token)
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = put()
        .header("accept", "application/json")
        .send()
        .await
        .expect("put");
    assert_eq!(
        resp.status(),
        StatusCode::NOT_ACCEPTABLE,
        "the token is text/plain"
    );

    // An operation posted before the stream opens is kept for it.
    let op = |id: &str, query: &str| {
        s.client
            .post(&url)
            .bearer_auth(&s.token)
            .header(TOKEN_HEADER, &token)
            .json(&json!({ "query": query, "extensions": { "operationId": id } }))
    };
    assert_eq!(
        op("posts", POST_CHANGED)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        op("posts", POST_CHANGED)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::CONFLICT,
        "an operation id in use"
    );
    let resp = s
        .client
        .post(&url)
        .bearer_auth(&s.token)
        .header(TOKEN_HEADER, &token)
        .json(&json!({ "query": POST_CHANGED }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no operationId");
    let resp = s
        .client
        .post(&url)
        .bearer_auth(&s.token)
        .header(TOKEN_HEADER, &token)
        .header("accept", "text/html")
        .json(&json!({ "query": POST_CHANGED, "extensions": { "operationId": "x" } }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);

    // Open the stream (the token in the URL, as an EventSource would); a second is 409.
    let open = || {
        get(&s, "/graphql/stream")
            .bearer_auth(&s.token)
            .header("accept", STREAM)
            .query(&[("token", &token)])
    };
    let mut stream = Sse::open(open()).await;
    assert_eq!(
        open().send().await.expect("get").status(),
        StatusCode::CONFLICT
    );
    // Someone else cannot use the reservation: it does not exist for them.
    let other = s
        .token_for("other@test.local", livegate::access::Role::User, "default")
        .await;
    let resp = s
        .client
        .post(&url)
        .bearer_auth(&other)
        .header(TOKEN_HEADER, &token)
        .json(&json!({ "query": "{ postsCount }", "extensions": { "operationId": "spy" } }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    assert_eq!(
        op("count", "{ postsCount }")
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::ACCEPTED
    );
    // The query's result and completion; once it has completed, a second
    // subscription fits, and a third is one too many (the limit is 2 per stream).
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev = stream.next().await;
        seen.push((ev.event.clone().unwrap_or_default(), ev.json()));
    }
    assert_eq!(
        seen[0],
        (
            "next".into(),
            json!({ "id": "count", "payload": { "data": { "postsCount": 0 } } })
        )
    );
    assert_eq!(seen[1], ("complete".into(), json!({ "id": "count" })));
    assert_eq!(
        op("hints", "subscription { changes { collection } }")
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        op("third", POST_CHANGED)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::ACCEPTED
    );
    let ev = stream.next().await;
    assert_eq!(ev.json()["id"], "third");
    assert_eq!(
        ev.json()["payload"]["errors"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    assert_eq!(stream.next().await.json(), json!({ "id": "third" }));

    create_post(&s, json!({ "title": "one" })).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = stream.next().await;
        assert_eq!(ev.event.as_deref(), Some("next"));
        assert!(ev.id.is_some(), "change events carry their cursor: {ev:?}");
        got.push(ev.json());
    }
    got.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
    assert_eq!(got[0]["id"], "hints");
    assert_eq!(got[0]["payload"]["data"]["changes"]["collection"], "posts");
    assert_eq!(got[1]["id"], "posts");
    assert_eq!(
        got[1]["payload"]["data"]["postChanged"]["record"]["title"],
        "one"
    );

    // DELETE stops one operation: 400 without an id, 200 with one, 404 for an unknown stream.
    let delete = |token: &str, id: Option<&str>| {
        let mut r = s
            .client
            .delete(&url)
            .bearer_auth(&s.token)
            .header(TOKEN_HEADER, token);
        if let Some(id) = id {
            r = r.query(&[("operationId", id)]);
        }
        r
    };
    assert_eq!(
        delete(&token, None).send().await.expect("delete").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        delete(&token, Some("posts"))
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        delete("no-such-stream", Some("posts"))
            .send()
            .await
            .expect("delete")
            .status(),
        StatusCode::NOT_FOUND
    );
    create_post(&s, json!({ "title": "two" })).await;
    let ev = stream.next().await;
    assert_eq!(
        ev.json()["id"],
        "hints",
        "the stopped operation sends nothing more"
    );
    stream.silent_for(Duration::from_millis(300)).await;
    // The id is free again once stopped.
    assert_eq!(
        op("posts", POST_CHANGED)
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::ACCEPTED
    );

    // Unknown tokens: 404 everywhere.
    let resp = get(&s, "/graphql/stream")
        .bearer_auth(&s.token)
        .header("accept", STREAM)
        .header(TOKEN_HEADER, "nope")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = s
        .client
        .post(&url)
        .bearer_auth(&s.token)
        .header(TOKEN_HEADER, "nope")
        .json(&json!({ "query": "{ postsCount }", "extensions": { "operationId": "a" } }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Other methods: 405 with Allow.
    let resp = s.client.patch(&url).send().await.expect("patch");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, POST, PUT, DELETE");

    // When the stream goes, so does its reservation.
    drop(stream);
    assert!(
        eventually(Duration::from_secs(1), || s.state.sse().is_empty()).await,
        "the reservation is released when its stream ends"
    );
    assert_eq!(
        op("late", "{ postsCount }")
            .send()
            .await
            .expect("post")
            .status(),
        StatusCode::NOT_FOUND
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn last_event_id_resumes_with_no_gap_and_no_duplicate_while_writes_go_on() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let n = 60;
    let sub = "subscription { postChanged(actions: [CREATE]) { record { title } } }";
    let mut graphql = Sse::open(subscribe_get(&s, "/graphql/stream", sub, Some(&s.token))).await;
    let mut feed = Sse::open(
        get(&s, "/realtime").query(&[("collections", "posts"), ("token", s.token.as_str())]),
    )
    .await;
    let writes = writer(&s, "w", n, Duration::from_millis(5));
    // Read a few from each, then cut both streams while writes keep landing.
    let mut titles = Vec::new();
    let mut last_graphql = 0;
    for _ in 0..10 {
        let ev = graphql.next().await;
        last_graphql = cursor_of(&ev);
        titles.push(
            ev.json()["data"]["postChanged"]["record"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let mut feed_cursors = Vec::new();
    for _ in 0..7 {
        let ev = feed.next().await;
        assert_eq!(ev.event.as_deref(), Some("change"));
        assert_eq!(
            ev.json(),
            json!({ "collection": "posts", "action": "create" })
        );
        feed_cursors.push(cursor_of(&ev));
    }
    drop(graphql);
    drop(feed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut graphql = Sse::open(
        subscribe_get(&s, "/graphql/stream", sub, Some(&s.token))
            .header("last-event-id", last_graphql.to_string()),
    )
    .await;
    let last_feed = *feed_cursors.last().expect("some");
    let mut feed = Sse::open(
        get(&s, "/realtime")
            .query(&[("collections", "posts"), ("access_token", s.token.as_str())])
            .header("last-event-id", last_feed.to_string()),
    )
    .await;
    while titles.len() < n {
        let ev = graphql.next().await;
        titles.push(
            ev.json()["data"]["postChanged"]["record"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    while feed_cursors.len() < n {
        feed_cursors.push(cursor_of(&feed.next().await));
    }
    writes.await.expect("writer");
    let expected: Vec<String> = (0..n).map(|i| format!("w {i}")).collect();
    assert_eq!(
        titles, expected,
        "every create once, in order, across the cut"
    );
    assert!(
        feed_cursors.windows(2).all(|w| w[0] < w[1]),
        "{feed_cursors:?}"
    );
    graphql.silent_for(Duration::from_millis(300)).await;
    feed.silent_for(Duration::from_millis(100)).await;

    // `?after=` on the feed does the same as Last-Event-ID.
    let mut from_after =
        Sse::open(get(&s, "/realtime").query(&[("after", feed_cursors[n - 3].to_string())])).await;
    assert_eq!(cursor_of(&from_after.next().await), feed_cursors[n - 2]);
    assert_eq!(cursor_of(&from_after.next().await), feed_cursors[n - 1]);

    // Bad and expired cursors are refused in HTTP.
    let refusals = [
        get(&s, "/realtime").header("last-event-id", "yesterday"),
        get(&s, "/realtime").query(&[("after", "999999")]),
        get(&s, "/realtime").query(&[("collections", "posts,nope")]),
    ];
    for request in refusals {
        let resp = request.send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{:?}", resp.url());
    }
    s.state
        .store()
        .prune_events(chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("prune");
    let resp = get(&s, "/realtime")
        .header("last-event-id", "1")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::GONE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "CURSOR_EXPIRED");
    let mut expired = Sse::open(
        subscribe_get(&s, "/graphql/stream", sub, Some(&s.token)).header("last-event-id", "1"),
    )
    .await;
    assert_eq!(
        expired.next().await.json()["errors"][0]["extensions"]["code"],
        "CURSOR_EXPIRED"
    );
    assert_eq!(expired.next().await.event.as_deref(), Some("complete"));
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn streams_carry_only_what_the_viewer_may_see() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &app_with(true, 30)).await;
    let alice = s
        .user_for("alice@test.local", livegate::access::Role::User, "default")
        .await;
    let bob = s
        .user_for("bob@test.local", livegate::access::Role::User, "default")
        .await;
    let stranger = s
        .user_for("boss@other.test", livegate::access::Role::Admin, "other")
        .await;
    let notes = "subscription { noteChanged { action record { title } } }";
    let mut alice_notes = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        notes,
        Some(&alice.token),
    ))
    .await;
    let mut bob_notes = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        notes,
        Some(&bob.token),
    ))
    .await;
    let mut alice_feed =
        Sse::open(get(&s, "/realtime").query(&[("token", alice.token.as_str())])).await;
    let mut bob_feed =
        Sse::open(get(&s, "/realtime").query(&[("token", bob.token.as_str())])).await;
    let mut stranger_feed =
        Sse::open(get(&s, "/realtime").query(&[("token", stranger.token.as_str())])).await;
    let mut anonymous_feed = Sse::open(get(&s, "/realtime")).await;
    // Anonymous viewers may not subscribe to owner-only notes.
    let mut anonymous_notes = Sse::open(subscribe_get(&s, "/graphql/stream", notes, None)).await;
    assert_eq!(
        anonymous_notes.next().await.json()["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );

    s.gql_as(
        Some(&alice.token),
        "mutation { createNote(input: { title: \"secret\" }) { id } }",
        json!({}),
    )
    .await;
    s.gql_as(
        Some(&bob.token),
        "mutation { createPost(input: { title: \"public\" }) { id } }",
        json!({}),
    )
    .await;

    assert_eq!(
        alice_notes.next().await.json()["data"]["noteChanged"]["record"]["title"],
        "secret"
    );
    let hints: Vec<Value> = vec![
        alice_feed.next().await.json(),
        alice_feed.next().await.json(),
    ];
    assert_eq!(
        hints,
        [
            json!({ "collection": "notes", "action": "create" }),
            json!({ "collection": "posts", "action": "create" })
        ]
    );
    assert_eq!(
        bob_feed.next().await.json(),
        json!({ "collection": "posts", "action": "create" }),
        "bob: not alice's note"
    );
    assert_eq!(
        anonymous_feed.next().await.json(),
        json!({ "collection": "posts", "action": "create" })
    );
    bob_notes.silent_for(Duration::from_millis(300)).await;
    bob_feed.silent_for(Duration::from_millis(100)).await;
    stranger_feed.silent_for(Duration::from_millis(100)).await;
    anonymous_feed.silent_for(Duration::from_millis(100)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn heartbeats_keep_streams_open_and_expiry_ends_them() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &app_with(false, 1)).await;
    // Margins are wide: a busy CI host can hold a task for hundreds of ms.
    let token = s.token_expiring_in(6).await;
    let mut sub = Sse::open(subscribe_get(
        &s,
        "/graphql/stream",
        POST_CHANGED,
        Some(&token),
    ))
    .await;
    let mut feed = Sse::open(get(&s, "/realtime").query(&[("access_token", token.as_str())])).await;
    let started = std::time::Instant::now();
    // The opening comment, then a heartbeat comment about every second (both
    // streams read at once: the token is short-lived).
    async fn three_comments(stream: &mut Sse) {
        for _ in 0..3 {
            let ev = stream
                .raw_within(Duration::from_millis(2500))
                .await
                .expect("a comment within 2.5 s (one is due every second)");
            assert!(ev.comment, "only comments while nothing happens: {ev:?}");
        }
    }
    tokio::join!(three_comments(&mut sub), three_comments(&mut feed));
    assert!(
        sub.ends_within(Duration::from_secs(6)).await,
        "the stream ends when the token expires"
    );
    assert!(feed.ends_within(Duration::from_secs(2)).await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Within the verifier's leeway for clock skew, but expired: refused, not an
    // empty stream that ends at once.
    let resp = get(&s, "/realtime")
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sign_out_and_shutdown_end_streams() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &app_with(false, 30)).await;
    let session = s
        .gql_as(None, "mutation { signUp(email: \"sse@test.local\", password: \"correct horse\") { accessToken refreshToken } }", json!({}))
        .await["data"]["signUp"]
        .clone();
    let access = session["accessToken"].as_str().expect("token");
    let mut mine = Sse::open(get(&s, "/realtime").query(&[("token", access)])).await;
    let mut admin = Sse::open(get(&s, "/realtime").query(&[("token", s.token.as_str())])).await;
    s.gql_as(
        None,
        "mutation($t: String!) { signOut(refreshToken: $t) }",
        json!({ "t": session["refreshToken"] }),
    )
    .await;
    assert!(
        mine.ends_within(Duration::from_secs(2)).await,
        "sign-out ends that session's streams"
    );
    admin.silent_for(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(s.stop());
    assert!(
        admin.ends_within(Duration::from_secs(3)).await,
        "shutdown ends streams"
    );
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the server stops although streams were open")
        .expect("join");
    db.drop_db().await;
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_without_delaying_others_and_resumes() {
    let db = Db::fresh().await;
    let s = Server::start_with_small_bus(&db, 8).await;
    let q = "subscription { postChanged { cursor record { body } } }";
    let mut fast = Sse::open(subscribe_get(&s, "/graphql/stream", q, Some(&s.token))).await;
    let mut slow = Sse::open(subscribe_get(&s, "/graphql/stream", q, Some(&s.token))).await;
    // Big rows, so the slow reader's socket fills and its stream stalls while the
    // bus moves on.
    let body = "x".repeat(400_000);
    let n = 40;
    let fast_reader = tokio::spawn(async move {
        let mut cursors = Vec::new();
        while cursors.len() < n {
            cursors.push(cursor_of(&fast.next().await));
        }
        cursors
    });
    for i in 0..n {
        create_post(&s, json!({ "title": format!("big {i}"), "body": body })).await;
    }
    let fast_cursors = tokio::time::timeout(Duration::from_secs(20), fast_reader)
        .await
        .expect("the fast reader is not held up by the slow one")
        .expect("join");
    assert_eq!(fast_cursors.len(), n);
    // Now the slow one reads: what was in flight, then the end of the stream.
    let mut last = None;
    while let Some(ev) = slow.next_within(Duration::from_secs(5)).await {
        assert_eq!(
            ev.event.as_deref(),
            Some("next"),
            "no error event, just the end"
        );
        last = Some(cursor_of(&ev));
    }
    assert!(
        slow.ends_within(Duration::from_millis(10)).await,
        "the lagging stream ended"
    );
    let last = last.expect("it received some events first");
    assert!(last < fast_cursors[n - 1], "it fell behind (last {last})");
    let mut again = Sse::open(
        subscribe_get(&s, "/graphql/stream", q, Some(&s.token))
            .header("last-event-id", last.to_string()),
    )
    .await;
    let mut rest = Vec::new();
    while rest.last() != fast_cursors.last() {
        rest.push(cursor_of(&again.next().await));
    }
    assert_eq!(rest[0], last + 1, "resuming from its last id loses nothing");
    assert!(rest.windows(2).all(|w| w[1] == w[0] + 1), "{rest:?}");
    s.stop().await;
    db.drop_db().await;
}

/// After a restart, nothing new written yet: a client resuming from a cursor
/// (SSE `Last-Event-ID`, WebSocket `after`) gets the rest of the history, then
/// what is written next, each once; a cursor past the history is refused.
#[tokio::test]
async fn resuming_after_a_restart_replays_history_written_before_it() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let sub = "subscription { postChanged(actions: [CREATE]) { record { title } } }";
    let mut live = Sse::open(subscribe_get(&s, "/graphql/stream", sub, Some(&s.token))).await;
    for i in 0..5 {
        create_post(&s, json!({ "title": format!("p{i}") })).await;
    }
    let mut cursors = Vec::new();
    for _ in 0..5 {
        cursors.push(cursor_of(&live.next().await));
    }
    drop(live);
    s.stop().await;

    let s = Server::start(&db, EXAMPLE_APP).await;
    let title = |v: &Value| {
        v["data"]["postChanged"]["record"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut sse = Sse::open(
        subscribe_get(&s, "/graphql/stream", sub, Some(&s.token))
            .header("last-event-id", cursors[1].to_string()),
    )
    .await;
    let ws_sub = "subscription($a: String) { postChanged(after: $a, actions: [CREATE]) { cursor record { title } } }";
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("r", ws_sub, json!({ "a": cursors[1].to_string() }))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = sse.next().await;
        got.push((cursor_of(&ev), title(&ev.json())));
    }
    let expected: Vec<(i64, String)> = (2..5).map(|i| (cursors[i], format!("p{i}"))).collect();
    assert_eq!(got, expected, "SSE: the rest of the history");
    let mut got = Vec::new();
    for _ in 0..3 {
        let v = ws.next_payload("r").await;
        let cursor: i64 = v["data"]["postChanged"]["cursor"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("cursor");
        got.push((cursor, title(&v)));
    }
    assert_eq!(got, expected, "WebSocket: the rest of the history");

    create_post(&s, json!({ "title": "after the restart" })).await;
    assert_eq!(title(&sse.next().await.json()), "after the restart");
    assert_eq!(title(&ws.next_payload("r").await), "after the restart");
    sse.silent_for(Duration::from_millis(300)).await;
    ws.silent_for(Duration::from_millis(300)).await;

    ws.subscribe(
        "ahead",
        ws_sub,
        json!({ "a": (cursors[4] + 1000).to_string() }),
    )
    .await;
    let refused = ws.next_payload("ahead").await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(
        ws.next().await,
        crate::wsclient::Frame::Json(json!({ "type": "complete", "id": "ahead" }))
    );
    s.stop().await;
    db.drop_db().await;
}
