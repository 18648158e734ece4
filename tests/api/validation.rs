//! Bad input gets a clear error with the right `extensions.code`, names the field,
//! leaks no internals, and changes nothing.

use livegate::graphql::Limits;
use serde_json::json;

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};

#[tokio::test]
async fn field_validation_is_bad_user_input_naming_the_field() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let post = create_post(&s, json!({ "title": "ok" })).await;
    let long = "x".repeat(201);
    let cases = [
        (
            "mutation($t: String!) { createPost(input: { title: $t }) { id } }",
            json!({ "t": long }),
            "title",
            "at most 200 characters",
        ),
        (
            "mutation { createPost(input: { title: \"t\", publishedAt: \"31/01/2026\" }) { id } }",
            json!({}),
            "publishedAt",
            "RFC 3339",
        ),
        (
            "mutation { createComment(input: { postId: \"01900000-0000-7000-8000-000000000000\", body: \"b\" }) { id } }",
            json!({}),
            "postId",
            "no posts row",
        ),
        (
            "mutation { createPost(input: { title: \"t\", authorId: \"nobody\" }) { id } }",
            json!({}),
            "authorId",
            "no users row",
        ),
        (
            "mutation($id: ID!) { updatePost(id: $id, input: { title: null }) { id } }",
            json!({ "id": post["id"] }),
            "title",
            "required",
        ),
        (
            "mutation($id: ID!, $t: String) { updatePost(id: $id, input: { title: $t }) { id } }",
            json!({ "id": post["id"], "t": long }),
            "title",
            "at most 200",
        ),
    ];
    for (query, vars, field, words) in cases {
        let body = s.gql(query, vars).await;
        let err = &body["errors"][0];
        assert_eq!(
            err["extensions"]["code"], "BAD_USER_INPUT",
            "{query}: {body}"
        );
        assert_eq!(err["extensions"]["field"], field, "{query}: {body}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains(words),
            "{query}: message {message:?} should name {field} and say {words:?}"
        );
    }
    let count = s.data("{ postsCount commentsCount }", json!({})).await;
    assert_eq!(
        count,
        json!({ "postsCount": 1, "commentsCount": 0 }),
        "failed writes stored nothing"
    );
    let kept = s
        .data(
            "query($id: ID!) { post(id: $id) { title } }",
            json!({ "id": post["id"] }),
        )
        .await;
    assert_eq!(
        kept["post"]["title"], "ok",
        "a failed update changed nothing"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn request_errors_have_apollo_codes() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let (code, _) = s.error_code("{ posts { id ", json!({})).await;
    assert_eq!(code, "GRAPHQL_PARSE_FAILED");
    let (code, err) = s.error_code("{ posts { nope } }", json!({})).await;
    assert_eq!(code, "GRAPHQL_VALIDATION_FAILED", "{err}");
    let (code, err) = s
        .error_code(
            "mutation { createPost(input: { body: \"no title\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        code, "GRAPHQL_VALIDATION_FAILED",
        "a required field missing from a literal fails validation: {err}"
    );
    let (code, err) = s
        .error_code(
            "mutation($i: PostCreateInput!) { createPost(input: $i) { id } }",
            json!({ "i": { "body": "no title" } }),
        )
        .await;
    assert_eq!(
        code, "BAD_USER_INPUT",
        "a bad variable is user input: {err}"
    );
    let (code, err) = s
        .error_code(
            "query($n: Int) { posts(limit: $n) { id } }",
            json!({ "n": "ten" }),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{err}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn depth_and_complexity_are_limited() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let s = Server::start_with(
        &db,
        app,
        Limits {
            max_depth: 4,
            max_complexity: 20,
            ..Limits::default()
        },
    )
    .await
    .expect("start");
    let ok = s
        .gql("{ comments { post { author { id } } } }", json!({}))
        .await;
    assert!(ok.get("errors").is_none(), "depth 4 is allowed: {ok}");
    let deep = s.gql("{ comments { post { author { id } } post2: post { title } } comments2: comments { post { author { email } } } }", json!({})).await;
    assert!(deep.get("errors").is_none(), "still depth 4: {deep}");
    let (code, err) = s
        .error_code(
            "{ __schema { types { fields { type { ofType { name } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        code, "GRAPHQL_VALIDATION_FAILED",
        "depth 6 is refused: {err}"
    );
    let wide = s
        .gql(
            "{ posts { id title body published views rating publishedAt meta createdAt updatedAt ownerId accountId authorId } \
               comments { id body postId ownerId accountId createdAt updatedAt } }",
            json!({}),
        )
        .await;
    assert_eq!(
        wide["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "complexity 22 > 20 is refused: {wide}"
    );
    assert!(
        wide.get("data").is_none(),
        "a refused operation never ran: {wide}"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn internal_errors_leak_no_sql() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    create_post(&s, json!({ "title": "x" })).await;
    // Break the table behind the server's back: the next read fails in the database.
    // (Not a renamed column: SQLite reads an unknown double-quoted name as a string.)
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    sea_orm::ConnectionTrait::execute_unprepared(&conn, "ALTER TABLE posts RENAME TO posts_gone")
        .await
        .expect("alter");
    conn.close().await.ok();
    let body = s.gql("{ posts { id title } }", json!({})).await;
    let err = &body["errors"][0];
    assert_eq!(err["extensions"]["code"], "INTERNAL", "{body}");
    assert_eq!(err["message"], "internal error", "{body}");
    assert_eq!(err["path"], json!(["posts"]), "{body}");
    assert_eq!(
        body["data"],
        serde_json::Value::Null,
        "posts is non-null, so data is null: {body}"
    );
    let text = body.to_string().to_lowercase();
    for leak in [
        "select",
        "posts_gone",
        "sqlite",
        "postgres",
        "relation",
        "no such",
        "table",
    ] {
        assert!(!text.contains(leak), "the response leaks {leak:?}: {body}");
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn field_errors_have_paths_and_null_where_they_happened() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let grj = [("accept", "application/graphql-response+json")];
    let missing = "01900000-0000-7000-8000-000000000000";

    let (status, body) = s
        .post(
            Some(&s.token),
            &grj,
            &format!("{{ posts {{ id }} post(id: \"{missing}\") {{ id }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "a field error is not a request error: {body}");
    assert_eq!(
        body["data"],
        json!({ "posts": [], "post": null }),
        "the failed nullable field is null, the rest is kept"
    );
    assert_eq!(body["errors"][0]["path"], json!(["post"]), "{body}");

    let (status, body) = s
        .post(
            Some(&s.token),
            &grj,
            "{ a: post(id: \"x\") { id } b: post(id: \"y\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({ "a": null, "b": null }));
    let mut paths: Vec<String> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"][0].as_str().unwrap_or_default().to_string())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["a", "b"],
        "each error names its aliased field: {body}"
    );

    let (status, body) = s
        .post(
            None,
            &grj,
            "mutation { createPost(input: { title: \"x\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        serde_json::Value::Null,
        "a non-null root field that fails nulls the whole data: {body}"
    );
    assert!(
        body.as_object().is_some_and(|o| o.contains_key("data")),
        "data is present (null), since the operation ran: {body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["createPost"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let (_, body) = s.post(Some(&s.token), &grj, &format!("query Q {{ me {{ email }} ...F }} fragment F on Query {{ gone: post(id: \"{missing}\") {{ title }} }}"), json!({})).await;
    assert_eq!(
        body["data"],
        json!({ "me": { "email": "admin@test.local" }, "gone": null }),
        "fields from fragments too: {body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["gone"]));
    s.stop().await;
    db.drop_db().await;
}
