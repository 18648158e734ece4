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
