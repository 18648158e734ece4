//! Limits that must hold (issue 16, defect 5): the subscription limit counts
//! only subscriptions, legacy-protocol peers that stop answering pings are
//! dropped, concurrent connections are capped in total and per address, one
//! `Accept` negotiator decides between JSON and an event stream, and a socket
//! closed for a second `connection_init` sees its 4429.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Db, EXAMPLE_APP, Server};

#[tokio::test]
async fn an_event_stream_refused_by_q_0_gets_json() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let query = json!({ "query": "{ __typename }" });
    for accept in [
        "text/event-stream;q=0, application/json",
        "text/event-stream;q=0.5, application/json",
        "text/event-stream;q=0.1, */*",
    ] {
        let resp = s
            .client
            .post(format!("{}/graphql", s.base))
            .header("accept", accept)
            .json(&query)
            .send()
            .await
            .expect("request");
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/json"), "{accept}: got {ct}");
        let body: serde_json::Value = resp.json().await.expect("JSON body");
        assert_eq!(
            body,
            json!({ "data": { "__typename": "Query" } }),
            "{accept}"
        );
        let resp = s
            .client
            .get(format!("{}/graphql", s.base))
            .header("accept", accept)
            .query(&[("query", "{ __typename }")])
            .send()
            .await
            .expect("request");
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/json"), "GET {accept}: got {ct}");
    }
    // Named and preferred, it still streams.
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        s.client
            .post(format!("{}/graphql", s.base))
            .header("accept", "text/event-stream, application/json;q=0.9")
            .json(&query)
            .send(),
    )
    .await
    .expect("headers in time")
    .expect("request");
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "got {ct}");
    drop(resp);
    s.stop().await;
    db.drop_db().await;
}
