//! HTTP surface beyond GraphQL: health, metrics, GET queries, method rules.

use serde_json::json;

use crate::harness::{Db, EXAMPLE_APP, Server};

#[tokio::test]
async fn healthz_metrics_and_get_queries() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let health = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let got = s
        .client
        .get(format!("{}/graphql", s.base))
        .query(&[
            ("query", "query Q($n: Int) { posts(limit: $n) { id } }"),
            ("variables", "{\"n\": 1}"),
            ("operationName", "Q"),
        ])
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert!(
        got.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/graphql-response+json")
    );
    assert_eq!(
        got.json::<serde_json::Value>().await.expect("json"),
        json!({ "data": { "posts": [] } })
    );

    let mutation = s
        .client
        .get(format!("{}/graphql", s.base))
        .query(&[(
            "query",
            "mutation { createPost(input: { title: \"x\" }) { id } }",
        )])
        .send()
        .await
        .expect("get");
    assert_eq!(mutation.status(), 405, "no mutations over GET");
    assert_eq!(mutation.headers()["allow"], "POST");
    assert_eq!(
        s.data("{ postsCount }", json!({})).await["postsCount"],
        0,
        "and nothing was written"
    );

    s.data(
        "mutation { createPost(input: { title: \"m\" }) { id } }",
        json!({}),
    )
    .await;
    s.gql("{ nope }", json!({})).await;
    let metrics = s.metrics().await;
    for line in [
        "livegate_graphql_requests_total{operation=\"query\",outcome=\"ok\"}",
        "livegate_graphql_requests_total{operation=\"mutation\",outcome=\"ok\"} 1",
        "livegate_graphql_requests_total{operation=\"query\",outcome=\"error\"} 1",
        "livegate_graphql_request_duration_seconds_count{operation=\"mutation\"}",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn cors_lets_listed_origins_call_and_no_other() {
    let db = Db::fresh().await;
    let s = Server::start_with_cors(&db, EXAMPLE_APP, &["http://app.example:5173"])
        .await
        .expect("starts");
    let url = format!("{}/graphql", s.base);
    // The preflight of a POST with a token and JSON.
    let pre = s
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://app.example:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.example:5173");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .expect("text")
            .contains("POST")
    );
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "no cookies: tokens only"
    );
    // The request itself.
    let res = s
        .client
        .post(&url)
        .header("origin", "http://app.example:5173")
        .bearer_auth(&s.token)
        .json(&serde_json::json!({ "query": "{ postsCount }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.example:5173"
    );
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json")["data"]["postsCount"],
        0
    );
    // Another origin gets no grant (the browser then refuses the response).
    for origin in [
        "http://evil.example",
        "http://app.example:5174",
        "https://app.example:5173",
    ] {
        let res = s
            .client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{origin} was allowed"
        );
    }
    s.stop().await;

    // Without --cors-origins: no CORS headers at all.
    let s = Server::start(&db, EXAMPLE_APP).await;
    let res = s
        .client
        .post(format!("{}/graphql", s.base))
        .header("origin", "http://app.example:5173")
        .json(&serde_json::json!({ "query": "{ postsCount }" }))
        .send()
        .await
        .expect("post");
    assert!(res.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
    db.drop_db().await;
}

#[test]
fn cors_origins_that_are_not_origins_are_refused_by_name() {
    let bad = |o: &str| {
        livegate::server::cors_layer(&[o.to_string()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{o} was accepted"))
    };
    for o in [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x.example",
        "https://u:p@x.example",
        "https://x.example?q=1",
    ] {
        assert!(bad(o).contains(o), "{}", bad(o));
    }
    assert!(livegate::server::cors_layer(&["*".into(), "https://a.example".into()]).is_err());
    assert!(
        livegate::server::cors_layer(&[
            "https://a.example/".into(),
            "http://localhost:5173".into()
        ])
        .expect("ok")
        .is_some()
    );
    assert!(
        livegate::server::cors_layer(&["*".into()])
            .expect("ok")
            .is_some()
    );
    assert!(livegate::server::cors_layer(&[]).expect("ok").is_none());
}
