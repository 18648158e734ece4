//! Realtime over graphql-ws: committed changes reach exactly the subscribers allowed
//! to see them, every protocol rule holds, and a resumed subscription loses nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};
use crate::wsclient::{Frame, Ws};

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
