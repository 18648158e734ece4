//! Password hashing is the expensive part of signing up and in: sign-ups are
//! limited per client address, an email that is taken is refused before any
//! hash, and however many ask at once, only a bounded number of hashes run
//! (the rest wait a little or get RATE_LIMITED), as `/metrics` shows.

use livegate::auth::AuthConfig;
use livegate::graphql::Limits;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server};

const SIGN_UP: &str = "mutation($e: String!, $p: String!, $a: String) { signUp(email: $e, password: $p, newAccount: $a) { accessToken } }";

async fn sign_up(s: &Server, email: &str, new_account: Option<&str>) -> Value {
    s.gql_as(
        None,
        SIGN_UP,
        json!({ "e": email, "p": "correct horse", "a": new_account }),
    )
    .await
}

/// `signUp` from `n` distinct emails at once; the answers in order.
async fn sign_ups_at_once(s: &Server, prefix: &str, n: usize) -> Vec<Value> {
    let all = (0..n).map(|i| {
        let email = format!("{prefix}{i}@example.com");
        async move { sign_up(s, &email, None).await }
    });
    futures_util::future::join_all(all).await
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn sign_up_is_rate_limited_per_address() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let started = std::time::Instant::now();
    let answers = sign_ups_at_once(&s, "flood", 40).await;
    let ok = answers.iter().filter(|a| code(a) == "none").count();
    let per_address: Vec<&Value> = answers
        .iter()
        .filter(|a| code(a) == "RATE_LIMITED" && message(a).contains("from this address"))
        .collect();
    // 30 a minute, refilled one every 2 s: a slow run may have earned a few more.
    let earned = started.elapsed().as_secs() as usize / 2 + 1;
    assert!(
        ok <= 30 + earned,
        "{ok} of 40 sign-ups from one address got through: {answers:#?}"
    );
    assert!(
        per_address.len() >= 10 - earned.min(10),
        "the sign-ups past 30 are refused per address ({} were): {answers:#?}",
        per_address.len()
    );
    assert!(
        message(per_address[0]).contains("try again in"),
        "{}",
        per_address[0]
    );
    for a in &answers {
        assert!(
            matches!(code(a), "none" | "RATE_LIMITED"),
            "every answer is a session or RATE_LIMITED: {a}"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_taken_email_or_account_is_refused_without_hashing() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let first = sign_up(&s, "ada@example.com", Some("acme")).await;
    assert_eq!(code(&first), "none", "{first}");
    let hashed = s.metric("livegate_password_hashes_total").await;
    assert_eq!(hashed, 1.0, "one sign-up, one hash");
    for again in ["ada@example.com", " ADA@Example.com"] {
        let taken = sign_up(&s, again, None).await;
        assert_eq!(code(&taken), "CONFLICT", "{taken}");
        assert_eq!(message(&taken), "an account with this email already exists");
    }
    let slug = sign_up(&s, "bob@example.com", Some("acme")).await;
    assert_eq!(code(&slug), "CONFLICT", "{slug}");
    assert!(message(&slug).contains("\"acme\" already exists"), "{slug}");
    assert_eq!(
        s.metric("livegate_password_hashes_total").await,
        hashed,
        "refused sign-ups cost no hash"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn only_a_bounded_number_of_hashes_run_at_once() {
    let db = Db::fresh().await;
    let auth = AuthConfig {
        hash_concurrency: 1,
        hash_queue: 1,
        sign_ups_per_minute: 1000,
        ..Server::test_auth(&db)
    };
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let s = Server::start_configured(&db, app, Limits::default(), auth)
        .await
        .expect("server starts");
    let answers = sign_ups_at_once(&s, "burst", 20).await;
    let ok = answers.iter().filter(|a| code(a) == "none").count();
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|a| code(a) == "RATE_LIMITED")
        .collect();
    assert_eq!(ok + busy.len(), 20, "{answers:#?}");
    assert!(ok >= 1, "some sign-ups get through: {answers:#?}");
    // One hash runs and one waits; 20 arriving together cannot all fit.
    assert!(!busy.is_empty(), "a burst past the bound is refused");
    assert!(
        message(busy[0]).contains("busy") && message(busy[0]).contains("try again"),
        "{}",
        busy[0]
    );
    assert_eq!(
        s.metric("livegate_password_hashes_refused_total").await,
        busy.len() as f64
    );
    assert_eq!(
        s.metric("livegate_password_hashes_total").await,
        ok as f64,
        "each sign-up that got through hashed once; the refused ones did not"
    );
    assert_eq!(s.metric("livegate_password_hashes_running").await, 0.0);
    assert_eq!(s.metric("livegate_password_hashes_waiting").await, 0.0);

    // Sign-in checks a password too, through the same bound.
    let email = answers
        .iter()
        .position(|a| code(a) == "none")
        .map(|i| format!("burst{i}@example.com"))
        .expect("one got through");
    let signed_in = s
        .gql_as(
            None,
            "mutation($e: String!) { signIn(email: $e, password: \"correct horse\") { accessToken } }",
            json!({ "e": email }),
        )
        .await;
    assert_eq!(code(&signed_in), "none", "{signed_in}");
    assert_eq!(
        s.metric("livegate_password_hashes_total").await,
        ok as f64 + 1.0
    );
    s.stop().await;
    db.drop_db().await;
}
