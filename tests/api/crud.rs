//! Create, read, update, delete; system fields; defaults; refs.

use serde_json::json;

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};

#[tokio::test]
async fn create_get_update_delete_round_trip() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;

    let created = s
        .data(
            r#"mutation { createPost(input: { title: "Hello", body: "First", rating: 4.5, publishedAt: "2026-01-01T10:00:00+02:00", meta: { tags: ["a"], n: 1 } }) {
                id ownerId accountId createdAt updatedAt title body published views rating publishedAt meta } }"#,
            json!({}),
        )
        .await["createPost"]
        .clone();
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&id)
            .expect("a UUID")
            .get_version_num(),
        7
    );
    assert_eq!(created["title"], "Hello");
    assert_eq!(created["body"], "First");
    assert_eq!(created["published"], false, "bool default applies");
    assert_eq!(created["views"], 0, "int default applies");
    assert_eq!(created["rating"], 4.5);
    assert_eq!(
        created["publishedAt"], "2026-01-01T08:00:00.000000Z",
        "date-times are normalised to UTC"
    );
    assert_eq!(created["meta"], json!({ "tags": ["a"], "n": 1 }));
    assert!(created["ownerId"].is_string() && created["accountId"].is_string());
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let me = s.data("{ me { id accountId } }", json!({})).await;
    assert_eq!(
        created["ownerId"], me["me"]["id"],
        "the creator owns the row"
    );
    assert_eq!(created["accountId"], me["me"]["accountId"]);

    let got = s
        .data(
            "query($id: ID!) { post(id: $id) { id title meta } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(got["post"]["title"], "Hello");
    assert_eq!(got["post"]["meta"], created["meta"]);

    let updated = s
        .data(
            "mutation($id: ID!) { updatePost(id: $id, input: { title: \"Changed\", body: null }) { id title body rating updatedAt createdAt } }",
            json!({ "id": id }),
        )
        .await["updatePost"]
        .clone();
    assert_eq!(updated["title"], "Changed");
    assert_eq!(
        updated["body"],
        serde_json::Value::Null,
        "null clears a field"
    );
    assert_eq!(updated["rating"], 4.5, "fields not given are kept");
    assert!(updated["updatedAt"].as_str() >= updated["createdAt"].as_str());

    let again = s
        .data(
            "query($id: ID!) { post(id: $id) { title body rating } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        again["post"],
        json!({ "title": "Changed", "body": null, "rating": 4.5 }),
        "the update was stored"
    );

    let deleted = s
        .data(
            "mutation($id: ID!) { deletePost(id: $id) { id title } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        deleted["deletePost"],
        json!({ "id": id, "title": "Changed" }),
        "delete returns the row as it was"
    );

    let (code, err) = s
        .error_code(
            "query($id: ID!) { post(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND", "{err}");
    assert_eq!(s.data("{ postsCount }", json!({})).await["postsCount"], 0);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn missing_rows_are_not_found_on_every_path() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let missing = "01900000-0000-7000-8000-000000000000";
    for q in [
        "query($id: ID!) { post(id: $id) { id } }",
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"x\" }) { id } }",
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
    ] {
        let (code, err) = s.error_code(q, json!({ "id": missing })).await;
        assert_eq!(code, "NOT_FOUND", "{q}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap_or_default()
                .contains(missing),
            "{err}"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn refs_resolve_to_nested_objects_and_null_when_gone() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let me = s.data("{ me { id email } }", json!({})).await["me"].clone();
    let post = s
        .data("mutation($a: ID!) { createPost(input: { title: \"P\", authorId: $a }) { id authorId author { id email role } } }", json!({ "a": me["id"] }))
        .await["createPost"]
        .clone();
    assert_eq!(
        post["author"]["email"], me["email"],
        "ref to the built-in users"
    );
    assert_eq!(post["author"]["role"], "ADMIN");

    let comment = s
        .data(
            "mutation($p: ID!) { createComment(input: { postId: $p, body: \"Nice\" }) { id postId post { id title author { email } } } }",
            json!({ "p": post["id"] }),
        )
        .await["createComment"]
        .clone();
    assert_eq!(comment["postId"], post["id"]);
    assert_eq!(comment["post"]["title"], "P");
    assert_eq!(comment["post"]["author"]["email"], me["email"], "refs nest");

    let listed = s
        .data(
            "query($p: ID!) { comments(where: { postId: { eq: $p } }) { body post { title } } }",
            json!({ "p": post["id"] }),
        )
        .await;
    assert_eq!(
        listed["comments"],
        json!([{ "body": "Nice", "post": { "title": "P" } }])
    );

    s.data(
        "mutation($id: ID!) { deletePost(id: $id) { id } }",
        json!({ "id": post["id"] }),
    )
    .await;
    let after = s
        .data(
            "query($c: ID!) { comment(id: $c) { postId post { id } } }",
            json!({ "c": comment["id"] }),
        )
        .await;
    assert_eq!(after["comment"]["postId"], post["id"], "the id stays");
    assert_eq!(
        after["comment"]["post"],
        serde_json::Value::Null,
        "a ref to a gone row resolves to null, without an error"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let p = create_post(&s, json!({ "title": "Durable", "views": 7 })).await;
    s.stop().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let got = s
        .data(
            "query($id: ID!) { post(id: $id) { title views } }",
            json!({ "id": p["id"] }),
        )
        .await;
    assert_eq!(got["post"], json!({ "title": "Durable", "views": 7 }));
    s.stop().await;
    db.drop_db().await;
}

/// Writes sent together share a transaction (group commit), yet each stands
/// alone: a create the database itself refuses (a trigger), an update it
/// refuses, and updates an access rule vetoes fail on their own, while every
/// neighbour commits, is answered, and reaches a subscriber once, in cursor
/// order. Nothing of a failed write is stored or published.
#[tokio::test]
async fn one_failing_write_of_a_batch_leaves_its_neighbours_committed() {
    use livegate::access::Role;
    use sea_orm::{ConnectionTrait, Database};
    use std::collections::BTreeSet;
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let refuse: &[&str] = if db.url.starts_with("postgres") {
        &[
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
             IF NEW.title IN ('boom', 'veto') THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON posts \
             FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
    } else {
        &[
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON posts WHEN NEW.title = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            "CREATE TRIGGER refuse_update BEFORE UPDATE ON posts WHEN NEW.title = 'veto' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        ]
    };
    let conn = Database::connect(&db.url).await.expect("connect");
    for sql in refuse {
        conn.execute_unprepared(sql).await.expect("trigger");
    }
    conn.close().await.ok();

    let mut existing = Vec::new();
    for i in 0..8 {
        let p = create_post(&s, json!({ "title": format!("old {i}") })).await;
        existing.push(p["id"].as_str().expect("id").to_string());
    }
    let other = s.user_for("other@test.local", Role::User, "default").await;
    let mut ws = crate::wsclient::Ws::acked(&s.base, Some(&s.token)).await;
    ws.subscribe(
        "1",
        "subscription { postChanged { action id cursor record { title } } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let before = write_counts(&s).await;
    // (token, query, variables, the error code it must fail with, if any)
    let mut writes = Vec::new();
    for i in 0..40 {
        let title = if i % 5 == 2 {
            "boom".to_string()
        } else {
            format!("new {i}")
        };
        writes.push((
            s.token.clone(),
            "mutation($t: String!) { createPost(input: { title: $t }) { id title } }",
            json!({ "t": title }),
            (title == "boom").then_some("INTERNAL"),
        ));
    }
    for (i, id) in existing.iter().enumerate() {
        let (token, title, refusal) = match i % 3 {
            0 => (s.token.clone(), "veto".to_string(), Some("INTERNAL")),
            1 => (
                other.token.clone(),
                format!("stolen {i}"),
                Some("FORBIDDEN"),
            ),
            _ => (s.token.clone(), format!("changed {i}"), None),
        };
        writes.push((
            token,
            "mutation($id: ID!, $t: String!) { updatePost(id: $id, input: { title: $t }) { id title } }",
            json!({ "id": id, "t": title }),
            refusal,
        ));
    }
    let sent = writes.into_iter().map(|(token, query, vars, refusal)| {
        let (base, client) = (s.base.clone(), s.client.clone());
        tokio::spawn(async move {
            let answer: serde_json::Value = client
                .post(format!("{base}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": query, "variables": vars }))
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("JSON");
            (answer, refusal)
        })
    });
    let mut committed = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for task in sent.collect::<Vec<_>>() {
        let (answer, refusal) = task.await.expect("task");
        let data = answer["data"]
            .as_object()
            .and_then(|d| d.values().next())
            .cloned()
            .unwrap_or_default();
        if let Some(code) = refusal {
            assert!(data.is_null(), "a refused write returns no row: {answer}");
            assert_eq!(answer["errors"][0]["extensions"]["code"], code, "{answer}");
        } else {
            assert!(answer.get("errors").is_none(), "{answer}");
            committed.insert(data["id"].as_str().expect("id").to_string());
            titles.insert(data["title"].as_str().expect("title").to_string());
        }
    }
    assert_eq!(committed.len(), 32 + 2, "32 creates and 2 updates commit");
    let after = write_counts(&s).await;
    assert_eq!(
        after.0 - before.0,
        34,
        "livegate_writes_total counts the committed"
    );
    let commits = after.1 - before.1;
    if db.url.starts_with("postgres") {
        assert_eq!(commits, 34, "on PostgreSQL each write commits alone");
    } else {
        // 48 writes sent at once cannot all find the writer idle.
        assert!(
            commits < 34,
            "on SQLite writes share commits: {commits} for 34"
        );
    }
    eprintln!("34 writes committed in {commits} transactions");

    let mut heard = BTreeSet::new();
    let mut cursors = Vec::new();
    for _ in 0..committed.len() {
        let ev = ws.next_payload("1").await;
        let c = &ev["data"]["postChanged"];
        let title = c["record"]["title"].as_str().expect("title");
        assert!(
            titles.contains(title),
            "only committed writes are published: {ev}"
        );
        heard.insert(c["id"].as_str().expect("id").to_string());
        cursors.push(
            c["cursor"]
                .as_str()
                .and_then(|c| c.parse::<i64>().ok())
                .expect("cursor"),
        );
    }
    assert_eq!(heard, committed, "each committed write is published once");
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in cursor order: {cursors:?}"
    );
    ws.silent_for(std::time::Duration::from_millis(300)).await;

    let stored = s.data("{ posts(limit: 100) { title } }", json!({})).await;
    let stored: BTreeSet<String> = stored["posts"]
        .as_array()
        .expect("posts")
        .iter()
        .map(|p| p["title"].as_str().expect("title").to_string())
        .collect();
    assert_eq!(stored.len(), 8 + 32);
    assert!(titles.is_subset(&stored));
    assert!(
        stored
            .iter()
            .all(|t| t != "boom" && t != "veto" && !t.starts_with("stolen")),
        "nothing refused was stored: {stored:?}"
    );
    s.stop().await;
    db.drop_db().await;
}

/// `livegate_writes_total` and `livegate_write_commits_total`.
async fn write_counts(s: &Server) -> (u64, u64) {
    let text = s.metrics().await;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
    };
    (
        read("livegate_writes_total"),
        read("livegate_write_commits_total"),
    )
}
