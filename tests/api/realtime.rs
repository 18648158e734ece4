//! Realtime over graphql-ws: committed changes reach exactly the subscribers allowed
//! to see them, every protocol rule holds, and a resumed subscription loses nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post, eventually, writer};
use crate::wsclient::{Frame, LEGACY, TRANSPORT_WS, Ws};

const POST_CHANGED: &str = "subscription($after: String, $where: PostWhere, $actions: [ChangeAction!]) {
  postChanged(after: $after, where: $where, actions: $actions) { action id cursor at record { id title published } } }";

#[tokio::test]
async fn create_update_delete_reach_a_subscriber_in_order() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("1", POST_CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = create_post(&s, json!({ "title": "one" })).await;
    let id = p["id"].as_str().expect("id");
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"two\" }) { id } }",
        json!({ "id": id }),
    )
    .await;
    s.data(
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let mut cursors = Vec::new();
    for (action, title) in [("CREATE", "one"), ("UPDATE", "two"), ("DELETE", "two")] {
        let ev = ws.next_payload("1").await;
        let c = &ev["data"]["postChanged"];
        assert_eq!(c["action"], action, "{ev}");
        assert_eq!(c["id"], id);
        assert_eq!(
            c["record"]["title"], title,
            "record is the row after the change (before, for a delete)"
        );
        cursors.push(
            c["cursor"]
                .as_str()
                .expect("cursor")
                .parse::<i64>()
                .expect("numeric cursor"),
        );
    }
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors increase: {cursors:?}"
    );
    ws.send(json!({ "type": "complete", "id": "1" })).await;
    create_post(&s, json!({ "title": "after complete" })).await;
    ws.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

/// The example app, with anonymous sockets refused, 3 subscriptions per
/// connection, a 1 s heartbeat, and `notes` hinting every signed-in viewer.
fn realtime_app() -> String {
    EXAMPLE_APP
        .replace("anonymous = true", "anonymous = false")
        .replace(
            "max_subscriptions_per_connection = 100",
            "max_subscriptions_per_connection = 3",
        )
        .replace("heartbeat_seconds = 30", "heartbeat_seconds = 1")
        .replace(
            "[collections.notes]\n",
            "[collections.notes]\nhints = \"all\"\n",
        )
}

async fn closes_with(ws: &mut Ws, code: u16) -> String {
    let (got, reason) = ws.closed().await;
    assert_eq!(got, code, "expected close {code}, got {got} {reason:?}");
    reason
}

#[tokio::test]
async fn every_close_code_has_its_trigger() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let sub = json!({ "type": "subscribe", "id": "1", "payload": { "query": "subscription { changes { cursor } }" } });

    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send_text("{ not json").await;
    assert_eq!(closes_with(&mut ws, 4400).await, "Invalid message received");

    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send(json!({ "type": "unknown" })).await;
    closes_with(&mut ws, 4400).await;

    let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "").await;
    ws.send(sub.clone()).await;
    assert_eq!(
        closes_with(&mut ws, 4401).await,
        "Unauthorized",
        "subscribe before ack"
    );

    let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "").await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": "not-a-token" } }))
        .await;
    assert!(
        closes_with(&mut ws, 4403).await.starts_with("Forbidden"),
        "a bad token"
    );

    let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "").await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert!(
        closes_with(&mut ws, 4403).await.contains("sign in"),
        "anonymous sockets are off in this app"
    );

    let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "?token=garbage").await;
    ws.send(json!({ "type": "connection_init" })).await;
    closes_with(&mut ws, 4403).await;

    let mut ws = Ws::open(&s.base, Some(TRANSPORT_WS), "").await;
    assert_eq!(
        closes_with(&mut ws, 4408).await,
        "Connection initialisation timeout",
        "no connection_init in time"
    );

    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send(sub.clone()).await;
    ws.send(sub.clone()).await;
    assert_eq!(
        closes_with(&mut ws, 4409).await,
        "Subscriber for 1 already exists"
    );

    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(
        closes_with(&mut ws, 4429).await,
        "Too many initialisation requests"
    );

    let mut ws = Ws::open(&s.base, None, "").await;
    assert!(
        closes_with(&mut ws, 4406)
            .await
            .contains("graphql-transport-ws"),
        "no subprotocol: accepted, then 4406 saying which to use"
    );
    let refused = Ws::try_open(&s.base, Some("graphql-sse"), "").await;
    assert!(
        refused.is_err_and(|e| e.contains("400")),
        "an unknown subprotocol is refused in HTTP, before the client's handshake fails"
    );

    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.send_text(&format!(
        "{{\"type\":\"ping\",\"payload\":{{\"x\":\"{}\"}}}}",
        "x".repeat(70 * 1024)
    ))
    .await;
    let (code, _) = ws.closed().await;
    assert!(
        code == 1009 || code == 4400,
        "a frame over 64 KiB is refused, got {code}"
    );
    let health = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "and the server stays up");

    let metrics = s.metrics().await;
    for line in [
        "livegate_realtime_closes_total{protocol=\"graphql-transport-ws\",code=\"4409\"} 1",
        "livegate_realtime_closes_total{protocol=\"none\",code=\"4406\"} 2",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn queries_and_mutations_work_over_the_socket() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "m",
        "mutation { createPost(input: { title: \"over ws\" }) { title ownerId } }",
        json!({}),
    )
    .await;
    let created = ws.next_payload("m").await;
    assert_eq!(created["data"]["createPost"]["title"], "over ws");
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "m" }))
    );
    ws.subscribe("q", "{ postsCount me { email } }", json!({}))
        .await;
    assert_eq!(
        ws.next_payload("q").await["data"],
        json!({ "postsCount": 1, "me": { "email": "admin@test.local" } })
    );
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "q" }))
    );
    ws.subscribe("bad", "{ nope }", json!({})).await;
    match ws.next().await {
        Frame::Json(v) if v["type"] == "error" && v["id"] == "bad" => {
            assert_eq!(
                v["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
                "{v}"
            );
        }
        other => panic!("expected an error message, got {other:?}"),
    }
    ws.subscribe(
        "denied",
        "mutation { deletePost(id: \"nope\") { id } }",
        json!({}),
    )
    .await;
    let denied = ws.next_payload("denied").await;
    assert_eq!(
        denied["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{denied}"
    );
    assert_eq!(denied["errors"][0]["path"], json!(["deletePost"]));
    s.stop().await;
    db.drop_db().await;
}

/// The `postChanged` cursors of `payloads`, as numbers.
fn post_cursors(payloads: &[Value]) -> Vec<i64> {
    payloads
        .iter()
        .map(|v| {
            v["data"]["postChanged"]["cursor"]
                .as_str()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no cursor in {v}"))
        })
        .collect()
}

/// Collects `n` `next` payloads for `id` (fails on anything else).
async fn collect(ws: &mut Ws, id: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(ws.next_payload(id).await);
    }
    out
}

#[tokio::test]
async fn events_reach_exactly_those_who_may_read_them() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let alice = s
        .user_for("alice@test.local", livegate::access::Role::User, "default")
        .await;
    let bob = s
        .user_for("bob@test.local", livegate::access::Role::User, "default")
        .await;
    let stranger = s
        .user_for("boss@other.test", livegate::access::Role::Admin, "other")
        .await;
    let notes = "subscription { noteChanged { action record { title ownerId } } }";
    let mut socks = Vec::new();
    for token in [&alice.token, &bob.token, &s.token, &stranger.token] {
        let mut ws = Ws::acked(&s.base, Some(token)).await;
        ws.subscribe("n", notes, json!({})).await;
        ws.subscribe("h", "subscription { changes(collections: [\"notes\", \"posts\"]) { collection action cursor } }", json!({})).await;
        socks.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let note = s
        .gql_as(
            Some(&alice.token),
            "mutation { createNote(input: { title: \"secret\" }) { id } }",
            json!({}),
        )
        .await;
    let note_id = note["data"]["createNote"]["id"].clone();
    s.gql_as(
        Some(&alice.token),
        "mutation($id: ID!) { deleteNote(id: $id) { id } }",
        json!({ "id": note_id }),
    )
    .await;
    s.gql_as(
        Some(&bob.token),
        "mutation { createPost(input: { title: \"public\" }) { id } }",
        json!({}),
    )
    .await;

    let [alice_ws, bob_ws, admin_ws, stranger_ws] = &mut socks[..] else {
        unreachable!()
    };
    for (who, ws) in [("alice (owner)", &mut *alice_ws), ("admin", &mut *admin_ws)] {
        let mut seen = Vec::new();
        while seen.len() < 5 {
            match ws.next().await {
                Frame::Json(v) => seen.push((
                    v["id"].as_str().unwrap_or_default().to_string(),
                    v["payload"]["data"].clone(),
                )),
                other => panic!("{who}: {other:?}"),
            }
        }
        let changed: Vec<_> = seen
            .iter()
            .filter(|(id, _)| id == "n")
            .map(|(_, d)| d["noteChanged"]["action"].clone())
            .collect();
        assert_eq!(
            changed,
            [json!("CREATE"), json!("DELETE")],
            "{who} reads the note, so sees its create and delete"
        );
        let hints: Vec<_> = seen
            .iter()
            .filter(|(id, _)| id == "h")
            .map(|(_, d)| d["changes"]["collection"].clone())
            .collect();
        assert_eq!(
            hints,
            [json!("notes"), json!("notes"), json!("posts")],
            "{who}: hints, with collection keys"
        );
    }
    // Bob may not read Alice's note, but `notes` hints every signed-in viewer.
    let mut bob_seen = Vec::new();
    while bob_seen.len() < 3 {
        match bob_ws.next().await {
            Frame::Json(v) => bob_seen.push(v),
            other => panic!("bob: {other:?}"),
        }
    }
    assert!(
        bob_seen.iter().all(|v| v["id"] == "h"),
        "bob gets no noteChanged event: {bob_seen:?}"
    );
    assert!(
        bob_seen.iter().all(|v| v["payload"]["data"]["changes"]
            .as_object()
            .is_some_and(|o| o
                .keys()
                .all(|k| ["collection", "action", "cursor"].contains(&k.as_str()))))
    );
    bob_ws.silent_for(Duration::from_millis(300)).await;
    stranger_ws.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn anonymous_sockets_see_only_anon_collections() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, None).await;
    ws.subscribe("p", POST_CHANGED, json!({})).await;
    ws.subscribe("n", "subscription { noteChanged { id } }", json!({}))
        .await;
    // As graphql-ws's reference server does: a subscription that cannot start is a
    // `next` with the error, then `complete` (`error` is for invalid operations).
    ws.fails_with("n", "UNAUTHENTICATED").await;
    create_post(&s, json!({ "title": "for everyone" })).await;
    s.data(
        "mutation { createNote(input: { title: \"private\" }) { id } }",
        json!({}),
    )
    .await;
    let ev = ws.next_payload("p").await;
    assert_eq!(ev["data"]["postChanged"]["record"]["title"], "for everyone");
    ws.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn where_matches_the_row_before_or_after_the_change() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "w",
        POST_CHANGED,
        json!({ "where": { "published": { "eq": true } }, "actions": ["CREATE", "UPDATE"] }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let public = create_post(&s, json!({ "title": "public", "published": true })).await;
    let draft = create_post(&s, json!({ "title": "draft" })).await;
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"draft 2\" }) { id } }",
        json!({ "id": draft["id"] }),
    )
    .await;
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { published: false }) { id } }",
        json!({ "id": public["id"] }),
    )
    .await;
    s.data(
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
        json!({ "id": public["id"] }),
    )
    .await;
    let got = collect(&mut ws, "w", 2).await;
    assert_eq!(got[0]["data"]["postChanged"]["action"], "CREATE");
    assert_eq!(got[0]["data"]["postChanged"]["record"]["title"], "public");
    assert_eq!(
        got[1]["data"]["postChanged"]["action"], "UPDATE",
        "the row left the filter: matched before the change"
    );
    assert_eq!(got[1]["data"]["postChanged"]["record"]["published"], false);
    ws.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

/// Two subscribers resume the same subscription (one group) from the start of
/// history while writes land: each replays the log and then goes live, and
/// gets every change exactly once, in order, whoever joined first.
#[tokio::test]
async fn resuming_subscribers_of_one_group_get_every_change_once_while_writes_land() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    for i in 0..150 {
        create_post(&s, json!({ "title": format!("h{i}") })).await;
    }
    let writer = writer(&s, "w", 100, Duration::ZERO);
    let query = "subscription($a: String) { postChanged(after: $a, actions: [CREATE]) { cursor record { title } } }";
    let mut a = Ws::acked(&s.base, Some(&s.token)).await;
    a.subscribe("a", query, json!({ "a": "0" })).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut b = Ws::acked(&s.base, Some(&s.token)).await;
    b.subscribe("b", query, json!({ "a": "0" })).await;
    writer.await.expect("writer");
    let expected: Vec<String> = (0..150)
        .map(|i| format!("h{i}"))
        .chain((0..100).map(|i| format!("w {i}")))
        .collect();
    for (ws, id) in [(&mut a, "a"), (&mut b, "b")] {
        let got = collect(ws, id, expected.len()).await;
        let titles: Vec<String> = got
            .iter()
            .map(|v| {
                v["data"]["postChanged"]["record"]["title"]
                    .as_str()
                    .expect("title")
                    .to_string()
            })
            .collect();
        assert_eq!(
            titles, expected,
            "subscriber {id}: every change once, in order"
        );
        let cursors = post_cursors(&got);
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{id}: {cursors:?}");
        ws.silent_for(Duration::from_millis(300)).await;
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn resume_replays_then_goes_live_with_no_gap_and_no_duplicate() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut first = Vec::new();
    for i in 0..30 {
        first.push(create_post(&s, json!({ "title": format!("before {i}") })).await);
    }
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "r",
        "subscription { postChanged(actions: [CREATE]) { cursor } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = create_post(&s, json!({ "title": "marker" })).await;
    let marker = ws.next_payload("r").await["data"]["postChanged"]["cursor"]
        .as_str()
        .expect("cursor")
        .parse::<i64>()
        .expect("n");
    ws.send(json!({ "type": "complete", "id": "r" })).await;
    assert!(p["id"].is_string());

    // Resume from the 10th event of history while writes keep landing.
    let writer = writer(&s, "during", 40, Duration::ZERO);
    let from = marker - 21;
    ws.subscribe("r2", "subscription($a: String) { postChanged(after: $a, actions: [CREATE]) { cursor record { title } } }", json!({ "a": from.to_string() })).await;
    writer.await.expect("writer");
    let total = 20 + 1 + 40;
    let got = collect(&mut ws, "r2", total).await;
    let cursors = post_cursors(&got);
    assert_eq!(
        cursors,
        ((from + 1)..=(from + total as i64)).collect::<Vec<_>>(),
        "every event after the cursor, once, in order"
    );
    assert_eq!(
        got[19]["data"]["postChanged"]["record"]["title"],
        "before 29"
    );
    assert_eq!(got[20]["data"]["postChanged"]["record"]["title"], "marker");
    ws.silent_for(Duration::from_millis(300)).await;

    ws.subscribe(
        "bad",
        "subscription { postChanged(after: \"not-a-cursor\") { cursor } }",
        json!({}),
    )
    .await;
    let bad = ws.next_payload("bad").await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "bad" }))
    );
    // Once history is pruned past a cursor, resuming from it is CURSOR_EXPIRED.
    s.state
        .store()
        .prune_events(chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("prune");
    ws.subscribe(
        "old",
        "subscription($a: String) { postChanged(after: $a) { cursor } }",
        json!({ "a": from.to_string() }),
    )
    .await;
    ws.fails_with("old", "CURSOR_EXPIRED").await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn too_many_subscriptions_keeps_the_connection() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    for id in ["1", "2", "3"] {
        ws.subscribe(id, "subscription { changes { cursor } }", json!({}))
            .await;
    }
    ws.subscribe("4", "subscription { changes { cursor } }", json!({}))
        .await;
    match ws.next().await {
        Frame::Json(v) => {
            assert_eq!(
                (v["type"].as_str(), v["id"].as_str()),
                (Some("error"), Some("4")),
                "{v}"
            );
            assert_eq!(
                v["payload"][0]["extensions"]["code"],
                "TOO_MANY_SUBSCRIPTIONS"
            );
        }
        other => panic!("{other:?}"),
    }
    ws.send(json!({ "type": "complete", "id": "1" })).await;
    ws.subscribe("5", "subscription { changes { collection } }", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    create_post(&s, json!({ "title": "x" })).await;
    let mut ids: Vec<String> = Vec::new();
    while ids.len() < 3 {
        if let Frame::Json(v) = ws.next().await {
            ids.push(v["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        ["2", "3", "5"],
        "the connection stayed up and the freed slot was reused"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_server_pings_and_drops_peers_that_stop_answering() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    assert_eq!(
        ws.raw_within(Duration::from_millis(1800)).await,
        Some(Frame::Json(json!({ "type": "ping" }))),
        "a ping every heartbeat"
    );
    ws.send(json!({ "type": "pong" })).await;
    assert_eq!(
        ws.raw_within(Duration::from_millis(1800)).await,
        Some(Frame::Json(json!({ "type": "ping" }))),
        "answered: still up"
    );
    // No pong this time.
    match ws.raw_within(Duration::from_millis(1800)).await {
        Some(Frame::Closed(code, _)) => assert_eq!(code, 1001),
        other => panic!("expected the silent peer to be dropped, got {other:?}"),
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_expiring_token_closes_its_socket_with_4403() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let token = s.token_expiring_in(2).await;
    let mut ws = Ws::acked(&s.base, Some(&token)).await;
    ws.subscribe("1", "subscription { changes { cursor } }", json!({}))
        .await;
    let started = std::time::Instant::now();
    assert_eq!(closes_with(&mut ws, 4403).await, "Forbidden: token expired");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at expiry"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sign_out_closes_that_sessions_sockets() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &realtime_app()).await;
    let up = |email: &'static str| {
        let s = &s;
        async move {
            s.gql_as(None, "mutation($e: String!) { signUp(email: $e, password: \"correct horse\") { accessToken refreshToken } }", json!({ "e": email }))
                .await["data"]["signUp"]
                .clone()
        }
    };
    let one = up("one@test.local").await;
    let other = up("other@test.local").await;
    let mut ws1 = Ws::acked(&s.base, one["accessToken"].as_str()).await;
    let mut ws2 = Ws::acked(&s.base, other["accessToken"].as_str()).await;
    s.gql_as(
        None,
        "mutation($t: String!) { signOut(refreshToken: $t) }",
        json!({ "t": one["refreshToken"] }),
    )
    .await;
    assert_eq!(
        closes_with(&mut ws1, 4403).await,
        "Forbidden: session signed out"
    );
    ws2.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_without_delaying_others_and_resumes() {
    let db = Db::fresh().await;
    let s = Server::start_with_small_bus(&db, 8).await;
    let q = "subscription($a: String) { postChanged(after: $a) { cursor record { body } } }";
    let mut fast = Ws::acked(&s.base, Some(&s.token)).await;
    fast.subscribe("f", q, json!({})).await;
    let mut slow = Ws::acked(&s.base, Some(&s.token)).await;
    slow.subscribe("s", q, json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Big rows, so the slow reader's socket buffers fill and its server task stalls
    // while the bus moves on.
    let body = "x".repeat(400_000);
    let n = 40;
    let fast_reader = tokio::spawn(async move {
        let got = collect(&mut fast, "f", n).await;
        post_cursors(&got)
    });
    // The slow client reads nothing while the writes land, so its server task
    // stalls on a full socket while the bus moves past it.
    for i in 0..n {
        create_post(&s, json!({ "title": format!("big {i}"), "body": body })).await;
    }
    let fast_cursors = fast_reader.await.expect("fast reader");
    assert_eq!(
        fast_cursors.len(),
        n,
        "the fast subscriber got everything while the slow one stalled"
    );
    // Now it reads: what was already in flight, then the close.
    let mut last = None;
    let code = loop {
        match slow.next().await {
            Frame::Json(v) => {
                let cursor = v["payload"]["data"]["postChanged"]["cursor"]
                    .as_str()
                    .map(str::to_string);
                assert!(
                    cursor.is_some(),
                    "only events before the close, no error frame: {}",
                    v.to_string().chars().take(200).collect::<String>()
                );
                last = cursor;
            }
            Frame::Closed(code, _) => break code,
        }
    };
    assert_eq!(
        code, 1013,
        "the lagging subscriber's connection is closed with 1013"
    );
    let last = last.unwrap_or_else(|| panic!("it received some events first (closed {code})"));
    let mut again = Ws::acked(&s.base, Some(&s.token)).await;
    again.subscribe("s", q, json!({ "a": last })).await;
    let rest_count = (fast_cursors[n - 1] - last.parse::<i64>().expect("n")) as usize;
    let rest = collect(&mut again, "s", rest_count).await;
    let rest_cursors: Vec<i64> = post_cursors(&rest);
    assert_eq!(
        rest_cursors.last(),
        fast_cursors.last(),
        "resuming with the last cursor delivers the rest: nothing lost"
    );
    assert!(rest_cursors.windows(2).all(|w| w[1] == w[0] + 1));
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_legacy_subscriptions_transport_ws_protocol() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::open(&s.base, Some(LEGACY), "").await;
    ws.send(json!({ "type": "connection_init", "payload": { "authToken": "ignored", "token": s.token } })).await;
    assert_eq!(
        ws.raw_within(Duration::from_secs(5)).await,
        Some(Frame::Json(json!({ "type": "connection_ack" })))
    );
    assert_eq!(
        ws.raw_within(Duration::from_secs(5)).await,
        Some(Frame::Json(json!({ "type": "ka" }))),
        "keep-alive right after the ack"
    );
    ws.send(json!({ "type": "start", "id": "1", "payload": { "query": "subscription { postChanged { action record { title } } }" } })).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    create_post(&s, json!({ "title": "legacy" })).await;
    match ws.next().await {
        Frame::Json(v) => {
            assert_eq!(
                (v["type"].as_str(), v["id"].as_str()),
                (Some("data"), Some("1")),
                "{v}"
            );
            assert_eq!(
                v["payload"]["data"]["postChanged"]["record"]["title"],
                "legacy"
            );
        }
        other => panic!("{other:?}"),
    }
    ws.send(json!({ "type": "stop", "id": "1" })).await;
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "1" }))
    );
    ws.send(json!({ "type": "start", "id": "2", "payload": { "query": "{ postsCount }" } }))
        .await;
    match ws.next().await {
        Frame::Json(v) => assert_eq!(v["payload"]["data"]["postsCount"], 1, "{v}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "2" }))
    );
    ws.send(json!({ "type": "connection_terminate" })).await;
    assert_eq!(ws.closed().await.0, 1000);

    let mut bad = Ws::open(&s.base, Some(LEGACY), "").await;
    bad.send(json!({ "type": "connection_init", "payload": { "token": "garbage" } }))
        .await;
    match bad.next().await {
        Frame::Json(v) => assert_eq!(v["type"], "connection_error", "{v}"),
        other => panic!("{other:?}"),
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_abrupt_disconnect_frees_everything() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let metric = |name: &'static str| {
        let s = &s;
        async move {
            let text = s.metrics().await;
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("1", "subscription { changes { cursor } }", json!({}))
        .await;
    ws.subscribe("2", POST_CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric("livegate_realtime_subscriptions ").await, 2.0);
    assert_eq!(
        metric("livegate_realtime_connections{protocol=\"graphql-transport-ws\"}").await,
        1.0
    );
    create_post(&s, json!({ "title": "seen" })).await;
    ws.next().await;
    ws.abort().await;
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if metric("livegate_realtime_subscriptions ").await == 0.0
            && metric("livegate_realtime_connections{protocol=\"graphql-transport-ws\"}").await
                == 0.0
        {
            freed = true;
            break;
        }
    }
    assert!(freed, "a dropped TCP connection frees its subscriptions");
    assert!(metric("livegate_events_published_total").await >= 1.0);
    assert!(metric("livegate_deliveries_total").await >= 1.0);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_server_answers_a_close_frame() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    for proto in [TRANSPORT_WS, LEGACY] {
        let mut ws = Ws::open(&s.base, Some(proto), "").await;
        ws.send(json!({ "type": "connection_init", "payload": { "token": s.token } }))
            .await;
        assert!(
            matches!(ws.raw_within(Duration::from_secs(5)).await, Some(Frame::Json(v)) if v["type"] == "connection_ack")
        );
        if proto == LEGACY {
            ws.raw_within(Duration::from_secs(5)).await;
        }
        assert_eq!(
            ws.close_handshake(1000).await,
            Some(Frame::Closed(1000, "bye".into())),
            "{proto}: the close frame is echoed"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_and_finishes() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("1", POST_CHANGED, json!({})).await;
    let mut legacy = Ws::open(&s.base, Some(LEGACY), "").await;
    legacy
        .send(json!({ "type": "connection_init", "payload": { "token": s.token } }))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), s.stop()).await;
    assert!(
        stopped.is_ok(),
        "graceful shutdown must not wait forever on open sockets"
    );
    assert_eq!(
        closes_with(&mut ws, 1001).await,
        "Going away: the server is shutting down"
    );
    db.drop_db().await;
}

/// Subscribers with the same operation share each rendered event, but never
/// across what they may see: a `ref` to a row one viewer may not read renders
/// as null for that viewer only.
#[tokio::test]
async fn shared_renderings_never_cross_viewers() {
    let db = Db::fresh().await;
    let app = format!(
        "{EXAMPLE_APP}\n[collections.links]\nread = \"anon\"\ncreate = \"user\"\nupdate = \"owner\"\ndelete = \"owner\"\n\n[collections.links.fields]\ntitle = \"string\"\nnote = {{ type = \"ref\", collection = \"notes\" }}\n"
    );
    let s = Server::start(&db, &app).await;
    let alice = s
        .user_for("alice@test.local", livegate::access::Role::User, "default")
        .await;
    let bob = s
        .user_for("bob@test.local", livegate::access::Role::User, "default")
        .await;
    let with_ref = "subscription { linkChanged { action record { title note { title } } } }";
    let without_ref = "subscription { linkChanged { action record { title noteId } } }";
    // Two sockets per viewer, each with both operations: four groups of two.
    let mut socks = Vec::new();
    for token in [&alice.token, &bob.token, &alice.token, &bob.token] {
        let mut ws = Ws::acked(&s.base, Some(token)).await;
        ws.subscribe("r", with_ref, json!({})).await;
        ws.subscribe("p", without_ref, json!({})).await;
        socks.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let note = s
        .gql_as(
            Some(&alice.token),
            "mutation { createNote(input: { title: \"alice's secret\" }) { id } }",
            json!({}),
        )
        .await;
    let note_id = note["data"]["createNote"]["id"].clone();
    for title in ["first", "second"] {
        let link = s
            .gql_as(
                Some(&alice.token),
                "mutation($note: ID!, $title: String) { createLink(input: { title: $title, noteId: $note }) { id } }",
                json!({ "note": note_id, "title": title }),
            )
            .await;
        assert!(link["errors"].is_null(), "{link}");
    }
    for (i, ws) in socks.iter_mut().enumerate() {
        let alice_sees = i % 2 == 0;
        let mut with = Vec::new();
        let mut without = Vec::new();
        while with.len() < 2 || without.len() < 2 {
            match ws.next().await {
                Frame::Json(v) if v["id"] == "r" => with.push(v["payload"].clone()),
                Frame::Json(v) if v["id"] == "p" => without.push(v["payload"].clone()),
                other => panic!("socket {i}: {other:?}"),
            }
        }
        for (n, (w, wo)) in with.iter().zip(&without).enumerate() {
            let title = ["first", "second"][n];
            let expected_note = if alice_sees {
                json!({ "title": "alice's secret" })
            } else {
                Value::Null
            };
            assert_eq!(
                w,
                &json!({ "data": { "linkChanged": { "action": "CREATE", "record": { "title": title, "note": expected_note } } } }),
                "socket {i} (alice: {alice_sees})"
            );
            assert_eq!(
                wo,
                &json!({ "data": { "linkChanged": { "action": "CREATE", "record": { "title": title, "noteId": note_id } } } }),
                "socket {i}: the id of a ref is plain data"
            );
        }
    }
    s.stop().await;
    db.drop_db().await;
}

/// Subscription groups go when their last member does: by `complete` (live,
/// or while still replaying from a cursor) and by the connection closing.
#[tokio::test]
async fn groups_go_with_their_last_member() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    for i in 0..600 {
        create_post(&s, json!({ "title": format!("h{i}") })).await;
    }
    let live = "subscription { postChanged { cursor } }";
    let resuming =
        "subscription($a: String) { postChanged(after: $a) { cursor record { title body } } }";
    let mut a = Ws::acked(&s.base, Some(&s.token)).await;
    let mut b = Ws::acked(&s.base, Some(&s.token)).await;
    a.subscribe("live", live, json!({})).await;
    b.subscribe("live", live, json!({})).await;
    // Completed at once: most likely while it still replays 600 changes.
    a.subscribe("old", resuming, json!({ "a": "0" })).await;
    a.send(json!({ "type": "complete", "id": "old" })).await;
    b.subscribe("old", resuming, json!({ "a": "0" })).await;
    // Subscriptions start asynchronously (graphql-ws has no acknowledgement
    // of one), and a write may be published first: write until `a` hears
    // one live (frames of its completed replay may come before).
    let mut heard = false;
    for _ in 0..20 {
        create_post(&s, json!({ "title": "now" })).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Some(frame) = a
            .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            if matches!(&frame, Frame::Json(v) if v["id"] == "live") {
                heard = true;
                break;
            }
        }
        if heard {
            break;
        }
    }
    assert!(heard, "the live subscription hears a write");
    let renderings = s.state.fanout().clone();
    assert!(
        eventually(Duration::from_secs(5), || renderings.len() == 2).await,
        "one group for the live subscriptions, one for b's resuming one: {}",
        renderings.len()
    );
    a.send(json!({ "type": "complete", "id": "live" })).await;
    drop(b);
    assert!(
        eventually(Duration::from_secs(5), || renderings.is_empty()).await,
        "{} groups left",
        renderings.len()
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_cursor_read_before_subscribing_misses_nothing_written_before_the_subscription_starts() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    create_post(&s, json!({ "title": "before the cursor" })).await;
    // A client reads where the feeds stand, then loses its connection before
    // its subscription starts; writes land meanwhile, from several writers.
    let cursor = s.data("{ cursor }", json!({})).await["cursor"]
        .as_str()
        .expect("a cursor")
        .to_string();
    let writers: Vec<_> = ["gap 0", "gap 1", "gap 2"]
        .into_iter()
        .map(|prefix| writer(&s, prefix, 5, Duration::ZERO))
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "r",
        "subscription($a: String) { postChanged(after: $a) { cursor record { title } } }",
        json!({ "a": cursor }),
    )
    .await;
    let got = collect(&mut ws, "r", 15).await;
    let mut titles: Vec<String> = got
        .iter()
        .map(|p| {
            p["data"]["postChanged"]["record"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    titles.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|w| (0..5).map(move |i| format!("gap {w} {i}")))
        .collect();
    expected.sort();
    assert_eq!(
        titles, expected,
        "every write after the cursor, none before"
    );
    ws.silent_for(Duration::from_millis(200)).await;
    // Anonymous viewers may read it too; it is a position, not data.
    let anon = s.gql_as(None, "{ cursor }", json!({})).await;
    assert!(anon["data"]["cursor"].is_string(), "{anon}");
    s.stop().await;
    db.drop_db().await;
}
