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
