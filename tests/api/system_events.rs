//! `systemEvents` (API.md §9): what happens around the data, live, for the
//! admins of the account only, never with a token or a password.

use std::time::Duration;

use livegate::access::Role;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, signed_up};
use crate::wsclient::{Frame, Ws};

const EVENTS: &str =
    "subscription($k: [String!]) { systemEvents(kinds: $k) { kind at userId detail } }";

/// Subscribes `token`'s socket to system events of `kinds`, and returns once
/// the subscription is live (it heard a connection opened for the purpose).
pub(crate) async fn watching(s: &Server, token: &str, kinds: Option<Vec<&str>>) -> Ws {
    let mut admin = Ws::acked(&s.base, Some(token)).await;
    let mut with_connect = kinds.clone().unwrap_or_default();
    if kinds.is_some() {
        with_connect.push("realtime.connect");
    }
    admin
        .subscribe("sys", EVENTS, json!({ "k": kinds.map(|_| with_connect) }))
        .await;
    for _ in 0..50 {
        let probe = Ws::acked(&s.base, Some(token)).await;
        if let Some(Frame::Json(v)) = admin.next_within(Duration::from_millis(200)).await {
            assert_eq!(v["type"], "next", "{v}");
            drop(probe);
            // The probe's disconnect may follow: take what comes for a moment.
            while admin
                .next_within(Duration::from_millis(300))
                .await
                .is_some()
            {}
            return admin;
        }
    }
    panic!("the system-event subscription never heard a connection");
}

/// The next system event on `ws` (operation "sys").
pub(crate) async fn next_event(ws: &mut Ws) -> Value {
    ws.next_payload("sys").await["data"]["systemEvents"].clone()
}

#[tokio::test]
async fn admins_hear_auth_events_without_secrets_and_only_their_account() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let kinds = vec![
        "auth.sign_up",
        "auth.sign_in",
        "auth.sign_out",
        "auth.refresh_reuse",
    ];
    let mut admin = watching(&s, &s.token, Some(kinds.clone())).await;
    let stranger = s.token_for("boss@other.local", Role::Admin, "other").await;
    let mut other = watching(&s, &stranger, Some(kinds)).await;

    let up = signed_up(&s, "watched@test.local").await;
    let user_id = up["user"]["id"].as_str().expect("user id").to_string();
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "auth.sign_up");
    assert_eq!(e["userId"], user_id.as_str());
    assert_eq!(e["detail"]["email"], "watched@test.local");

    let signed_in = s
        .gql_as(
            None,
            "mutation { signIn(email: \"watched@test.local\", password: \"correct horse\") { refreshToken } }",
            json!({}),
        )
        .await;
    let refresh = signed_in["data"]["signIn"]["refreshToken"].clone();
    assert!(refresh.is_string(), "{signed_in}");
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "auth.sign_in");

    // A refresh token used twice: the session is revoked, and admins hear it.
    let rotate = "mutation($t: String!) { refreshSession(refreshToken: $t) { refreshToken } }";
    let first = s.gql_as(None, rotate, json!({ "t": refresh })).await;
    assert!(
        first["data"]["refreshSession"]["refreshToken"].is_string(),
        "{first}"
    );
    let again = s.gql_as(None, rotate, json!({ "t": refresh })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "auth.refresh_reuse");
    assert_eq!(e["userId"], user_id.as_str());

    let out = s
        .gql_as(
            None,
            "mutation($t: String!) { signOut(refreshToken: $t) }",
            json!({ "t": up["refreshToken"] }),
        )
        .await;
    assert_eq!(out["data"]["signOut"], true);
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "auth.sign_out");
    assert!(e["detail"]["session"].is_string());

    // No token or password in anything an admin heard.
    let heard = e.to_string();
    for secret in [&up["refreshToken"], &up["accessToken"], &refresh] {
        assert!(!heard.contains(secret.as_str().unwrap_or("?")));
    }
    assert!(!heard.contains("correct horse"));
    // The other account's admin heard nothing of it.
    assert_eq!(other.next_within(Duration::from_millis(500)).await, None);
    s.stop().await;
}

#[tokio::test]
async fn connections_and_rooms_are_told_and_users_are_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut admin = watching(&s, &s.token, None).await;
    let user = s.user_for("roomie@test.local", Role::User, "default").await;

    let mut ws = Ws::acked(&s.base, Some(&user.token)).await;
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "realtime.connect");
    assert_eq!(e["userId"], user.id.as_str());
    assert_eq!(e["detail"]["protocol"], "graphql-transport-ws");

    // A user may not follow them.
    ws.subscribe("mine", EVENTS, json!({})).await;
    ws.fails_with("mine", "FORBIDDEN").await;
    // Nor ask for a kind that does not exist (an admin, then).
    let mut admin2 = Ws::acked(&s.base, Some(&s.token)).await;
    let _ = next_event(&mut admin).await; // its connect
    admin2
        .subscribe("bad", EVENTS, json!({ "k": ["auth.sign_on"] }))
        .await;
    admin2.fails_with("bad", "BAD_USER_INPUT").await;

    ws.subscribe(
        "r",
        "subscription { room(name: \"lobby\") { kind } }",
        json!({}),
    )
    .await;
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "room.join");
    assert_eq!(e["detail"]["room"], "lobby");
    ws.send(json!({ "type": "complete", "id": "r" })).await;
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "room.leave");
    assert_eq!(e["userId"], user.id.as_str());

    drop(ws);
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "realtime.disconnect");
    assert_eq!(e["userId"], user.id.as_str());
    s.stop().await;
}

/// With several instances on one PostgreSQL, an admin on one instance hears
/// what happens on another (SQLite: the one instance).
#[tokio::test]
async fn an_admin_hears_every_instance() {
    let db = Db::fresh().await;
    let a = Server::start(&db, EXAMPLE_APP).await;
    let b = if db.url.starts_with("postgres") {
        Some(Server::start(&db, EXAMPLE_APP).await)
    } else {
        None
    };
    let mut admin = watching(&a, &a.token, Some(vec!["auth.sign_up"])).await;
    let elsewhere = b.as_ref().unwrap_or(&a);
    let up = signed_up(elsewhere, "far@test.local").await;
    let e = next_event(&mut admin).await;
    assert_eq!(e["kind"], "auth.sign_up");
    assert_eq!(e["userId"], up["user"]["id"]);
    // Once: the instance that emitted it does not hear it back from PostgreSQL.
    assert_eq!(admin.next_within(Duration::from_millis(700)).await, None);
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
}
