//! Rooms and presence, from the outside: join/leave/sync, abrupt disconnects and
//! missed heartbeats, ordering, the app file's rules and limits, account
//! separation, SSE members, and a room of 1,000 members.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, eventually};
use crate::sseclient::Sse;
use crate::wsclient::Ws;

const ROOM: &str = "subscription($n: String!) { room(name: $n) { room kind payload from { peerId userId email } at } }";
const SEND: &str =
    "mutation($r: String!, $k: String!, $p: JSON) { sendToRoom(room: $r, kind: $k, payload: $p) }";

/// The example app with a 1 s heartbeat, 5 messages per second per member, a
/// 100-byte payload cap, and a closed room pattern.
fn rooms_app() -> String {
    EXAMPLE_APP
        .replace("heartbeat_seconds = 30", "heartbeat_seconds = 1")
        .replace("messages_per_second = 20", "messages_per_second = 5")
        .replace("max_payload_bytes = 16384", "max_payload_bytes = 100")
        .replace(
            "[rooms.match.\"public:*\"]",
            "[rooms.match.\"closed:*\"]\njoin = \"none\"\n\n[rooms.match.\"public:*\"]",
        )
}

/// Joins room `name` as operation `id`; returns the sync payload and own peer id.
async fn join(ws: &mut Ws, id: &str, name: &str) -> (Value, String) {
    ws.subscribe(id, ROOM, json!({ "n": name })).await;
    let ev = ws.next_payload(id).await;
    let room = &ev["data"]["room"];
    assert_eq!(room["kind"], "presence", "{ev}");
    assert_eq!(room["payload"]["event"], "sync", "{ev}");
    (
        room["payload"].clone(),
        room["from"]["peerId"]
            .as_str()
            .expect("peer id")
            .to_string(),
    )
}

async fn room_event(ws: &mut Ws, id: &str) -> Value {
    let ev = ws.next_payload(id).await;
    assert!(ev["errors"].is_null(), "{ev}");
    ev["data"]["room"].clone()
}

fn peers(members: &Value) -> Vec<String> {
    members
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["peerId"].as_str().expect("peerId").to_string())
        .collect()
}

#[tokio::test]
async fn join_sync_presence_and_leave() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &rooms_app()).await;
    let alice = s
        .user_for("alice@test.local", livegate::access::Role::User, "default")
        .await;
    let bob = s
        .user_for("bob@test.local", livegate::access::Role::User, "default")
        .await;
    let mut a = Ws::acked(&s.base, Some(&alice.token)).await;
    let (sync_a, peer_a) = join(&mut a, "1", "team").await;
    assert_eq!(
        peers(&sync_a["members"]),
        vec![peer_a.clone()],
        "the roster includes the new member"
    );
    assert_eq!(sync_a["members"][0]["email"], "alice@test.local");
    assert_eq!(sync_a["members"][0]["userId"], json!(alice.id));

    // Bob from two tabs: two members, one user.
    let mut b1 = Ws::acked(&s.base, Some(&bob.token)).await;
    let (sync_b, peer_b1) = join(&mut b1, "1", "team").await;
    assert_eq!(peers(&sync_b["members"]), [peer_a.clone(), peer_b1.clone()]);
    let joined = room_event(&mut a, "1").await;
    assert_eq!(joined["kind"], "presence");
    assert_eq!(
        joined["payload"],
        json!({ "event": "join", "member": { "peerId": peer_b1, "userId": bob.id, "email": "bob@test.local" } })
    );
    let mut b2 = Ws::acked(&s.base, Some(&bob.token)).await;
    let (_, peer_b2) = join(&mut b2, "1", "team").await;
    assert_ne!(peer_b1, peer_b2);
    assert_eq!(
        room_event(&mut a, "1").await["payload"]["member"]["peerId"],
        json!(peer_b2)
    );
    assert_eq!(
        room_event(&mut b1, "1").await["payload"]["member"]["peerId"],
        json!(peer_b2)
    );

    let roster = s
        .gql_as(
            Some(&alice.token),
            "query($r: String!) { roomMembers(room: $r) { peerId userId email } }",
            json!({ "r": "team" }),
        )
        .await;
    assert_eq!(
        peers(&roster["data"]["roomMembers"]),
        [peer_a.clone(), peer_b1.clone(), peer_b2.clone()]
    );

    // Completing the subscription leaves; the others hear it.
    b1.send(json!({ "type": "complete", "id": "1" })).await;
    for ws in [&mut a, &mut b2] {
        let left = room_event(ws, "1").await;
        assert_eq!(left["payload"]["event"], "leave");
        assert_eq!(left["payload"]["member"]["peerId"], json!(peer_b1));
        assert_eq!(left["from"]["peerId"], json!(peer_b1));
    }
    // A socket that closes leaves too.
    drop(b2);
    assert_eq!(
        room_event(&mut a, "1").await["payload"]["member"]["peerId"],
        json!(peer_b2)
    );
    let roster = s
        .gql_as(
            Some(&alice.token),
            "query { roomMembers(room: \"team\") { peerId } }",
            json!({}),
        )
        .await;
    assert_eq!(peers(&roster["data"]["roomMembers"]), [peer_a]);
    // The last one out frees the room.
    a.send(json!({ "type": "complete", "id": "1" })).await;
    assert!(
        eventually(Duration::from_secs(5), || s.state.rooms().is_empty()).await,
        "room state is freed when the last member leaves"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn abrupt_disconnects_and_missed_heartbeats_leave_no_stale_members() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &rooms_app()).await;
    let mut watcher = Ws::acked(&s.base, Some(&s.token)).await;
    join(&mut watcher, "w", "hall").await;
    // Killed: the TCP connection goes without a close frame.
    let mut killed = Ws::acked(&s.base, Some(&s.token)).await;
    let (_, killed_peer) = join(&mut killed, "k", "hall").await;
    assert_eq!(
        room_event(&mut watcher, "w").await["payload"]["event"],
        "join"
    );
    killed.abort().await;
    let left = room_event(&mut watcher, "w").await;
    assert_eq!(
        left["payload"],
        json!({ "event": "leave", "member": left["payload"]["member"].clone() })
    );
    assert_eq!(left["payload"]["member"]["peerId"], json!(killed_peer));
    // Frozen: the connection stays open but stops reading, so it answers no ping;
    // the server drops it after a missed heartbeat (1 s here).
    let mut frozen = Ws::acked(&s.base, Some(&s.token)).await;
    let (_, frozen_peer) = join(&mut frozen, "f", "hall").await;
    assert_eq!(
        room_event(&mut watcher, "w").await["payload"]["event"],
        "join"
    );
    let started = std::time::Instant::now();
    let left = tokio::time::timeout(Duration::from_secs(5), room_event(&mut watcher, "w"))
        .await
        .expect("the frozen member leaves within a few heartbeats");
    assert_eq!(left["payload"]["event"], "leave");
    assert_eq!(left["payload"]["member"]["peerId"], json!(frozen_peer));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before a heartbeat was missed"
    );
    let roster = s
        .gql(
            "query { roomMembers(room: \"hall\") { peerId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        roster["data"]["roomMembers"].as_array().map(Vec::len),
        Some(1),
        "{roster}"
    );
    drop(frozen);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn messages_reach_every_member_in_order_from_their_sender() {
    let db = Db::fresh().await;
    let s = Server::start(
        &db,
        &EXAMPLE_APP.replace("messages_per_second = 20", "messages_per_second = 1000"),
    )
    .await;
    let mut a = Ws::acked(&s.base, Some(&s.token)).await;
    let (_, peer_a) = join(&mut a, "r", "chat").await;
    let other = s
        .token_for("other@test.local", livegate::access::Role::User, "default")
        .await;
    let mut b = Ws::acked(&s.base, Some(&other)).await;
    join(&mut b, "r", "chat").await;
    assert_eq!(room_event(&mut a, "r").await["payload"]["event"], "join");
    // Over the socket that holds the membership: `from` is that member. All
    // sent at once, within the 32 operations a connection may have running
    // (with rooms in the database each send waits for it).
    let n = 32;
    for i in 0..n {
        a.send(json!({ "type": "subscribe", "id": format!("s{i}"), "payload": { "query": SEND, "variables": { "r": "chat", "k": "chat", "p": { "n": i } } } }))
            .await;
    }
    for ws in [&mut a, &mut b] {
        let mut got = Vec::new();
        while got.len() < n {
            match ws.next().await {
                crate::wsclient::Frame::Json(v) if v["id"] == "r" => {
                    let ev = &v["payload"]["data"]["room"];
                    assert_eq!(ev["kind"], "chat");
                    assert_eq!(ev["from"]["peerId"], json!(peer_a));
                    assert_eq!(ev["from"]["email"], "admin@test.local");
                    assert!(ev["at"].is_string());
                    got.push(ev["payload"]["n"].as_i64().expect("n"));
                }
                crate::wsclient::Frame::Json(v) => {
                    // The mutations' own results and completions.
                    assert!(
                        v["type"] == "complete"
                            || v["payload"]["data"]["sendToRoom"] == json!(true),
                        "{v}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, (0..n as i64).collect::<Vec<_>>(), "in the order sent");
    }
    // Over HTTP: from a one-off peer of the sending user.
    let sent = s
        .gql(SEND, json!({ "r": "chat", "k": "note", "p": "hi" }))
        .await;
    assert_eq!(sent["data"]["sendToRoom"], true, "{sent}");
    let ev = room_event(&mut b, "r").await;
    assert_eq!(ev["payload"], "hi");
    assert_ne!(ev["from"]["peerId"], json!(peer_a));
    assert_eq!(ev["from"]["email"], "admin@test.local");
    // Nobody there: accepted, but nobody received it.
    let empty = s.gql(SEND, json!({ "r": "nobody-here", "k": "x" })).await;
    assert_eq!(empty["data"]["sendToRoom"], false, "{empty}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn rules_limits_and_accounts() {
    let db = Db::fresh().await;
    let s = Server::start(&db, &rooms_app()).await;
    let user = s
        .token_for("user@test.local", livegate::access::Role::User, "default")
        .await;
    let code = |v: &Value| {
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };

    // Anonymous: may join public:* and live:*, not the default (join = user).
    let mut anon = Ws::acked(&s.base, None).await;
    join(&mut anon, "p", "public:lobby").await;
    join(&mut anon, "l", "live:keynote").await;
    anon.subscribe("t", ROOM, json!({ "n": "team" })).await;
    let denied = anon.next_payload("t").await;
    assert_eq!(code(&denied), "UNAUTHENTICATED", "{denied}");
    assert_eq!(
        anon.next().await,
        crate::wsclient::Frame::Json(json!({ "type": "complete", "id": "t" }))
    );
    assert_eq!(
        code(
            &s.gql_as(None, SEND, json!({ "r": "public:lobby", "k": "hi" }))
                .await
        ),
        "UNAUTHENTICATED",
        "send = user"
    );
    assert_eq!(
        code(
            &s.gql_as(
                None,
                "{ roomMembers(room: \"team\") { peerId } }",
                json!({})
            )
            .await
        ),
        "UNAUTHENTICATED"
    );
    // Nobody joins closed:*.
    let mut admin = Ws::acked(&s.base, Some(&s.token)).await;
    admin
        .subscribe("c", ROOM, json!({ "n": "closed:vault" }))
        .await;
    assert_eq!(code(&admin.next_payload("c").await), "FORBIDDEN");
    // live:*: many watch, only admins publish.
    assert_eq!(
        code(
            &s.gql_as(
                Some(&user),
                SEND,
                json!({ "r": "live:keynote", "k": "slide", "p": 1 })
            )
            .await
        ),
        "FORBIDDEN"
    );
    let ok = s
        .gql(SEND, json!({ "r": "live:keynote", "k": "slide", "p": 1 }))
        .await;
    assert_eq!(ok["data"]["sendToRoom"], true, "{ok}");
    assert_eq!(room_event(&mut anon, "l").await["payload"], 1);

    // Payload cap (100 bytes here) and reserved kind: BAD_USER_INPUT.
    let big = s
        .gql_as(
            Some(&user),
            SEND,
            json!({ "r": "team", "k": "x", "p": "y".repeat(200) }),
        )
        .await;
    assert_eq!(code(&big), "BAD_USER_INPUT", "{big}");
    assert_eq!(big["errors"][0]["extensions"]["field"], "payload");
    assert_eq!(
        code(
            &s.gql_as(Some(&user), SEND, json!({ "r": "team", "k": "presence" }))
                .await
        ),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        code(
            &s.gql_as(Some(&user), SEND, json!({ "r": "", "k": "x" }))
                .await
        ),
        "BAD_USER_INPUT"
    );
    // Rate: 5 per second per member.
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(code(
            &s.gql_as(Some(&user), SEND, json!({ "r": "team", "k": "x" }))
                .await,
        ));
    }
    assert!(
        codes.iter().filter(|c| *c == "none").count() >= 5,
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "RATE_LIMITED"), "{codes:?}");
    // Another user is not limited by it.
    let fresh = s
        .token_for("fresh@test.local", livegate::access::Role::User, "default")
        .await;
    assert_eq!(
        code(
            &s.gql_as(Some(&fresh), SEND, json!({ "r": "team", "k": "x" }))
                .await
        ),
        "none"
    );

    // The same room name in another account is another room.
    let stranger = s
        .token_for("boss@other.test", livegate::access::Role::Admin, "other")
        .await;
    let mut home = Ws::acked(&s.base, Some(&s.token)).await;
    let (_, home_peer) = join(&mut home, "r", "team").await;
    let mut away = Ws::acked(&s.base, Some(&stranger)).await;
    let (away_sync, _) = join(&mut away, "r", "team").await;
    assert_eq!(
        away_sync["members"].as_array().map(Vec::len),
        Some(1),
        "nobody of the other account: {away_sync}"
    );
    s.gql_as(
        Some(&stranger),
        SEND,
        json!({ "r": "team", "k": "x", "p": "theirs" }),
    )
    .await;
    assert_eq!(room_event(&mut away, "r").await["payload"], "theirs");
    home.silent_for(Duration::from_millis(300)).await;
    let roster = s
        .gql(
            "query { roomMembers(room: \"team\") { peerId } }",
            json!({}),
        )
        .await;
    assert_eq!(peers(&roster["data"]["roomMembers"]), [home_peer]);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_sse_member_and_websocket_members_share_a_room() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
    let (_, ws_peer) = join(&mut ws, "r", "mixed").await;
    let user = s
        .token_for("sse@test.local", livegate::access::Role::User, "default")
        .await;
    let mut sse = Sse::open(
        s.client
            .get(format!("{}/graphql/stream", s.base))
            .header("accept", "text/event-stream")
            .query(&[
                ("query", "subscription { room(name: \"mixed\") { room kind payload from { peerId userId email } at } }".to_string()),
                ("access_token", user.clone()),
            ]),
    )
    .await;
    let sync = sse.next().await.json();
    let members = &sync["data"]["room"]["payload"]["members"];
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{sync}");
    assert_eq!(members[0]["peerId"], json!(ws_peer));
    assert_eq!(
        room_event(&mut ws, "r").await["payload"]["member"]["email"],
        "sse@test.local"
    );
    // The SSE member speaks over HTTP; everyone hears it.
    s.gql_as(
        Some(&user),
        SEND,
        json!({ "r": "mixed", "k": "chat", "p": "from sse" }),
    )
    .await;
    assert_eq!(room_event(&mut ws, "r").await["payload"], "from sse");
    assert_eq!(
        sse.next().await.json()["data"]["room"]["payload"],
        "from sse"
    );
    // The WebSocket member's message reaches the SSE member.
    ws.send(json!({ "type": "subscribe", "id": "m", "payload": { "query": SEND, "variables": { "r": "mixed", "k": "chat", "p": "from ws" } } })).await;
    let ev = sse.next().await.json();
    assert_eq!(ev["data"]["room"]["payload"], "from ws");
    assert_eq!(ev["data"]["room"]["from"]["peerId"], json!(ws_peer));
    drop(sse);
    // The socket also gets its mutation's result and completion, and its own
    // copy of the message; then the SSE member's leave.
    loop {
        match ws.next().await {
            crate::wsclient::Frame::Json(v)
                if v["id"] == "r"
                    && v["payload"]["data"]["room"]["payload"]["event"] == "leave" =>
            {
                break;
            }
            crate::wsclient::Frame::Json(_) => {}
            other => panic!("{other:?}"),
        }
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_room_of_a_thousand_members() {
    let _ = rlimit::increase_nofile_limit(8192);
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let n = 1000;
    // Members join one after another (each has its sync, so it is in, before the
    // next connects: joins over separate connections have no order otherwise),
    // then read the joins of those after them.
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        let mut ws = Ws::acked(&s.base, Some(&s.token)).await;
        ws.subscribe("r", ROOM, json!({ "n": "stadium" })).await;
        let sync = ws.next_payload("r").await;
        let roster = sync["data"]["room"]["payload"]["members"]
            .as_array()
            .map(Vec::len);
        assert_eq!(roster, Some(i + 1), "member {i}'s roster");
        readers.push(tokio::spawn(async move {
            for _ in i + 1..n {
                let ev = ws.next_payload("r").await;
                assert_eq!(ev["data"]["room"]["payload"]["event"], "join");
            }
            ws
        }));
    }
    let mut members = Vec::with_capacity(n);
    for r in readers {
        members.push(r.await.expect("reader"));
    }
    let roster = s
        .gql(
            "query { roomMembers(room: \"stadium\") { peerId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        roster["data"]["roomMembers"].as_array().map(Vec::len),
        Some(n)
    );
    let sent = s
        .gql(
            SEND,
            json!({ "r": "stadium", "k": "goal", "p": { "minute": 90 } }),
        )
        .await;
    assert_eq!(sent["data"]["sendToRoom"], true);
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let ev = ws.next_payload("r").await;
                assert_eq!(ev["data"]["room"]["kind"], "goal");
                assert_eq!(ev["data"]["room"]["payload"], json!({ "minute": 90 }));
            })
        })
        .collect();
    for r in readers {
        r.await.expect("every member got the broadcast");
    }
    assert!(
        eventually(Duration::from_secs(5), || s.state.rooms().is_empty()).await,
        "all gone, the room is freed"
    );
    s.stop().await;
    db.drop_db().await;
}
