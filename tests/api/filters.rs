//! Every filter operator of every filter type, logical combinators, ordering and
//! paging, against one seeded set of posts.

use livegate::graphql::Limits;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};

/// Seeds four posts; returns their ids in creation order (A, B, C, D).
async fn seed(s: &Server) -> Vec<String> {
    let rows = [
        json!({ "title": "Alpha", "body": "red fox", "published": true, "views": 10, "rating": 1.5, "publishedAt": "2026-01-01T00:00:00Z" }),
        json!({ "title": "Beta", "body": "blue 100% fox_", "published": false, "views": 20, "rating": 2.5, "publishedAt": "2026-02-01T00:00:00Z" }),
        json!({ "title": "Gamma", "published": true, "views": 30 }),
        json!({ "title": "alpha2", "body": "Red", "published": false, "views": 40, "rating": 4.0, "publishedAt": "2026-03-01T00:00:00Z" }),
    ];
    let mut ids = Vec::new();
    for r in rows {
        ids.push(
            create_post(s, r).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    ids
}

async fn titles(s: &Server, filter: Value) -> Vec<String> {
    let data = s
        .data(
            "query($w: PostWhere) { posts(where: $w, orderBy: [{ field: VIEWS }]) { title } }",
            json!({ "w": filter }),
        )
        .await;
    data["posts"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["title"].as_str().expect("title").to_string())
        .collect()
}

#[tokio::test]
async fn every_filter_operator() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let ids = seed(&s).await;
    let me = s.data("{ me { id } }", json!({})).await["me"]["id"].clone();
    let (a, b) = (&ids[0], &ids[1]);
    // (where, titles expected, ordered by views)
    let cases: Vec<(Value, Vec<&str>)> = vec![
        // StringFilter (byte order: uppercase sorts before lowercase on every backend)
        (json!({ "title": { "eq": "Beta" } }), vec!["Beta"]),
        (
            json!({ "title": { "ne": "Beta" } }),
            vec!["Alpha", "Gamma", "alpha2"],
        ),
        (
            json!({ "title": { "in": ["Alpha", "Gamma"] } }),
            vec!["Alpha", "Gamma"],
        ),
        (
            json!({ "title": { "notIn": ["Alpha", "Gamma"] } }),
            vec!["Beta", "alpha2"],
        ),
        (json!({ "title": { "lt": "Beta" } }), vec!["Alpha"]),
        (json!({ "title": { "lte": "Beta" } }), vec!["Alpha", "Beta"]),
        (
            json!({ "title": { "gt": "Beta" } }),
            vec!["Gamma", "alpha2"],
        ),
        (
            json!({ "title": { "gte": "Gamma" } }),
            vec!["Gamma", "alpha2"],
        ),
        (
            json!({ "title": { "contains": "lph" } }),
            vec!["Alpha", "alpha2"],
        ),
        (json!({ "title": { "contains": "Al" } }), vec!["Alpha"]),
        (json!({ "title": { "startsWith": "alp" } }), vec!["alpha2"]),
        (
            json!({ "title": { "endsWith": "a" } }),
            vec!["Alpha", "Beta", "Gamma"],
        ),
        (json!({ "body": { "contains": "100%" } }), vec!["Beta"]),
        (json!({ "body": { "contains": "%" } }), vec!["Beta"]),
        (json!({ "body": { "endsWith": "_" } }), vec!["Beta"]),
        (json!({ "body": { "isNull": true } }), vec!["Gamma"]),
        (
            json!({ "body": { "isNull": false } }),
            vec!["Alpha", "Beta", "alpha2"],
        ),
        (json!({ "body": { "ne": "Red" } }), vec!["Alpha", "Beta"]),
        (
            json!({ "title": { "gte": "B", "lt": "H" } }),
            vec!["Beta", "Gamma"],
        ),
        // IntFilter
        (json!({ "views": { "eq": 20 } }), vec!["Beta"]),
        (
            json!({ "views": { "ne": 20 } }),
            vec!["Alpha", "Gamma", "alpha2"],
        ),
        (
            json!({ "views": { "in": [10, 40] } }),
            vec!["Alpha", "alpha2"],
        ),
        (
            json!({ "views": { "notIn": [10, 40] } }),
            vec!["Beta", "Gamma"],
        ),
        (json!({ "views": { "lt": 20 } }), vec!["Alpha"]),
        (json!({ "views": { "lte": 20 } }), vec!["Alpha", "Beta"]),
        (json!({ "views": { "gt": 30 } }), vec!["alpha2"]),
        (json!({ "views": { "gte": 30 } }), vec!["Gamma", "alpha2"]),
        (json!({ "views": { "isNull": true } }), vec![]),
        // FloatFilter
        (json!({ "rating": { "eq": 2.5 } }), vec!["Beta"]),
        (json!({ "rating": { "ne": 2.5 } }), vec!["Alpha", "alpha2"]),
        (
            json!({ "rating": { "in": [1.5, 4] } }),
            vec!["Alpha", "alpha2"],
        ),
        (
            json!({ "rating": { "notIn": [1.5] } }),
            vec!["Beta", "alpha2"],
        ),
        (json!({ "rating": { "lt": 2.5 } }), vec!["Alpha"]),
        (json!({ "rating": { "lte": 2.5 } }), vec!["Alpha", "Beta"]),
        (json!({ "rating": { "gt": 2.5 } }), vec!["alpha2"]),
        (json!({ "rating": { "gte": 2.5 } }), vec!["Beta", "alpha2"]),
        (json!({ "rating": { "isNull": true } }), vec!["Gamma"]),
        // BooleanFilter
        (
            json!({ "published": { "eq": true } }),
            vec!["Alpha", "Gamma"],
        ),
        (
            json!({ "published": { "ne": true } }),
            vec!["Beta", "alpha2"],
        ),
        (
            json!({ "published": { "isNull": false } }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        // DateTimeFilter (offsets are compared as instants)
        (
            json!({ "publishedAt": { "eq": "2026-02-01T00:00:00Z" } }),
            vec!["Beta"],
        ),
        (
            json!({ "publishedAt": { "eq": "2026-02-01T01:00:00+01:00" } }),
            vec!["Beta"],
        ),
        (
            json!({ "publishedAt": { "ne": "2026-02-01T00:00:00Z" } }),
            vec!["Alpha", "alpha2"],
        ),
        (
            json!({ "publishedAt": { "in": ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00.000Z"] } }),
            vec!["Alpha", "alpha2"],
        ),
        (
            json!({ "publishedAt": { "notIn": ["2026-01-01T00:00:00Z"] } }),
            vec!["Beta", "alpha2"],
        ),
        (
            json!({ "publishedAt": { "lt": "2026-02-01T00:00:00Z" } }),
            vec!["Alpha"],
        ),
        (
            json!({ "publishedAt": { "lte": "2026-02-01T00:00:00Z" } }),
            vec!["Alpha", "Beta"],
        ),
        (
            json!({ "publishedAt": { "gt": "2026-02-01T00:00:00Z" } }),
            vec!["alpha2"],
        ),
        (
            json!({ "publishedAt": { "gte": "2026-01-31T23:59:59.999999Z" } }),
            vec!["Beta", "alpha2"],
        ),
        (json!({ "publishedAt": { "isNull": true } }), vec!["Gamma"]),
        // IDFilter on id, ownerId and a ref
        (json!({ "id": { "eq": a } }), vec!["Alpha"]),
        (
            json!({ "id": { "ne": a } }),
            vec!["Beta", "Gamma", "alpha2"],
        ),
        (json!({ "id": { "in": [a, b] } }), vec!["Alpha", "Beta"]),
        (
            json!({ "id": { "notIn": [a, b] } }),
            vec!["Gamma", "alpha2"],
        ),
        (
            json!({ "id": { "isNull": false } }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        (
            json!({ "ownerId": { "eq": me } }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        (
            json!({ "authorId": { "isNull": true } }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        (
            json!({ "createdAt": { "gte": "2020-01-01T00:00:00Z" }, "updatedAt": { "lt": "2020-01-01T00:00:00Z" } }),
            vec![],
        ),
        // Empty lists
        (json!({ "views": { "in": [] } }), vec![]),
        (
            json!({ "views": { "notIn": [] } }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        // Logic
        (json!({}), vec!["Alpha", "Beta", "Gamma", "alpha2"]),
        (
            json!({ "and": [{ "views": { "gt": 10 } }, { "published": { "eq": true } }] }),
            vec!["Gamma"],
        ),
        (
            json!({ "or": [{ "title": { "eq": "Alpha" } }, { "views": { "eq": 40 } }] }),
            vec!["Alpha", "alpha2"],
        ),
        (
            json!({ "not": { "published": { "eq": true } } }),
            vec!["Beta", "alpha2"],
        ),
        (
            json!({ "or": [{ "and": [{ "published": { "eq": false } }, { "views": { "lt": 30 } }] }, { "not": { "rating": { "isNull": false } } }] }),
            vec!["Beta", "Gamma"],
        ),
        (json!({ "or": [] }), vec![]),
        (
            json!({ "and": [] }),
            vec!["Alpha", "Beta", "Gamma", "alpha2"],
        ),
        (
            json!({ "published": { "eq": true }, "or": [{ "views": { "lt": 15 } }, { "views": { "gt": 35 } }] }),
            vec!["Alpha"],
        ),
    ];
    let mut failures = Vec::new();
    for (filter, expected) in &cases {
        let got = titles(&s, filter.clone()).await;
        if &got != expected {
            failures.push(format!(
                "where {filter}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filter cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let counted = s
        .data(
            "{ postsCount(where: { published: { eq: true } }) all: postsCount }",
            json!({}),
        )
        .await;
    assert_eq!(counted, json!({ "postsCount": 2, "all": 4 }));
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn null_operands_are_rejected_with_the_field_named() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let (code, err) = s
        .error_code(
            "{ posts(where: { title: { eq: null } }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("title.eq"),
        "{err}"
    );
    let (code, err) = s
        .error_code(
            "{ posts(where: { publishedAt: { lt: \"yesterday\" } }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("publishedAt"),
        "{err}"
    );
    s.stop().await;
    db.drop_db().await;
}

async fn order(s: &Server, order_by: Value) -> Vec<String> {
    let data = s
        .data(
            "query($o: [PostOrder!]) { posts(orderBy: $o) { title } }",
            json!({ "o": order_by }),
        )
        .await;
    data["posts"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["title"].as_str().expect("title").to_string())
        .collect()
}

#[tokio::test]
async fn ordering_is_stable_and_nulls_sort_as_largest() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    seed(&s).await;
    assert_eq!(
        order(&s, json!(null)).await,
        ["Alpha", "Beta", "Gamma", "alpha2"],
        "no orderBy: creation (id) order"
    );
    assert_eq!(
        order(&s, json!([{ "field": "VIEWS", "direction": "DESC" }])).await,
        ["alpha2", "Gamma", "Beta", "Alpha"]
    );
    assert_eq!(
        order(&s, json!([{ "field": "RATING" }])).await,
        ["Alpha", "Beta", "alpha2", "Gamma"],
        "ASC: nulls last"
    );
    assert_eq!(
        order(&s, json!([{ "field": "RATING", "direction": "DESC" }])).await,
        ["Gamma", "alpha2", "Beta", "Alpha"],
        "DESC: nulls first"
    );
    assert_eq!(
        order(&s, json!([{ "field": "TITLE" }])).await,
        ["Alpha", "Beta", "Gamma", "alpha2"],
        "byte order on every backend"
    );
    assert_eq!(
        order(
            &s,
            json!([{ "field": "PUBLISHED" }, { "field": "VIEWS", "direction": "DESC" }])
        )
        .await,
        ["alpha2", "Beta", "Gamma", "Alpha"],
        "several keys"
    );
    assert_eq!(
        order(
            &s,
            json!([{ "field": "PUBLISHED_AT", "direction": "DESC" }])
        )
        .await,
        ["Gamma", "alpha2", "Beta", "Alpha"]
    );
    assert_eq!(order(&s, json!([{ "field": "CREATED_AT", "direction": "DESC" }, { "field": "ID", "direction": "DESC" }])).await, ["alpha2", "Gamma", "Beta", "Alpha"]);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn paging_with_limit_and_offset() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let s = Server::start_with(
        &db,
        app,
        Limits {
            max_list: 3,
            ..Limits::default()
        },
    )
    .await
    .expect("start");
    seed(&s).await;
    let page = |limit: i64, offset: i64| {
        let s = &s;
        async move {
            s.gql("query($l: Int, $o: Int) { posts(orderBy: [{ field: VIEWS }], limit: $l, offset: $o) { title } }", json!({ "l": limit, "o": offset }))
                .await
        }
    };
    assert_eq!(
        page(2, 1).await["data"]["posts"],
        json!([{ "title": "Beta" }, { "title": "Gamma" }])
    );
    assert_eq!(
        page(2, 3).await["data"]["posts"],
        json!([{ "title": "alpha2" }])
    );
    assert_eq!(page(2, 10).await["data"]["posts"], json!([]));
    assert_eq!(page(0, 0).await["data"]["posts"], json!([]));
    assert_eq!(
        page(100, 0).await["data"]["posts"].as_array().map(Vec::len),
        Some(3),
        "limit is capped"
    );
    let all = s.data("{ posts { id } }", json!({})).await;
    assert_eq!(
        all["posts"].as_array().map(Vec::len),
        Some(3),
        "the default limit is capped too"
    );
    for (l, o, field) in [(-1, 0, "limit"), (1, -5, "offset")] {
        let body = page(l, o).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    s.stop().await;
    db.drop_db().await;
}
