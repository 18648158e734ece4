//! Live queries (API.md §8): `query @live` over graphql-ws and SSE, its
//! results re-sent only when they change, as whole results or JSON Patches,
//! one run per cohort of identical live queries, scoped to each viewer.

use std::time::Duration;

use livegate::access::Role;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};
use crate::sseclient::Sse;
use crate::wsclient::{Frame, Ws};

/// Live query runs so far.
async fn runs(s: &Server) -> f64 {
    s.metric("livegate_live_query_runs_total").await
}

/// Waits until the live query runs counted reach `n` (the run after a change
/// is asynchronous), then a little more for any extra one to show.
async fn runs_reach(s: &Server, n: f64) -> f64 {
    for _ in 0..100 {
        if runs(s).await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    runs(s).await
}

/// Expects operation `id` to be refused with an `error` message whose first
/// error has `code` (a request error: nothing ran).
async fn refused(ws: &mut Ws, id: &str, code: &str) {
    match ws.next().await {
        Frame::Json(v) if v["type"] == "error" && v["id"] == id => {
            assert_eq!(v["payload"][0]["extensions"]["code"], code, "{v}");
        }
        other => panic!("expected an error for {id}, got {other:?}"),
    }
}

const PUBLISHED: &str = "query @live { posts(where: { published: { eq: true } }, orderBy: [{ field: TITLE }]) { title views } postsCount }";

fn titles(data: &Value) -> Vec<String> {
    data["posts"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["title"].as_str().expect("a title").to_string())
        .collect()
}

#[tokio::test]
async fn a_live_query_is_resent_when_and_only_when_its_result_changes() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("l", PUBLISHED, json!({})).await;
    let first = ws.next_payload("l").await;
    assert_eq!(
        first,
        json!({ "data": { "posts": [], "postsCount": 0 }, "revision": 1 })
    );
    assert_eq!(runs_reach(&s, 1.0).await, 1.0);

    // A row that enters the `where`, and the count.
    let a = create_post(&s, json!({ "title": "a", "published": true })).await;
    let second = ws.next_payload("l").await;
    assert_eq!(second["revision"], 2, "{second}");
    assert_eq!(titles(&second["data"]), ["a"]);
    assert_eq!(second["data"]["postsCount"], 1);

    // A row outside the `where` changes the count only.
    let b = create_post(&s, json!({ "title": "b", "published": false })).await;
    let third = ws.next_payload("l").await;
    assert_eq!(third["revision"], 3);
    assert_eq!(titles(&third["data"]), ["a"]);
    assert_eq!(third["data"]["postsCount"], 2);

    // A change the selection does not show: run again, nothing sent.
    let before = runs(&s).await;
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { rating: 4.5 }) { id } }",
        json!({ "id": a["id"] }),
    )
    .await;
    assert_eq!(runs_reach(&s, before + 1.0).await, before + 1.0);
    ws.silent_for(Duration::from_millis(300)).await;

    // A change to a collection the query does not read: not even a run.
    let before = runs(&s).await;
    s.data(
        "mutation { createNote(input: { title: \"elsewhere\" }) { id } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs(&s).await,
        before,
        "an unrelated write re-ran the query"
    );
    ws.silent_for(Duration::from_millis(100)).await;

    // A row entering the `where` by an update, then leaving it, then a delete.
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { published: true }) { id } }",
        json!({ "id": b["id"] }),
    )
    .await;
    let entered = ws.next_payload("l").await;
    assert_eq!(entered["revision"], 4);
    assert_eq!(titles(&entered["data"]), ["a", "b"]);
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { published: false }) { id } }",
        json!({ "id": a["id"] }),
    )
    .await;
    let left = ws.next_payload("l").await;
    assert_eq!(left["revision"], 5);
    assert_eq!(titles(&left["data"]), ["b"]);
    s.data(
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
        json!({ "id": b["id"] }),
    )
    .await;
    let deleted = ws.next_payload("l").await;
    assert_eq!(
        deleted,
        json!({ "data": { "posts": [], "postsCount": 1 }, "revision": 6 })
    );

    // Completing it ends it: no more results, its cohort gone.
    ws.send(json!({ "type": "complete", "id": "l" })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    create_post(&s, json!({ "title": "c", "published": true })).await;
    ws.silent_for(Duration::from_millis(300)).await;
    assert!(s.metric_becomes("livegate_live_query_cohorts", 0.0).await);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn identical_live_queries_share_one_run_and_viewers_see_their_own_rows() {
    let app = format!(
        "{EXAMPLE_APP}\n[collections.pins]\nread = \"anon\"\ncreate = \"user\"\nupdate = \"owner\"\ndelete = \"owner\"\n\n[collections.pins.fields]\nlabel = {{ type = \"string\", required = true }}\nnote = {{ type = \"ref\", collection = \"notes\" }}\n"
    );
    let db = Db::fresh().await;
    let s = Server::start(&db, &app).await;
    let ann = s.user_for("ann@example.test", Role::User, "default").await;
    let bob = s.user_for("bob@example.test", Role::User, "default").await;
    let query =
        "query @live { pins(orderBy: [{ field: LABEL }]) { label note { title } } notesCount }";
    // Three of Ann's live queries and one of Bob's: two cohorts.
    let mut anns = Vec::new();
    for _ in 0..3 {
        let mut ws = Ws::acked(&s.base, Some(&ann.token)).await;
        ws.subscribe("p", query, json!({})).await;
        assert_eq!(
            ws.next_payload("p").await,
            json!({ "data": { "pins": [], "notesCount": 0 }, "revision": 1 })
        );
        anns.push(ws);
    }
    let mut bobs = Ws::acked(&s.base, Some(&bob.token)).await;
    bobs.subscribe("p", query, json!({})).await;
    bobs.next_payload("p").await;
    assert_eq!(runs_reach(&s, 2.0).await, 2.0, "one run per cohort");
    assert_eq!(s.metric("livegate_live_query_cohorts").await, 2.0);

    // Ann's private note, pinned publicly: Bob sees the pin, not the note.
    let note = s
        .gql_as(
            Some(&ann.token),
            "mutation { createNote(input: { title: \"ann's secret\" }) { id } }",
            json!({}),
        )
        .await;
    let note_id = note["data"]["createNote"]["id"].clone();
    assert!(note_id.is_string(), "{note}");
    for ws in &mut anns {
        let p = ws.next_payload("p").await;
        assert_eq!(p["data"]["notesCount"], 1, "{p}");
    }
    // Bob's result did not change (he sees no note): nothing for him.
    bobs.silent_for(Duration::from_millis(300)).await;
    let pinned = s
        .gql_as(
            Some(&ann.token),
            "mutation($n: ID!) { createPin(input: { label: \"p1\", noteId: $n }) { id } }",
            json!({ "n": note_id }),
        )
        .await;
    assert!(pinned.get("errors").is_none(), "{pinned}");
    for ws in &mut anns {
        let p = ws.next_payload("p").await;
        assert_eq!(
            p["data"]["pins"],
            json!([{ "label": "p1", "note": { "title": "ann's secret" } }])
        );
    }
    let p = bobs.next_payload("p").await;
    assert_eq!(
        p["data"],
        json!({ "pins": [{ "label": "p1", "note": null }], "notesCount": 0 })
    );
    // Ann's note renamed: read through the ref, it changes Ann's result.
    s.gql_as(
        Some(&ann.token),
        "mutation($n: ID!) { updateNote(id: $n, input: { title: \"renamed\" }) { id } }",
        json!({ "n": note_id }),
    )
    .await;
    for ws in &mut anns {
        let p = ws.next_payload("p").await;
        assert_eq!(p["data"]["pins"][0]["note"]["title"], "renamed");
    }
    bobs.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn patches_rebuild_the_results_and_a_late_joiner_starts_whole() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let query = "query @live(patch: true) { posts(orderBy: [{ field: TITLE }]) { title views } }";
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("l", query, json!({})).await;
    let first = ws.next_payload("l").await;
    assert_eq!(first, json!({ "data": { "posts": [] }, "revision": 1 }));
    let p = create_post(&s, json!({ "title": "m" })).await;
    let second = ws.next_payload("l").await;
    assert_eq!(second["revision"], 2);
    assert!(second.get("data").is_none(), "{second}");
    let patch = second["patch"].as_array().expect("a patch");
    assert!(!patch.is_empty());
    assert!(
        patch
            .iter()
            .all(|op| op["op"].is_string() && op["path"].is_string()),
        "{second}"
    );
    // A second viewer of the same cohort joins late: whole, revision 1.
    let mut late = Ws::acked(&s.base, Some(&s.token)).await;
    late.subscribe("l", query, json!({})).await;
    assert_eq!(
        late.next_payload("l").await,
        json!({ "data": { "posts": [{ "title": "m", "views": 0 }] }, "revision": 1 })
    );
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { views: 7 }) { id } }",
        json!({ "id": p["id"] }),
    )
    .await;
    let third = ws.next_payload("l").await;
    assert_eq!(third["revision"], 3);
    assert_eq!(
        third["patch"],
        json!([{ "op": "replace", "path": "/posts/0/views", "value": 7 }])
    );
    let again = late.next_payload("l").await;
    assert_eq!(again["revision"], 2);
    assert_eq!(again["patch"], third["patch"]);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn throttle_bounds_how_often_results_are_sent() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("l", "query @live(throttle: 1000) { postsCount }", json!({}))
        .await;
    assert_eq!(ws.next_payload("l").await["data"]["postsCount"], 0);
    // Twenty writes in a burst: within the second after the first result,
    // nothing; then one result with all of them (or two, if the first run
    // saw only some).
    for i in 0..20 {
        create_post(&s, json!({ "title": format!("t{i}") })).await;
    }
    let started = tokio::time::Instant::now();
    let mut last = 0;
    let mut results = 0;
    while last < 20 {
        let p = ws.next_payload("l").await;
        last = p["data"]["postsCount"].as_i64().expect("a count");
        results += 1;
    }
    assert!(results <= 2, "{results} results for one burst");
    assert!(
        started.elapsed() >= Duration::from_millis(500) || results == 1,
        "results came faster than the throttle"
    );
    ws.silent_for(Duration::from_millis(300)).await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn live_is_refused_over_http_and_bad_arguments_are_bad_input() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let (code, body) = s.error_code("query @live { postsCount }", json!({})).await;
    assert_eq!(code, "BAD_USER_INPUT", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("graphql-ws"), "{message}");
    // `if: false` is a plain query, over HTTP too.
    assert_eq!(
        s.data("query @live(if: false) { postsCount }", json!({}))
            .await,
        json!({ "postsCount": 0 })
    );
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe("a", "query @live(throttle: -5) { postsCount }", json!({}))
        .await;
    refused(&mut ws, "a", "BAD_USER_INPUT").await;
    ws.subscribe("b", "query @live(every: 5) { postsCount }", json!({}))
        .await;
    refused(&mut ws, "b", "BAD_USER_INPUT").await;
    // Not on a subscription or a field: unknown there.
    ws.subscribe(
        "c",
        "subscription @live { changes { collection } }",
        json!({}),
    )
    .await;
    refused(&mut ws, "c", "GRAPHQL_VALIDATION_FAILED").await;
    // A request error of the query itself ends it at once.
    ws.subscribe("d", "query @live { nope }", json!({})).await;
    refused(&mut ws, "d", "GRAPHQL_VALIDATION_FAILED").await;
    // `if: false` over a socket: one result, then complete.
    ws.subscribe("e", "query @live(if: false) { postsCount }", json!({}))
        .await;
    assert_eq!(
        ws.next_payload("e").await,
        json!({ "data": { "postsCount": 0 } })
    );
    assert_eq!(
        ws.next().await,
        Frame::Json(json!({ "type": "complete", "id": "e" }))
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn over_sse_and_until_the_token_expires() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut sse = Sse::open(
        s.client
            .post(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .bearer_auth(&s.token)
            .json(&json!({ "query": "query @live { postsCount }" })),
    )
    .await;
    let first = sse.next().await;
    assert_eq!(first.event.as_deref(), Some("next"));
    assert_eq!(
        first.json(),
        json!({ "data": { "postsCount": 0 }, "revision": 1 })
    );
    create_post(&s, json!({ "title": "x" })).await;
    let second = sse.next().await;
    assert_eq!(
        second.json(),
        json!({ "data": { "postsCount": 1 }, "revision": 2 })
    );

    // A token that expires ends its live queries like its subscriptions.
    let short = s.token_expiring_in(2).await;
    let mut ws = Ws::acked(&s.base, Some(&short)).await;
    ws.subscribe("l", "query @live { postsCount }", json!({}))
        .await;
    assert_eq!(ws.next_payload("l").await["data"]["postsCount"], 1);
    let (code, _) = ws.closed().await;
    assert_eq!(code, 4403);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn anonymous_viewers_share_a_cohort_and_variables_separate_cohorts() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let query = "query($p: String!) @live { postsCount(where: { title: { startsWith: $p } }) }";
    let mut sockets = Vec::new();
    for p in ["a", "a", "a", "b"] {
        let mut ws = Ws::acked(&s.base, None).await;
        ws.subscribe("l", query, json!({ "p": p })).await;
        assert_eq!(
            ws.next_payload("l").await,
            json!({ "data": { "postsCount": 0 }, "revision": 1 })
        );
        sockets.push(ws);
    }
    assert_eq!(s.metric("livegate_live_query_cohorts").await, 2.0);
    assert_eq!(runs_reach(&s, 2.0).await, 2.0);
    create_post(&s, json!({ "title": "apple" })).await;
    for ws in &mut sockets[..3] {
        assert_eq!(ws.next_payload("l").await["data"]["postsCount"], 1);
    }
    // "b" ran again (its collection changed) and stayed the same: silent.
    assert_eq!(runs_reach(&s, 4.0).await, 4.0);
    sockets[3].silent_for(Duration::from_millis(200)).await;
    // The last member of a cohort leaving ends it.
    for ws in sockets.drain(..3) {
        ws.abort().await;
    }
    assert!(
        s.metric_becomes("livegate_live_query_cohorts", 1.0).await,
        "the cohort of the three closed sockets is still running"
    );
    s.stop().await;
    db.drop_db().await;
}
