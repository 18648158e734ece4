//! Webhook triggers (API.md §9), black-box: a real HTTP receiver on loopback,
//! started by each test, that records what it is sent and answers as the test
//! says (fail N times, always fail, hang).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use livegate::access::Role;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post};

/// The signing secret tests give their triggers (32 bytes, Standard Webhooks form).
fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"livegate-test-webhook-secret-32b")
    )
}

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Plan {
    /// 500 for the first `n` requests, then 200.
    FailFirst(usize),
    /// Always this status.
    Always(u16),
    /// Never answers.
    Hang,
}

struct Hit {
    headers: HeaderMap,
    body: String,
    answered: Option<u16>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
}

impl Receiver {
    async fn start(plan: Plan) -> Receiver {
        let hits = Arc::new(Mutex::new(Vec::<Hit>::new()));
        let plan = Arc::new(Mutex::new(plan));
        let (h, p) = (hits.clone(), plan.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (hits, plan) = (h.clone(), p.clone());
                async move {
                    let answer = {
                        let plan = *plan.lock().expect("plan");
                        let mut hits = hits.lock().expect("hits");
                        let answer = match plan {
                            Plan::FailFirst(n) if hits.len() < n => Some(500),
                            Plan::FailFirst(_) => Some(200),
                            Plan::Always(s) => Some(s),
                            Plan::Hang => None,
                        };
                        hits.push(Hit {
                            headers,
                            body,
                            answered: answer,
                        });
                        answer
                    };
                    match answer {
                        Some(s) => StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
                        None => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            StatusCode::OK
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Receiver {
            url: format!("http://{addr}/hook"),
            hits,
            plan,
        }
    }

    fn set(&self, plan: Plan) {
        *self.plan.lock().expect("plan") = plan;
    }

    fn count(&self) -> usize {
        self.hits.lock().expect("hits").len()
    }

    fn bodies(&self) -> Vec<Value> {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .map(|h| serde_json::from_str(&h.body).expect("a JSON body"))
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .map(|h| header(&h.headers, "webhook-id"))
            .collect()
    }

    fn successes(&self) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|h| h.answered.is_some_and(|s| (200..300).contains(&s)))
            .count()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < until {
            if self.count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count() >= n
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The example app with `triggers` appended.
fn app_with(triggers: &str) -> String {
    format!("{EXAMPLE_APP}\n{triggers}\n")
}

fn trigger(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[triggers.{name}]\ncollections = [\"posts\"]\nurl = \"{url}\"\nsecret_env = \"HOOK_SECRET\"\n{extra}\n"
    )
}

async fn start(db: &Db, triggers: &str) -> Server {
    Server::start_with_trigger_env(db, &app_with(triggers), &[("HOOK_SECRET", &secret())])
        .await
        .expect("server starts")
}

const DELIVERIES: &str = "query($t: String, $s: DeliveryStatus) { triggerDeliveries(trigger: $t, status: $s) { id trigger collection action cursor status attempts lastStatusCode lastError nextAttemptAt createdAt updatedAt } }";

async fn deliveries(s: &Server, status: Option<&str>) -> Vec<Value> {
    let body = s.gql(DELIVERIES, json!({ "s": status })).await;
    body["data"]["triggerDeliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries: {body}"))
        .clone()
}

/// Waits until the admin API shows `n` deliveries with `status`.
async fn wait_status(s: &Server, status: &str, n: usize, within: Duration) -> Vec<Value> {
    let until = tokio::time::Instant::now() + within;
    loop {
        let list = deliveries(s, Some(status)).await;
        if list.len() >= n || tokio::time::Instant::now() > until {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_change_is_posted_signed_and_verifiable() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Always(200)).await;
    let s = start(
        &db,
        &trigger(
            "post_hook",
            &rx.url,
            "headers = { \"X-Source\" = \"blog\" }",
        ),
    )
    .await;
    let post = create_post(&s, json!({ "title": "hello" })).await;
    let id = post["id"].as_str().expect("id").to_string();
    assert!(
        rx.wait_for(1, Duration::from_secs(10)).await,
        "the create was posted"
    );
    s.data(
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"bye\" }) { id } }",
        json!({ "id": id }),
    )
    .await;
    assert!(
        rx.wait_for(2, Duration::from_secs(10)).await,
        "the update was posted"
    );

    {
        let wh = standardwebhooks::Webhook::new(&secret()).expect("secret");
        let hits = rx.hits.lock().expect("hits");
        for h in hits.iter() {
            wh.verify(h.body.as_bytes(), &h.headers)
                .expect("the signature verifies with the shared secret");
            assert_eq!(header(&h.headers, "content-type"), "application/json");
            assert_eq!(header(&h.headers, "x-source"), "blog");
            // Tampering is caught: the check above is not vacuous.
            let forged = h.body.replace("hello", "HELLO").replace("bye", "BYE");
            assert!(wh.verify(forged.as_bytes(), &h.headers).is_err());
        }
        let other = standardwebhooks::Webhook::new(&format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(b"some-other-secret-of-32-bytes!!!")
        ))
        .expect("secret");
        assert!(
            other
                .verify(hits[0].body.as_bytes(), &hits[0].headers)
                .is_err()
        );
    }

    let bodies = rx.bodies();
    let create = &bodies[0];
    assert_eq!(create["trigger"], "post_hook");
    assert_eq!(create["collection"], "posts");
    assert_eq!(create["action"], "create");
    assert_eq!(create["record"]["id"], id.as_str());
    assert_eq!(create["record"]["title"], "hello");
    assert_eq!(create["previous"], Value::Null);
    assert!(create["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(create["account"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(create["at"].as_str().is_some());
    let update = &bodies[1];
    assert_eq!(update["action"], "update");
    assert_eq!(update["record"]["title"], "bye");
    assert_eq!(update["previous"]["title"], "hello");
    assert_ne!(rx.ids()[0], rx.ids()[1], "each event its own webhook-id");

    let done = wait_status(&s, "DELIVERED", 2, Duration::from_secs(5)).await;
    assert_eq!(done.len(), 2, "{done:?}");
    for d in &done {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["lastStatusCode"], 200);
        assert_eq!(d["lastError"], Value::Null);
        assert_eq!(d["nextAttemptAt"], Value::Null);
        assert_eq!(d["trigger"], "post_hook");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_the_same_webhook_id_until_one_success() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::FailFirst(2)).await;
    let s = start(&db, &trigger("post_hook", &rx.url, "")).await;
    create_post(&s, json!({ "title": "retry me" })).await;
    // 500, then 1 s, 500, then 2 s, 200.
    assert!(
        rx.wait_for(3, Duration::from_secs(15)).await,
        "three attempts"
    );
    let done = wait_status(&s, "DELIVERED", 1, Duration::from_secs(5)).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["attempts"], 3);
    assert_eq!(done[0]["lastStatusCode"], 200);
    // Nothing more comes once it succeeded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.count(), 3);
    assert_eq!(rx.successes(), 1, "exactly one success");
    let ids = rx.ids();
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "webhook-id stable across retries: {ids:?}"
    );
    let bodies = rx.bodies();
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "the same body each time"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "livegate_trigger_attempts_total{trigger=\"post_hook\",outcome=\"retried\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "livegate_trigger_attempts_total{trigger=\"post_hook\",outcome=\"delivered\"} 1"
        ),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn failed_after_max_attempts_then_redelivered() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Always(503)).await;
    let s = start(&db, &trigger("post_hook", &rx.url, "max_attempts = 2")).await;
    let mut admin =
        crate::system_events::watching(&s, &s.token, "default", Some(vec!["trigger.failed"])).await;
    create_post(&s, json!({ "title": "doomed" })).await;
    let failed = wait_status(&s, "FAILED", 1, Duration::from_secs(10)).await;
    assert_eq!(failed.len(), 1, "FAILED after two attempts");
    let d = &failed[0];
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["lastStatusCode"], 503);
    assert!(
        d["lastError"].as_str().is_some_and(|e| e.contains("503")),
        "{d}"
    );
    assert_eq!(rx.count(), 2);
    // Admins hear of it.
    let e = crate::system_events::next_event(&mut admin).await;
    assert_eq!(e["kind"], "trigger.failed", "{e}");
    assert_eq!(e["detail"]["trigger"], "post_hook");
    assert_eq!(e["detail"]["delivery"], d["id"]);
    assert_eq!(e["detail"]["lastStatusCode"], 503);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "livegate_trigger_attempts_total{trigger=\"post_hook\",outcome=\"failed\"} 1"
        ),
        "{metrics}"
    );

    // A user may not replay it; an admin of another account does not see it.
    let user = s
        .token_for("writer@test.local", Role::User, "default")
        .await;
    let body = s
        .gql_as(
            Some(&user),
            "mutation($id: ID!) { redeliver(id: $id) }",
            json!({ "id": d["id"] }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let body = s.gql_as(Some(&user), DELIVERIES, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let body = s.gql_as(None, DELIVERIES, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    let stranger = s.token_for("boss@other.local", Role::Admin, "other").await;
    let body = s.gql_as(Some(&stranger), DELIVERIES, json!({})).await;
    assert_eq!(body["data"]["triggerDeliveries"], json!([]), "{body}");
    let body = s
        .gql_as(
            Some(&stranger),
            "mutation($id: ID!) { redeliver(id: $id) }",
            json!({ "id": d["id"] }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body}"
    );
    // Longer than the trigger's poll: a replay would have been made by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.count(), 2, "nothing was replayed");

    rx.set(Plan::Always(204));
    let body = s
        .gql(
            "mutation($id: ID!) { redeliver(id: $id) }",
            json!({ "id": d["id"] }),
        )
        .await;
    assert_eq!(body["data"]["redeliver"], true, "{body}");
    let done = wait_status(&s, "DELIVERED", 1, Duration::from_secs(10)).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["attempts"], 1, "attempts start over");
    assert_eq!(done[0]["lastStatusCode"], 204);
    assert_eq!(rx.count(), 3);
    let ids = rx.ids();
    assert_eq!(ids[2], ids[0], "a replay keeps its webhook-id");
    s.stop().await;
}

#[tokio::test]
async fn a_hung_endpoint_delays_no_write_no_subscriber_and_no_other_trigger() {
    let db = Db::fresh().await;
    let hung = Receiver::start(Plan::Hang).await;
    let fast = Receiver::start(Plan::Always(200)).await;
    let triggers = trigger("slow_hook", &hung.url, "timeout_ms = 30000")
        + &trigger("fast_hook", &fast.url, "");
    let s = start(&db, &triggers).await;
    let mut sub = crate::wsclient::Ws::acked(&s.base, Some(&s.token)).await;
    sub.subscribe(
        "1",
        "subscription { postChanged { action record { title } } }",
        json!({}),
    )
    .await;
    // More changes than the hung trigger has attempts in flight.
    let n = 3 * livegate::triggers::CONCURRENCY;
    // The subscription is live once it hears a change (graphql-ws does not
    // acknowledge a subscribe: a write made before it is live is not heard).
    let mut warm = 0;
    loop {
        create_post(&s, json!({ "title": format!("first {warm}") })).await;
        warm += 1;
        if let Some(f) = sub.next_within(Duration::from_millis(500)).await {
            assert!(
                matches!(f, crate::wsclient::Frame::Json(ref v) if v["type"] == "next"),
                "{f:?}"
            );
            break;
        }
        assert!(warm < 40, "the subscription never went live");
    }
    let started = std::time::Instant::now();
    for i in 1..n {
        create_post(&s, json!({ "title": format!("p{i}") })).await;
    }
    let writes = started.elapsed();
    for _ in 1..n {
        sub.next_payload("1").await;
    }
    assert!(
        fast.wait_for(n, Duration::from_secs(10)).await,
        "the other trigger got every change ({} of {n})",
        fast.count()
    );
    assert!(
        writes < Duration::from_secs(10),
        "writes did not wait for the hung endpoint ({writes:?})"
    );
    // The hung trigger holds at most its own attempts in flight.
    assert!(
        hung.count() <= livegate::triggers::CONCURRENCY,
        "{}",
        hung.count()
    );
    assert!(hung.count() >= 1);
    s.stop().await;
}

#[tokio::test]
async fn a_restart_between_attempts_loses_nothing() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Always(500)).await;
    let s = start(&db, &trigger("post_hook", &rx.url, "")).await;
    create_post(&s, json!({ "title": "survivor" })).await;
    assert!(
        rx.wait_for(1, Duration::from_secs(10)).await,
        "a first attempt"
    );
    s.stop().await;
    rx.set(Plan::Always(200));
    let s = start(&db, &trigger("post_hook", &rx.url, "")).await;
    let done = wait_status(&s, "DELIVERED", 1, Duration::from_secs(10)).await;
    assert_eq!(done.len(), 1, "delivered after the restart");
    assert_eq!(rx.successes(), 1);
    assert_eq!(
        rx.bodies().last().expect("a body")["record"]["title"],
        "survivor"
    );
    s.stop().await;
}

#[tokio::test]
async fn app_file_errors_name_their_key() {
    let db = Db::fresh().await;
    // The app file's triggers, the variables set, what the error must say.
    type Case = (String, Vec<(&'static str, String)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            trigger("t", "http://127.0.0.1:9/hook", "colour = \"red\""),
            vec![("HOOK_SECRET", secret())],
            "unknown field `colour`",
        ),
        (
            trigger("t", "ftp://127.0.0.1/hook", ""),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.url",
        ),
        (
            trigger("t", "not a url", ""),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.url",
        ),
        (
            trigger("t", "http://127.0.0.1:9/hook", ""),
            vec![],
            "triggers.t.secret_env: the environment variable HOOK_SECRET is not set",
        ),
        (
            trigger("t", "http://127.0.0.1:9/hook", ""),
            vec![("HOOK_SECRET", "whsec_c2hvcnQ=".to_string())],
            "triggers.t.secret_env",
        ),
        (
            "[triggers.t]\ncollections = [\"nope\"]\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"HOOK_SECRET\"\n".into(),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.collections: no collection \"nope\"",
        ),
        (
            "[triggers.t]\ncollections = [\"posts\"]\nurl_env = \"HOOK_URL\"\nsecret_env = \"HOOK_SECRET\"\n".into(),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.url_env: the environment variable HOOK_URL is not set",
        ),
        (
            trigger("t", "http://127.0.0.1:9/hook", "actions = [\"upsert\"]"),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.actions: unknown action \"upsert\"",
        ),
        (
            trigger("t", "http://127.0.0.1:9/hook", "headers = { \"Webhook-Signature\" = \"x\" }"),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.headers",
        ),
        (
            trigger("t", "http://user:pw@127.0.0.1:9/hook", ""),
            vec![("HOOK_SECRET", secret())],
            "triggers.t.url",
        ),
    ];
    for (triggers, env, expected) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = match Server::start_with_trigger_env(&db, &app_with(&triggers), &env).await {
            Ok(s) => {
                s.stop().await;
                panic!("started with {triggers}");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
        for (_, value) in &env {
            assert!(
                !err.contains(value),
                "a variable's value is never echoed: {err}"
            );
        }
    }
}

/// Each event is delivered once: with two instances on one PostgreSQL (each
/// attempt made by one of them), or by the one instance SQLite serves.
#[tokio::test]
async fn each_event_is_delivered_once_by_every_instance_together() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Always(200)).await;
    let triggers = trigger("post_hook", &rx.url, "");
    let a = start(&db, &triggers).await;
    let b = if db.url.starts_with("postgres") {
        Some(start(&db, &triggers).await)
    } else {
        None
    };
    let n = 40;
    for i in 0..n {
        let s = match &b {
            Some(b) if i % 2 == 1 => b,
            _ => &a,
        };
        create_post(s, json!({ "title": format!("p{i}") })).await;
    }
    assert!(
        rx.wait_for(n, Duration::from_secs(20)).await,
        "{} of {n}",
        rx.count()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids = rx.ids();
    assert_eq!(ids.len(), n, "no event posted twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    let titles: std::collections::HashSet<String> = rx
        .bodies()
        .iter()
        .map(|b| {
            b["record"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(titles.len(), n, "every write's event");
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
}

#[tokio::test]
async fn redeliver_waits_for_a_running_attempt_and_a_removed_trigger_fails_its_queue() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Hang).await;
    let s = start(&db, &trigger("post_hook", &rx.url, "timeout_ms = 3000")).await;
    create_post(&s, json!({ "title": "in flight" })).await;
    assert!(
        rx.wait_for(1, Duration::from_secs(10)).await,
        "an attempt started"
    );
    let pending = deliveries(&s, Some("PENDING")).await;
    assert_eq!(pending.len(), 1);
    let id = pending[0]["id"].clone();
    let body = s
        .gql(
            "mutation($id: ID!) { redeliver(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body}"
    );
    assert_eq!(rx.count(), 1, "no second call while the first runs");
    s.stop().await;

    // The trigger leaves the app file: its queue fails, saying why, and
    // cannot be replayed (nothing would send it).
    let s = Server::start(&db, EXAMPLE_APP).await;
    let failed = deliveries(&s, Some("FAILED")).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0]["lastError"],
        "the trigger is no longer in the app file"
    );
    let body = s
        .gql(
            "mutation($id: ID!) { redeliver(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    s.stop().await;
}

/// `kill -9` while an attempt hangs: the next instance (on SQLite the same
/// file restarted, where nobody can hold the lease; on PostgreSQL after the
/// lease runs out) makes the attempt again, and it succeeds once.
#[tokio::test]
async fn kill_9_during_an_attempt_loses_nothing() {
    let db = Db::fresh().await;
    let rx = Receiver::start(Plan::Hang).await;
    let app = app_with(&trigger("post_hook", &rx.url, "timeout_ms = 2000"));
    let secret = secret();
    let env = [("HOOK_SECRET", secret.as_str())];
    let (mut victim, base) = crate::instances::spawn_with_env(&db, &app, &env);
    let token = crate::instances::cli_token(&db);
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "mutation { createPost(input: { title: \"killed mid-call\" }) { id } }" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert!(created["data"]["createPost"]["id"].is_string(), "{created}");
    assert!(
        rx.wait_for(1, Duration::from_secs(10)).await,
        "an attempt started"
    );
    victim.kill().expect("kill -9");
    victim.wait().ok();
    rx.set(Plan::Always(200));
    let (mut next, _) = crate::instances::spawn_with_env(&db, &app, &env);
    let delivered = async {
        loop {
            if rx.successes() >= 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ok = tokio::time::timeout(Duration::from_secs(20), delivered)
        .await
        .is_ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    next.kill().ok();
    next.wait().ok();
    assert!(ok, "delivered after the kill ({} calls)", rx.count());
    assert_eq!(rx.successes(), 1, "once");
    let ids = rx.ids();
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(rx.bodies()[1]["record"]["title"], "killed mid-call");
}
