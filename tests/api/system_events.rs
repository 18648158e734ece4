//! `systemEvents` (API.md §9): what happens around the data, live, for the
//! admins of the account only, never with a token or a password.

use std::time::Duration;

use livegate::access::Role;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, signed_up};
use crate::wsclient::{Frame, Ws};

const EVENTS: &str =
    "subscription($k: [String!]) { systemEvents(kinds: $k) { kind at userId detail } }";

/// An admin's socket following system events, and the id of the probe user
/// whose connections showed it live (their events are skipped).
pub(crate) struct Watch {
    pub ws: Ws,
    probe: String,
    /// The kinds asked for (the probe's `realtime.connect` aside).
    wanted: Option<Vec<String>>,
}

impl Watch {
    /// Whether `e` is one the test asked for (not the probe's, not a
    /// `realtime.connect` added for the probe).
    fn wants(&self, e: &Value) -> bool {
        e["userId"] != self.probe.as_str()
            && self
                .wanted
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| e["kind"] == k.as_str()))
    }
}

/// `token`'s socket on `s` (an admin of account `slug`), subscribed to `kinds`
/// (and `realtime.connect`, for the probe); returns once live.
pub(crate) async fn watching(
    s: &Server,
    token: &str,
    slug: &str,
    kinds: Option<Vec<&str>>,
) -> Watch {
    watching_through(s, s, token, slug, kinds).await
}

/// [`watching`], live once it heard a probe user's connection opened on
/// `through` (another instance: its notifications are heard too).
pub(crate) async fn watching_through(
    s: &Server,
    through: &Server,
    token: &str,
    slug: &str,
    kinds: Option<Vec<&str>>,
) -> Watch {
    let probe = through
        .user_for(&format!("probe@{slug}.test.local"), Role::User, slug)
        .await;
    let mut ws = Ws::acked(&s.base, Some(token)).await;
    let wanted = kinds
        .as_ref()
        .map(|k| k.iter().map(|k| k.to_string()).collect());
    let mut with_connect = kinds.clone().unwrap_or_default();
    if kinds.is_some() {
        with_connect.push("realtime.connect");
    }
    ws.subscribe("sys", EVENTS, json!({ "k": kinds.map(|_| with_connect) }))
        .await;
    for _ in 0..100 {
        let opened = Ws::acked(&through.base, Some(&probe.token)).await;
        if let Some(Frame::Json(v)) = ws.next_within(Duration::from_millis(300)).await {
            assert_eq!(v["type"], "next", "{v}");
            drop(opened);
            return Watch {
                ws,
                probe: probe.id,
                wanted,
            };
        }
    }
    panic!("the system-event subscription never heard a connection");
}

/// The next system event on `w`, the probe's skipped.
pub(crate) async fn next_event(w: &mut Watch) -> Value {
    loop {
        let e = w.ws.next_payload("sys").await["data"]["systemEvents"].clone();
        if w.wants(&e) {
            return e;
        }
    }
}

/// Whether nothing but the probe's events comes within `wait`.
async fn quiet(w: &mut Watch, wait: Duration) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match w.ws.next_within(left).await {
            None => return true,
            Some(Frame::Json(v))
                if v["payload"]["data"]["systemEvents"]["userId"] == w.probe.as_str() => {}
            Some(_) => return false,
        }
    }
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
    let mut admin = watching(&s, &s.token, "default", Some(kinds.clone())).await;
    let stranger = s.token_for("boss@other.local", Role::Admin, "other").await;
    let mut other = watching(&s, &stranger, "other", Some(kinds)).await;
    let mut heard = Vec::new();

    let up = signed_up(&s, "watched@test.local").await;
    let user_id = up["user"]["id"].as_str().expect("user id").to_string();
    let e = next_event(&mut admin).await;
    heard.push(e.clone());
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
    heard.push(e.clone());
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
    heard.push(e.clone());
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
    heard.push(e.clone());
    assert_eq!(e["kind"], "auth.sign_out");
    assert!(e["detail"]["session"].is_string());
    // Signing the same session out again is not another event.
    let out = s
        .gql_as(
            None,
            "mutation($t: String!) { signOut(refreshToken: $t) }",
            json!({ "t": up["refreshToken"] }),
        )
        .await;
    assert_eq!(out["data"]["signOut"], true);
    assert!(
        quiet(&mut admin, Duration::from_millis(500)).await,
        "no second sign-out event"
    );

    // No token or password in anything an admin heard.
    let heard = Value::Array(heard).to_string();
    for secret in [&up["refreshToken"], &up["accessToken"], &refresh] {
        assert!(!heard.contains(secret.as_str().unwrap_or("?")));
    }
    assert!(!heard.contains("correct horse"));
    // The other account's admin heard nothing of it.
    assert!(quiet(&mut other, Duration::from_millis(500)).await);
    s.stop().await;
}

#[tokio::test]
async fn connections_and_rooms_are_told_and_users_are_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut admin = watching(&s, &s.token, "default", None).await;
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

/// With several instances on one PostgreSQL, an admin on each instance hears
/// what happens on any of them, once, and another account's admin nothing
/// (SQLite: the one instance).
#[tokio::test]
async fn an_admin_hears_every_instance() {
    let db = Db::fresh().await;
    let a = Server::start(&db, EXAMPLE_APP).await;
    let b = if db.url.starts_with("postgres") {
        Some(Server::start(&db, EXAMPLE_APP).await)
    } else {
        None
    };
    let elsewhere = b.as_ref().unwrap_or(&a);
    let kinds = vec!["auth.sign_up"];
    let mut on_a = watching_through(&a, elsewhere, &a.token, "default", Some(kinds.clone())).await;
    let mut on_b = watching(elsewhere, &elsewhere.token, "default", Some(kinds.clone())).await;
    let stranger = a.token_for("boss@other.local", Role::Admin, "other").await;
    let mut other = watching_through(&a, elsewhere, &stranger, "other", Some(kinds)).await;
    let up = signed_up(elsewhere, "far@test.local").await;
    for w in [&mut on_a, &mut on_b] {
        let e = next_event(w).await;
        assert_eq!(e["kind"], "auth.sign_up");
        assert_eq!(e["userId"], up["user"]["id"]);
    }
    // Once each: the instance that emitted it does not hear it back.
    assert!(quiet(&mut on_a, Duration::from_millis(700)).await);
    assert!(quiet(&mut on_b, Duration::from_millis(100)).await);
    assert!(quiet(&mut other, Duration::from_millis(100)).await);
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
}
