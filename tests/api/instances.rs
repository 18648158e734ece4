//! Several instances on one database, and delivery from the committed log: a
//! write reaches subscribers whichever instance made it, whether or not its
//! request stayed to see it commit, and in cursor order even when writers
//! commit out of order. On SQLite a second instance is refused instead.
//!
//! Most instances here are real servers (each with its own state, log follower
//! and `LISTEN` connection) in the test process; the `kill -9` test runs the
//! binary as separate processes.

use std::collections::BTreeSet;
use std::time::Duration;

use livegate::access::Role;
use livegate::graphql::Limits;
use rand::Rng;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, create_post, eventually, sign_out, signed_up};
use crate::sseclient::Sse;
use crate::wsclient::{Frame, Ws};

/// Held by the tests that keep a PostgreSQL transaction open on purpose: an
/// open transaction holds back every instance's gap proof in the cluster, so
/// two such tests at once would stall each other past their waits.
static OPEN_TRANSACTIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHANGES: &str =
    "subscription($after: String) { changes(after: $after) { collection action cursor } }";

fn is_postgres(db: &Db) -> bool {
    db.url.starts_with("postgres")
}

/// A direct connection to the test database, as another writer would have.
async fn direct(db: &Db) -> DatabaseConnection {
    Database::connect(&db.url).await.expect("direct connection")
}

/// The cursors of every event of the default account in the log, in order.
async fn logged_cursors(db: &Db) -> Vec<i64> {
    let conn = direct(db).await;
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT e.seq FROM livegate_events e JOIN livegate_accounts a ON a.id = e.account_id \
             WHERE a.slug = 'default' ORDER BY e.seq",
        ))
        .await
        .expect("read the log");
    conn.close().await.ok();
    rows.iter()
        .map(|r| r.try_get::<i64>("", "seq").expect("seq"))
        .collect()
}

fn cursor(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a numeric cursor, got {v}"))
}

/// The `changes` cursors a graphql-ws subscriber (id "1") receives until
/// `quiet` passes without one, or the connection ends (its server was killed:
/// what it got is compared with the log all the same).
async fn drain_ws(ws: &mut Ws, quiet: Duration) -> Vec<i64> {
    let mut seen = Vec::new();
    while let Some(f) = ws.next_within(quiet).await {
        match f {
            Frame::Json(v) if v["type"] == "next" => {
                seen.push(cursor(&v["payload"]["data"]["changes"]["cursor"]));
            }
            Frame::Closed(..) => break,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    seen
}

/// Like [`drain_ws`] for a graphql-sse stream.
async fn drain_sse(sse: &mut Sse, quiet: Duration) -> Vec<i64> {
    let mut seen = Vec::new();
    while let Some(ev) = sse.next_within(quiet).await {
        if ev.event.as_deref() == Some("next") {
            seen.push(cursor(&ev.json()["data"]["changes"]["cursor"]));
        } else {
            panic!("unexpected event {ev:?}");
        }
    }
    seen
}

fn sse_changes(s: &Server, token: &str) -> reqwest::RequestBuilder {
    s.client
        .get(format!("{}/graphql/stream", s.base))
        .header("accept", "text/event-stream")
        .query(&[
            (
                "query",
                "subscription { changes { collection action cursor } }",
            ),
            ("access_token", token),
        ])
}

#[tokio::test]
async fn a_write_on_one_instance_reaches_subscribers_on_another() {
    let db = Db::fresh().await;
    let a = Server::start(&db, EXAMPLE_APP).await;
    if !is_postgres(&db) {
        // SQLite serves one process: a second server on the file is refused,
        // saying why and what to do instead.
        let app = db.app_file("app.toml", EXAMPLE_APP);
        let refused = Server::start_with(&db, app, Limits::default()).await;
        let message = format!("{:#}", refused.err().expect("a second instance is refused"));
        assert!(
            message.contains("another livegate process is serving")
                && message.contains("PostgreSQL"),
            "{message}"
        );
        a.stop().await;
        return;
    }
    let b = Server::start(&db, EXAMPLE_APP).await;
    let alice = a.user_for("alice@test.local", Role::User, "default").await;
    let bob = b.user_for("bob@test.local", Role::User, "default").await;
    let eve = b.user_for("eve@other.test", Role::User, "other").await;

    // Alice, on A, follows her private notes; an anonymous reader on A follows posts.
    let mut notes = Ws::acked(&a.base, Some(&alice.token)).await;
    notes
        .subscribe(
            "1",
            "subscription { noteChanged { action cursor record { title } } }",
            json!({}),
        )
        .await;
    let mut posts = Ws::acked(&a.base, None).await;
    posts
        .subscribe(
            "1",
            "subscription { postChanged { action cursor record { title } } }",
            json!({}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Written on B: Bob's note (not Alice's to see), Eve's note and post (another
    // account), then Alice's note and Bob's post.
    let note = "mutation($t: String!) { createNote(input: { title: $t }) { id } }";
    let post = "mutation($t: String!) { createPost(input: { title: $t }) { id } }";
    for (who, q, title) in [
        (&bob, note, "bob's secret"),
        (&eve, note, "eve's secret"),
        (&eve, post, "eve's post"),
        (&alice, note, "alice's note"),
        (&bob, post, "bob's post"),
    ] {
        let body = b.gql_as(Some(&who.token), q, json!({ "t": title })).await;
        assert!(body.get("errors").is_none(), "{body:#}");
    }
    let got = notes.next_payload("1").await;
    assert_eq!(
        got["data"]["noteChanged"]["record"]["title"], "alice's note",
        "{got}"
    );
    let got = posts.next_payload("1").await;
    assert_eq!(
        got["data"]["postChanged"]["record"]["title"], "bob's post",
        "{got}"
    );
    notes.silent_for(Duration::from_millis(300)).await;
    posts.silent_for(Duration::from_millis(100)).await;

    // A cursor from A resumes on B: exactly the events missed while away.
    let last = cursor(&got["data"]["postChanged"]["cursor"]);
    posts.abort().await;
    let mut missed = Vec::new();
    for i in 0..3 {
        let p = create_post(&a, json!({ "title": format!("missed {i}") })).await;
        missed.push(p["title"].clone());
    }
    let mut resumed = Ws::acked(&b.base, None).await;
    resumed
        .subscribe(
            "1",
            "subscription($after: String) { postChanged(after: $after) { cursor record { title } } }",
            json!({ "after": last.to_string() }),
        )
        .await;
    for title in &missed {
        let got = resumed.next_payload("1").await;
        assert_eq!(
            &got["data"]["postChanged"]["record"]["title"], title,
            "{got}"
        );
    }
    create_post(&a, json!({ "title": "live again" })).await;
    let got = resumed.next_payload("1").await;
    assert_eq!(got["data"]["postChanged"]["record"]["title"], "live again");
    resumed.silent_for(Duration::from_millis(300)).await;

    stop_both(db, a, b).await;
}

/// Inserts an event row for a new post of the default account on `txn`, as
/// another instance's writer would, and returns its seq.
async fn insert_raw_event(txn: &sea_orm::DatabaseTransaction, title: &str) -> i64 {
    let conn = txn;
    let account: String = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT id FROM livegate_accounts WHERE slug = 'default'",
        ))
        .await
        .expect("account")
        .expect("the default account")
        .try_get("", "id")
        .expect("id");
    let now = chrono::Utc::now().to_rfc3339();
    let id = uuid::Uuid::now_v7().to_string();
    let record = json!({
        "id": id, "owner_id": null, "account_id": account, "created_at": now, "updated_at": now,
        "data": { "title": title, "published": false, "views": 0 }
    });
    let row = conn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO livegate_events (account_id, collection, action, row_id, owner_id, at, record) \
             VALUES ($1, 'posts', 'create', $2, NULL, now(), $3) RETURNING seq",
            [account.into(), id.into(), record.into()],
        ))
        .await
        .expect("insert an event")
        .expect("its seq");
    row.try_get("", "seq").expect("seq")
}

/// Two instances of the example app on one fresh PostgreSQL database; `None` on
/// SQLite, which serves one instance (the single-instance suites cover it, and
/// `a_write_on_one_instance_reaches_subscribers_on_another` its refusal of a
/// second).
async fn two_instances() -> Option<(Db, Server, Server)> {
    let db = Db::fresh().await;
    if !is_postgres(&db) {
        return None;
    }
    let a = Server::start(&db, EXAMPLE_APP).await;
    let b = Server::start(&db, EXAMPLE_APP).await;
    Some((db, a, b))
}

/// Stops both instances and drops their database.
async fn stop_both(db: Db, a: Server, b: Server) {
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn events_that_commit_out_of_order_are_delivered_in_cursor_order() {
    let db = Db::fresh().await;
    if !is_postgres(&db) {
        // SQLite commits one write at a time, in seq order: nothing to reorder.
        return;
    }
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut live = Ws::acked(&s.base, Some(&s.token)).await;
    live.subscribe("1", CHANGES, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    create_post(&s, json!({ "title": "first" })).await;
    let first = drain_ws(&mut live, Duration::from_millis(500)).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let _one_at_a_time = OPEN_TRANSACTIONS.lock().await;

    for outcome in ["commit", "rollback"] {
        // Another writer takes a seq and has not committed yet...
        let other = direct(&db).await;
        let txn = other.begin().await.expect("begin");
        let held = insert_raw_event(&txn, "held").await;
        // ...while a later write commits.
        let later = create_post(&s, json!({ "title": "later" })).await;
        assert!(later["id"].is_string());
        // A subscriber resuming from before the held seq, meanwhile.
        let mut resumer = Ws::acked(&s.base, Some(&s.token)).await;
        resumer
            .subscribe("1", CHANGES, json!({ "after": (held - 1).to_string() }))
            .await;
        // Nothing past the held seq is delivered while it may still commit.
        live.silent_for(Duration::from_millis(400)).await;
        resumer.silent_for(Duration::from_millis(100)).await;
        if outcome == "commit" {
            txn.commit().await.expect("commit");
        } else {
            txn.rollback().await.expect("rollback");
        }
        other.close().await.ok();
        let got = drain_ws(&mut live, Duration::from_millis(800)).await;
        let resumed = drain_ws(&mut resumer, Duration::from_millis(300)).await;
        let want: Vec<i64> = logged_cursors(&db)
            .await
            .into_iter()
            .filter(|c| *c >= held)
            .collect();
        if outcome == "commit" {
            assert_eq!(want.len(), 2, "the held event and the later one: {want:?}");
            assert_eq!(want[0], held);
        } else {
            assert_eq!(want.len(), 1, "only the later event: {want:?}");
            assert!(want[0] > held);
        }
        assert_eq!(got, want, "live, after the {outcome}");
        assert_eq!(resumed, want, "resumed, after the {outcome}");
    }

    // The held writer got its xid after the one that commits first: no
    // snapshot taken meanwhile has an `xmax` above it, yet it is still running.
    let (older, newer) = (direct(&db).await, direct(&db).await);
    let (first, second) = (
        older.begin().await.expect("begin"),
        newer.begin().await.expect("begin"),
    );
    let xid = "SELECT pg_current_xact_id()::text AS x";
    let pg = |sql: &str| sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql);
    first.query_one_raw(pg(xid)).await.expect("first xid");
    second.query_one_raw(pg(xid)).await.expect("second xid");
    let held = insert_raw_event(&second, "held, newer xid").await;
    let later = insert_raw_event(&first, "later, older xid").await;
    assert_eq!(later, held + 1);
    first.commit().await.expect("commit");
    // The follower's poll (every second) finds the later event meanwhile. (A
    // NOTIFY would take an xid of its own, above the held one, and hide what
    // this checks.)
    live.silent_for(Duration::from_millis(1500)).await;
    let admin = direct(&db).await;
    second.commit().await.expect("commit");
    admin
        .execute_unprepared("NOTIFY livegate_events")
        .await
        .expect("notify");
    let got = drain_ws(&mut live, Duration::from_millis(800)).await;
    assert_eq!(got, vec![held, later], "the held event, then the later one");
    for c in [older, newer, admin] {
        c.close().await.ok();
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_write_whose_request_is_cancelled_is_still_delivered() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let mut live = Ws::acked(&s.base, Some(&s.token)).await;
    live.subscribe("1", CHANGES, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Requests dropped a few milliseconds after they were sent: some commit,
    // some never arrive; none may commit without being delivered.
    let mut rng = rand::rng();
    let mut tasks = Vec::new();
    let client = reqwest::Client::new();
    for i in 0..150 {
        let wait = Duration::from_micros(rng.random_range(500..100_000));
        let (base, token, client) = (s.base.clone(), s.token.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let send = client
                .post(format!("{base}/graphql"))
                .bearer_auth(&token)
                .json(&json!({ "query": format!("mutation {{ createPost(input: {{ title: \"cancelled {i}\" }}) {{ id }} }}") }))
                .send();
            let _ = tokio::time::timeout(wait, send).await;
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // A write that got through at the end proves the others had their turn.
    create_post(&s, json!({ "title": "last" })).await;
    let got = drain_ws(&mut live, Duration::from_millis(1500)).await;
    let logged = logged_cursors(&db).await;
    assert!(
        logged.len() > 1,
        "some cancelled writes committed: {logged:?}"
    );
    assert_eq!(
        got, logged,
        "every committed write delivered once, in order"
    );
    let rows = s.data("{ posts(limit: 1000) { id } }", json!({})).await["posts"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(rows, logged.len(), "one event per committed row");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn random_writers_on_two_instances_every_subscriber_sees_the_log() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    // Subscribers on both, over graphql-ws and SSE.
    let mut ws_a = Ws::acked(&a.base, Some(&a.token)).await;
    ws_a.subscribe("1", CHANGES, json!({})).await;
    let mut ws_b = Ws::acked(&b.base, Some(&b.token)).await;
    ws_b.subscribe("1", CHANGES, json!({})).await;
    let mut sse_a = Sse::open(sse_changes(&a, &a.token)).await;
    let mut sse_b = Sse::open(sse_changes(&b, &b.token)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seed: u64 = std::env::var("LIVEGATE_INSTANCES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("random writers: LIVEGATE_INSTANCES_SEED={seed}");
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let base = if w % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let token = a.token.clone();
        writers.push(tokio::spawn(async move {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ w);
            let client = reqwest::Client::new();
            let mut mine: Vec<String> = Vec::new();
            for i in 0..40 {
                let q = match rng.random_range(0..4) {
                    0 | 1 => format!(
                        "mutation {{ createPost(input: {{ title: \"w{w} {i}\" }}) {{ id }} }}"
                    ),
                    2 if !mine.is_empty() => format!(
                        "mutation {{ updatePost(id: \"{}\", input: {{ views: {i} }}) {{ id }} }}",
                        mine[rng.random_range(0..mine.len())]
                    ),
                    _ if !mine.is_empty() => {
                        let id = mine.swap_remove(rng.random_range(0..mine.len()));
                        format!("mutation {{ deletePost(id: \"{id}\") {{ id }} }}")
                    }
                    _ => format!(
                        "mutation {{ createNote(input: {{ title: \"n{w} {i}\" }}) {{ id }} }}"
                    ),
                };
                let body: Value = client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&token)
                    .json(&json!({ "query": q }))
                    .send()
                    .await
                    .expect("write")
                    .json()
                    .await
                    .expect("JSON");
                assert!(body.get("errors").is_none(), "{body:#}");
                if let Some(id) = body["data"]["createPost"]["id"].as_str() {
                    mine.push(id.to_string());
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let logged = logged_cursors(&db).await;
    assert_eq!(logged.len(), 240);
    let quiet = Duration::from_millis(1500);
    let (got_ws_a, got_ws_b, got_sse_a, got_sse_b) = tokio::join!(
        drain_ws(&mut ws_a, quiet),
        drain_ws(&mut ws_b, quiet),
        drain_sse(&mut sse_a, quiet),
        drain_sse(&mut sse_b, quiet),
    );
    for (name, got) in [
        ("ws on A", got_ws_a),
        ("ws on B", got_ws_b),
        ("sse on A", got_sse_a),
        ("sse on B", got_sse_b),
    ] {
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{name}: no duplicates");
        assert_eq!(
            got, logged,
            "{name}: every committed event, in cursor order"
        );
    }
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn a_lost_listener_costs_no_event_and_readyz_recovers() {
    let db = Db::fresh().await;
    let a = Server::start(&db, EXAMPLE_APP).await;
    let ready = |s: &Server| {
        let (client, url) = (s.client.clone(), format!("{}/readyz", s.base));
        async move {
            client
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut ok = false;
    for _ in 0..100 {
        if ready(&a).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "ready once started");
    if !is_postgres(&db) {
        a.stop().await;
        return;
    }
    let b = Server::start(&db, EXAMPLE_APP).await;
    let mut live = Ws::acked(&a.base, Some(&a.token)).await;
    live.subscribe("1", CHANGES, json!({})).await;
    // A session A has found live, and remembers so.
    let session = &signed_up(&a, "deaf@test.local").await;
    let access = session["accessToken"].as_str().expect("access token");
    let query = "query { posts(limit: 1) { id } }";
    for _ in 0..2 {
        let got = a.gql_as(Some(access), query, json!({})).await;
        assert!(got.get("errors").is_none(), "{got}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Cut every LISTEN connection to this database, then write and sign out
    // on B at once: its NOTIFYs find no listener on A.
    let admin = direct(&db).await;
    let cut = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        ))
        .await
        .expect("terminate the listeners");
    assert_eq!(cut.len(), 2, "one LISTEN connection per instance");
    let written = create_post(&b, json!({ "title": "while A was deaf" })).await;
    assert!(written["id"].is_string());
    sign_out(&b, &session["refreshToken"]).await;
    // A trusts nothing it remembered while it could not hear, and tells
    // itself what it missed once it hears again: refused either way.
    let refused = a.gql_as(Some(access), query, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    let got = drain_ws(&mut live, Duration::from_millis(2500)).await;
    assert_eq!(
        got,
        logged_cursors(&db).await,
        "the event arrives all the same"
    );
    // And A listens again.
    let mut back = false;
    for _ in 0..100 {
        if ready(&a).await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "A is ready again after reconnecting");
    admin.close().await.ok();
    stop_both(db, a, b).await;
}

/// A `livegate serve` process on `db` for the example app; its base URL.
fn spawn_instance(db: &Db) -> (std::process::Child, String) {
    spawn_instance_of(db, EXAMPLE_APP)
}

/// A `livegate serve` process on `db` for app text `app`; its base URL.
fn spawn_instance_of(db: &Db, app: &str) -> (std::process::Child, String) {
    spawn_with_env(db, app, &[])
}

/// A `livegate serve` process on `db` for app text `app` with `env` set; its
/// base URL.
pub(crate) fn spawn_with_env(
    db: &Db,
    app: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--app"])
        .arg(db.app_file("process-app.toml", app))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(db.dir.path().join("data"))
        .env("LIVEGATE_JWT_SECRET", crate::harness::TEST_SECRET)
        .env("LIVEGATE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn livegate");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("read its first line");
    // Keep reading: a closed pipe would fail the server's next print.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let base = line
        .trim()
        .strip_prefix("livegate listening on ")
        .and_then(|u| u.strip_suffix("/graphql"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, base)
}

/// An admin token of the default account, from `livegate token`.
pub(crate) fn cli_token(db: &Db) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "token",
            "--email",
            "killer@test.local",
            "--role",
            "admin",
            "--app",
        ])
        .arg(db.app_file("app.toml", EXAMPLE_APP))
        .args(["--database-url", &db.url, "--data-dir"])
        .arg(db.dir.path().join("data"))
        .env("LIVEGATE_JWT_SECRET", crate::harness::TEST_SECRET)
        .output()
        .expect("livegate token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a token")
        .trim()
        .to_string()
}

#[tokio::test]
async fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let db = Db::fresh().await;
    let (mut victim, victim_base) = spawn_instance(&db);
    let token = cli_token(&db);
    // On PostgreSQL a survivor watches; on SQLite the one instance comes back.
    let survivor = if is_postgres(&db) {
        Some(spawn_instance(&db))
    } else {
        None
    };
    let watched = survivor
        .as_ref()
        .map_or(victim_base.clone(), |(_, b)| b.clone());
    let mut live = Ws::acked(&watched, Some(&token)).await;
    live.subscribe("1", CHANGES, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (base, token, stop) = (victim_base.clone(), token.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acked = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let sent = client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&token)
                    .json(&json!({ "query": format!("mutation {{ createPost(input: {{ title: \"k{w} {i}\" }}) {{ id }} }}") }))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                let Ok(body) = resp.json::<Value>().await else { break };
                match body["data"]["createPost"]["id"].as_str() {
                    Some(id) => acked.push(id.to_string()),
                    None => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    victim.kill().expect("kill -9");
    victim.wait().ok();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(
        acked.len() > 10,
        "writes were acknowledged before the kill: {}",
        acked.len()
    );

    // Every acknowledged write is in the database, with exactly one event each.
    let conn = direct(&db).await;
    let rows = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT id FROM posts",
        ))
        .await
        .expect("read posts");
    conn.close().await.ok();
    let stored: BTreeSet<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "id").expect("id"))
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged write {id} is stored");
    }
    let logged = logged_cursors(&db).await;
    assert_eq!(
        logged.len(),
        stored.len(),
        "one event per stored row, none for a write that did not commit"
    );

    let got = match survivor {
        // The survivor's subscriber gets every stored write once, in order.
        Some((mut child, _)) => {
            let got = drain_ws(&mut live, Duration::from_millis(2500)).await;
            child.kill().ok();
            child.wait().ok();
            got
        }
        // The instance comes back on the same file; the subscriber resumes
        // from the last cursor it got and misses nothing.
        None => {
            let mut got = drain_ws(&mut live, Duration::from_millis(300)).await;
            let (mut back, base) = spawn_instance(&db);
            let mut resumed = Ws::acked(&base, Some(&token)).await;
            let after = got.last().copied().unwrap_or(0);
            resumed
                .subscribe("1", CHANGES, json!({ "after": after.to_string() }))
                .await;
            got.extend(drain_ws(&mut resumed, Duration::from_millis(1500)).await);
            back.kill().ok();
            back.wait().ok();
            got
        }
    };
    assert_eq!(
        got, logged,
        "every stored write delivered once, in cursor order"
    );
    db.drop_db().await;
}

const ROOM: &str =
    "subscription($n: String!) { room(name: $n) { kind payload from { peerId email } } }";
const SEND: &str =
    "mutation($r: String!, $p: JSON) { sendToRoom(room: $r, kind: \"chat\", payload: $p) }";

/// Joins room `name` as subscription `id`; the roster's emails and our peer id.
async fn join_room(ws: &mut Ws, id: &str, name: &str) -> (Vec<String>, String) {
    ws.subscribe(id, ROOM, json!({ "n": name })).await;
    let ev = ws.next_payload(id).await;
    let room = &ev["data"]["room"];
    assert_eq!(room["payload"]["event"], "sync", "{ev}");
    let emails = room["payload"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["email"].as_str().unwrap_or_default().to_string())
        .collect();
    (
        emails,
        room["from"]["peerId"].as_str().expect("peer").to_string(),
    )
}

async fn room_event(ws: &mut Ws, id: &str) -> Value {
    let ev = ws.next_payload(id).await;
    assert!(ev["errors"].is_null(), "{ev}");
    ev["data"]["room"].clone()
}

#[tokio::test]
async fn rooms_and_presence_span_instances() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let ann = a.user_for("ann@test.local", Role::User, "default").await;
    let ben = b.user_for("ben@test.local", Role::User, "default").await;
    let oz = b.user_for("oz@other.test", Role::User, "other").await;

    let mut on_a = Ws::acked(&a.base, Some(&ann.token)).await;
    let (roster, _) = join_room(&mut on_a, "r", "lobby").await;
    assert_eq!(roster, ["ann@test.local"]);
    let mut on_b = Ws::acked(&b.base, Some(&ben.token)).await;
    let (roster, ben_peer) = join_room(&mut on_b, "r", "lobby").await;
    assert_eq!(
        roster,
        ["ann@test.local", "ben@test.local"],
        "one roster across instances"
    );
    let joined = room_event(&mut on_a, "r").await;
    assert_eq!(joined["payload"]["event"], "join");
    assert_eq!(joined["from"]["email"], "ben@test.local");
    // Another account's room of the same name, on B, is another room.
    let mut other = Ws::acked(&b.base, Some(&oz.token)).await;
    let (roster, _) = join_room(&mut other, "r", "lobby").await;
    assert_eq!(roster, ["oz@other.test"]);

    // Messages from either instance reach both members, in one order.
    for (s, who, text) in [
        (&a, &ann, "from A"),
        (&b, &ben, "from B"),
        (&a, &ann, "A again"),
    ] {
        let sent = s
            .gql_as(
                Some(&who.token),
                SEND,
                json!({ "r": "lobby", "p": { "t": text } }),
            )
            .await;
        assert_eq!(sent["data"]["sendToRoom"], true, "{sent}");
    }
    for ws in [&mut on_a, &mut on_b] {
        let mut heard = Vec::new();
        for _ in 0..3 {
            let ev = room_event(ws, "r").await;
            assert_eq!(ev["kind"], "chat", "{ev}");
            heard.push(ev["payload"]["t"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(heard, ["from A", "from B", "A again"]);
    }
    other.silent_for(Duration::from_millis(300)).await;
    let members = a
        .gql_as(
            Some(&ann.token),
            "query { roomMembers(room: \"lobby\") { email } }",
            json!({}),
        )
        .await;
    assert_eq!(
        members["data"]["roomMembers"],
        json!([{ "email": "ann@test.local" }, { "email": "ben@test.local" }]),
        "{members}"
    );
    // Ben leaves on B: Ann, on A, hears it.
    on_b.send(json!({ "type": "complete", "id": "r" })).await;
    let left = room_event(&mut on_a, "r").await;
    assert_eq!(left["payload"]["event"], "leave");
    assert_eq!(left["from"]["peerId"], json!(ben_peer));
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn a_killed_instance_members_leave_every_roster_within_three_heartbeats() {
    let db = Db::fresh().await;
    if !is_postgres(&db) {
        return;
    }
    let app = EXAMPLE_APP.replace("heartbeat_seconds = 30", "heartbeat_seconds = 1");
    let survivor = Server::start(&db, &app).await;
    let (mut victim, victim_base) = spawn_instance_of(&db, &app);
    let ann = survivor
        .user_for("ann@test.local", Role::User, "default")
        .await;
    let ben = survivor
        .user_for("ben@test.local", Role::User, "default")
        .await;
    let mut stays = Ws::acked(&survivor.base, Some(&ann.token)).await;
    join_room(&mut stays, "r", "lobby").await;
    let mut doomed = Ws::acked(&victim_base, Some(&ben.token)).await;
    let (roster, _) = join_room(&mut doomed, "r", "lobby").await;
    assert_eq!(roster.len(), 2);
    assert_eq!(
        room_event(&mut stays, "r").await["payload"]["event"],
        "join"
    );
    victim.kill().expect("kill -9");
    victim.wait().ok();
    let killed = std::time::Instant::now();
    let left = room_event(&mut stays, "r").await;
    assert_eq!(left["payload"]["event"], "leave", "{left}");
    assert_eq!(left["from"]["email"], "ben@test.local");
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "left {took:?} after the kill (3 heartbeats: 3 s)"
    );
    let members = survivor
        .gql_as(
            Some(&ann.token),
            "query { roomMembers(room: \"lobby\") { email } }",
            json!({}),
        )
        .await;
    assert_eq!(
        members["data"]["roomMembers"],
        json!([{ "email": "ann@test.local" }])
    );
    survivor.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sign_out_on_one_instance_closes_sockets_on_another() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let session = &signed_up(&a, "sol@test.local").await;
    let access = session["accessToken"].as_str().expect("access token");
    let mut socket = Ws::acked(&b.base, Some(access)).await;
    socket.subscribe("1", CHANGES, json!({})).await;
    let mut stream = Sse::open(sse_changes(&b, access)).await;
    // B has found the session live, and remembers it so.
    let query = "query { posts(limit: 1) { id } }";
    let got = b.gql_as(Some(access), query, json!({})).await;
    assert!(got.get("errors").is_none(), "{got}");
    let lookups = b.state.store().session_lookups();
    let got = b.gql_as(Some(access), query, json!({})).await;
    assert!(got.get("errors").is_none(), "{got}");
    assert_eq!(
        b.state.store().session_lookups(),
        lookups,
        "answered from memory"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    sign_out(&a, &session["refreshToken"]).await;
    let (code, reason) = socket.closed().await;
    assert_eq!(code, 4403, "{reason}");
    // Plain requests on B are refused too, once B has heard (its socket
    // closed): the revocation cleared what it remembered.
    let refused = b.gql_as(Some(access), query, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "the SSE stream on B ends"
    );
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn a_reserved_sse_stream_used_on_another_instance_is_refused_clearly() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let reserved = a
        .client
        .put(format!("{}/graphql/stream", a.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .expect("put");
    assert_eq!(reserved.status(), reqwest::StatusCode::CREATED);
    let token = reserved.text().await.expect("token");
    // Its operation sent to the other instance (a balancer without stickiness).
    let resp = b
        .client
        .post(format!("{}/graphql/stream", b.base))
        .bearer_auth(&b.token)
        .header("x-graphql-event-stream-token", &token)
        .json(&json!({ "query": "subscription { changes { cursor } }", "extensions": { "operationId": "x" } }))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.expect("JSON");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("on this instance") && message.contains("load balancer"),
        "{body}"
    );
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn a_member_heard_from_its_first_moment_and_in_its_order_across_instances() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let ann = a.user_for("ann@test.local", Role::User, "default").await;
    let ben = b.user_for("ben@test.local", Role::User, "default").await;
    let cal = a.user_for("cal@test.local", Role::User, "default").await;
    let mut on_a = Ws::acked(&a.base, Some(&ann.token)).await;
    join_room(&mut on_a, "r", "lobby").await;
    let mut on_b = Ws::acked(&b.base, Some(&ben.token)).await;
    join_room(&mut on_b, "r", "lobby").await;
    assert_eq!(room_event(&mut on_a, "r").await["payload"]["event"], "join");

    // Cal joins on A and speaks in the same breath, over the same socket,
    // before the roster came back: everyone hears the join, then the words.
    let mut cal_ws = Ws::acked(&a.base, Some(&cal.token)).await;
    cal_ws.subscribe("r", ROOM, json!({ "n": "lobby" })).await;
    cal_ws
        .subscribe("m", SEND, json!({ "r": "lobby", "p": { "t": "first" } }))
        .await;
    for ws in [&mut on_a, &mut on_b] {
        let joined = room_event(ws, "r").await;
        assert_eq!(joined["payload"]["event"], "join", "{joined}");
        assert_eq!(joined["from"]["email"], "cal@test.local");
        let said = room_event(ws, "r").await;
        assert_eq!(said["kind"], "chat", "{said}");
        assert_eq!(said["payload"]["t"], "first");
    }
    let mut own = Vec::new();
    let mut sent = None;
    while own.len() < 2 || sent.is_none() {
        let Frame::Json(v) = cal_ws.next().await else {
            panic!("Cal's socket closed");
        };
        match v["id"].as_str() {
            Some("r") if v["type"] == "next" => own.push(v["payload"]["data"]["room"].clone()),
            Some("m") if v["type"] == "next" => sent = Some(v["payload"].clone()),
            _ => {}
        }
    }
    assert_eq!(
        sent.expect("result")["data"]["sendToRoom"],
        true,
        "the send waited for its join"
    );
    assert_eq!(own[0]["payload"]["event"], "sync", "the roster comes first");
    assert_eq!(
        own[1]["payload"]["t"], "first",
        "then the member's own words"
    );

    // Cal's sends over the member's own socket, back to back, every other
    // one given up on (graphql-ws `complete`) as soon as it is sent: what is
    // heard is heard once and in the order sent, on both instances alike,
    // every send Cal saw succeed is among it, and a given-up send never
    // holds Cal's turn. (18 sends: within the room's burst of 20.)
    let mut acknowledged = Vec::new();
    for n in 0..16 {
        let (id, text) = (format!("m{n}"), format!("m{n}"));
        cal_ws
            .subscribe(&id, SEND, json!({ "r": "lobby", "p": { "t": text } }))
            .await;
        if n % 2 == 0 {
            cal_ws.send(json!({ "type": "complete", "id": id })).await;
            continue;
        }
        loop {
            let Frame::Json(v) = cal_ws.next().await else {
                panic!("Cal's socket closed");
            };
            if v["id"] == id.as_str() && v["type"] == "next" {
                assert_eq!(v["payload"]["data"]["sendToRoom"], true, "{v}");
                acknowledged.push(text.clone());
                break;
            }
        }
    }
    cal_ws
        .subscribe("last", SEND, json!({ "r": "lobby", "p": { "t": "last" } }))
        .await;
    let mut heard_by = Vec::new();
    for ws in [&mut on_a, &mut on_b] {
        let mut heard = Vec::new();
        loop {
            let said = room_event(ws, "r").await;
            let t = said["payload"]["t"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if t == "last" {
                break;
            }
            heard.push(t);
        }
        heard_by.push(heard);
    }
    assert_eq!(heard_by[0], heard_by[1], "one order on both instances");
    let numbers: Vec<u32> = heard_by[0]
        .iter()
        .map(|t| t.trim_start_matches('m').parse().expect("a sent message"))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "once each, in the order sent: {numbers:?}"
    );
    for text in &acknowledged {
        assert!(
            heard_by[0].contains(text),
            "{text} acknowledged but not heard"
        );
    }
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn pruning_runs_on_one_instance_at_a_time_and_every_instance_agrees_on_the_history() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let conn = direct(&db).await;
    // More old events than one pruning batch (5,000) twice over, as if
    // written 100 hours ago by another instance.
    const OLD: u64 = 12_000;
    conn.execute_unprepared(&format!(
        "INSERT INTO livegate_events (account_id, collection, action, row_id, owner_id, at, record) \
         SELECT a.id, 'posts', 'create', gen_random_uuid()::text, NULL, now() - interval '100 hours', \
                json_build_object('id', gen_random_uuid()::text, 'owner_id', NULL, 'account_id', a.id, \
                  'created_at', now(), 'updated_at', now(), \
                  'data', json_build_object('title', 'old ' || n, 'published', false, 'views', 0)) \
         FROM generate_series(1, {OLD}) AS n, livegate_accounts AS a WHERE a.slug = 'default'"
    ))
    .await
    .expect("old events");
    let newest_old = *logged_cursors(&db).await.last().expect("old events");
    let admin = a
        .user_for("adm@test.local", Role::Admin, "default")
        .await
        .token;
    for n in 0..3 {
        create_post(&b, json!({ "title": format!("kept {n}") })).await;
    }
    let cut = chrono::Utc::now() - chrono::Duration::hours(50);
    // A starts and is held up on the last old row (locked here), in its
    // third batch; B's turn comes meanwhile and it stands aside.
    let _one_at_a_time = OPEN_TRANSACTIONS.lock().await;
    let blocker = direct(&db).await;
    let holding = blocker.begin().await.expect("begin");
    holding
        .execute_unprepared(&format!(
            "SELECT seq FROM livegate_events WHERE seq = {newest_old} FOR UPDATE"
        ))
        .await
        .expect("lock a row");
    let store_a = a.state.store().clone();
    let pruning_a = tokio::spawn(async move { store_a.prune_events(cut).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pruning_a.is_finished(), "A waits for the locked row");
    let y = b.state.store().prune_events(cut).await.expect("B prunes");
    assert_eq!(y, 0, "B leaves pruning to A, which is at it");
    holding.rollback().await.expect("release the row");
    blocker.close().await.ok();
    let x = pruning_a.await.expect("A's task").expect("A prunes");
    assert_eq!(x, OLD, "A deletes every old event");
    let left = logged_cursors(&db).await;
    assert_eq!(left.len(), 3, "the new events stay: {left:?}");
    assert!(left.iter().all(|seq| *seq > newest_old));
    let watermark: i64 = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT value FROM livegate_meta WHERE key = 'events_pruned_through'",
        ))
        .await
        .expect("meta")
        .expect("a watermark")
        .try_get("", "value")
        .expect("value");
    assert_eq!(watermark, newest_old);
    // On either instance: a cursor in the pruned history is expired, and one
    // at its edge resumes with exactly what is left (once it has followed
    // the log that far).
    for s in [&a, &b] {
        let store = s.state.store().clone();
        let newest = *left.last().expect("kept events");
        assert!(
            eventually(Duration::from_secs(10), || store.published_seq() >= newest).await,
            "the instance follows the log past the pruned events"
        );
        let mut ws = Ws::acked(&s.base, Some(&admin)).await;
        ws.subscribe(
            "old",
            CHANGES,
            json!({ "after": (newest_old - 1).to_string() }),
        )
        .await;
        ws.fails_with("old", "CURSOR_EXPIRED").await;
        ws.subscribe("edge", CHANGES, json!({ "after": newest_old.to_string() }))
            .await;
        let got = drain_ws(&mut ws, Duration::from_millis(500)).await;
        assert_eq!(got, left);
    }
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn writes_past_the_followers_memory_budget_are_read_back_from_the_log() {
    let db = Db::fresh().await;
    if !is_postgres(&db) {
        // SQLite publishes each write as it commits: nothing waits in memory.
        return;
    }
    let app = EXAMPLE_APP.replace(
        "max_length = 200, description = \"Headline.\"",
        "max_length = 1000002, description = \"Headline.\"",
    );
    assert_ne!(app, EXAMPLE_APP, "titles of any length");
    let s = Server::start(&db, &app).await;
    let mut live = Ws::acked(&s.base, Some(&s.token)).await;
    live.subscribe(
        "1",
        "subscription { postChanged { cursor record { title } } }",
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another writer holds a seq open: every later write of this instance
    // waits in the follower's memory (64 MiB, counted at three times a
    // change's JSON) until it commits. Thirty writes of about 1 MB go past it.
    let _one_at_a_time = OPEN_TRANSACTIONS.lock().await;
    let other = direct(&db).await;
    let txn = other.begin().await.expect("begin");
    let held = insert_raw_event(&txn, "held").await;
    let titles: Vec<String> = (0..30)
        .map(|n| format!("{n:02}{}", "x".repeat(1_000_000)))
        .collect();
    for title in &titles {
        let made = create_post(&s, json!({ "title": title })).await;
        assert!(made["id"].is_string(), "a 1 MB post is written");
    }
    live.silent_for(Duration::from_millis(300)).await;
    txn.commit().await.expect("commit");
    other.close().await.ok();
    // 30 MB at once is more than a connection may have waiting (4 MiB): when
    // it closes with 1013 the client resumes from its last cursor, as
    // graphql-ws clients do.
    let logged = logged_cursors(&db).await;
    let newest = *logged.last().expect("logged");
    let mut got: Vec<(i64, String)> = Vec::new();
    let mut resumes = 0;
    while got.last().is_none_or(|(c, _)| *c < newest) {
        match live.next_within(Duration::from_secs(20)).await {
            Some(Frame::Json(v)) => {
                let change = &v["payload"]["data"]["postChanged"];
                let title = change["record"]["title"].as_str().expect("title");
                got.push((cursor(&change["cursor"]), title.to_string()));
            }
            Some(Frame::Closed(1013, _)) if resumes < 30 => {
                resumes += 1;
                let after = got.last().map_or(held - 1, |(c, _)| *c);
                live = Ws::acked(&s.base, Some(&s.token)).await;
                live.subscribe(
                    "1",
                    "subscription($a: String) { postChanged(after: $a) { cursor record { title } } }",
                    json!({ "a": after.to_string() }),
                )
                .await;
            }
            other => panic!("unexpected {other:?} after {} changes", got.len()),
        }
    }
    live.silent_for(Duration::from_millis(300)).await;
    eprintln!("resumed {resumes} times");
    assert!(
        s.state.store().changes_over_budget() > 0,
        "the writes went past the follower's memory budget"
    );
    let cursors: Vec<i64> = got.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        cursors,
        logged
            .into_iter()
            .filter(|c| *c >= held)
            .collect::<Vec<_>>()
    );
    assert_eq!(got[0].1, "held");
    let delivered: Vec<&String> = got[1..].iter().map(|(_, t)| t).collect();
    assert_eq!(delivered.len(), titles.len(), "every write, once");
    assert!(
        delivered.iter().zip(&titles).all(|(a, b)| *a == b),
        "each write's own record, in order"
    );
    s.stop().await;
    db.drop_db().await;
}

/// A member's view of its room: the roster it was sent, then every join and
/// leave applied in order (peer ids).
struct View {
    ws: Ws,
    peer: String,
    roster: BTreeSet<String>,
}

impl View {
    /// Joins `room` over a new socket to `base` as `token`.
    async fn join(base: &str, token: &str, room: &str) -> View {
        let mut ws = Ws::acked(base, Some(token)).await;
        ws.subscribe("r", ROOM, json!({ "n": room })).await;
        let sync = room_event(&mut ws, "r").await;
        assert_eq!(sync["payload"]["event"], "sync", "{sync}");
        let roster = sync["payload"]["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["peerId"].as_str().expect("peerId").to_string())
            .collect();
        let peer = sync["from"]["peerId"]
            .as_str()
            .expect("own peer")
            .to_string();
        View { ws, peer, roster }
    }

    /// Applies what arrives until `quiet` passes without an event.
    async fn settle(&mut self, quiet: Duration) {
        while let Some(frame) = self.ws.next_within(quiet).await {
            let Frame::Json(v) = frame else {
                panic!("{}'s socket closed: {frame:?}", self.peer);
            };
            let ev = &v["payload"]["data"]["room"];
            let who = ev["from"]["peerId"].as_str().expect("peerId").to_string();
            match ev["payload"]["event"].as_str() {
                Some("join") => {
                    assert!(self.roster.insert(who), "{} heard a join twice", self.peer)
                }
                Some("leave") => assert!(
                    self.roster.remove(&who),
                    "{} heard a leave of a stranger",
                    self.peer
                ),
                other => panic!("unexpected room event {other:?}: {v}"),
            }
        }
    }
}

#[tokio::test]
async fn members_joining_and_leaving_at_once_on_two_instances_see_one_roster() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let mut tokens = Vec::new();
    for n in 0..14usize {
        let s = if n.is_multiple_of(2) { &a } else { &b };
        tokens.push(
            s.user_for(&format!("m{n}@test.local"), Role::User, "default")
                .await
                .token,
        );
    }
    let base = |n: usize| {
        if n.is_multiple_of(2) {
            a.base.clone()
        } else {
            b.base.clone()
        }
    };
    // Ten join at once, half on each instance.
    let mut views = futures_util::future::join_all((0..10).map(|n| {
        let (base, token) = (base(n), tokens[n].clone());
        async move { View::join(&base, &token, "busy").await }
    }))
    .await;
    // Then, at once: four leave (two from each instance) and four join.
    let leaving: Vec<View> = views.drain(..4).collect();
    let (_, joined) = tokio::join!(
        async move {
            for mut v in leaving {
                v.ws.send(json!({ "type": "complete", "id": "r" })).await;
                v.ws.abort().await;
            }
        },
        futures_util::future::join_all((10..14).map(|n| {
            let (base, token) = (base(n), tokens[n].clone());
            async move { View::join(&base, &token, "busy").await }
        }))
    );
    views.extend(joined);
    futures_util::future::join_all(
        views
            .iter_mut()
            .map(|v| v.settle(Duration::from_millis(1500))),
    )
    .await;
    let truth: BTreeSet<String> = views.iter().map(|v| v.peer.clone()).collect();
    for v in &views {
        assert_eq!(v.roster, truth, "{}'s roster", v.peer);
    }
    for s in [&a, &b] {
        let listed = s
            .gql_as(
                Some(&tokens[10]),
                "query { roomMembers(room: \"busy\") { peerId } }",
                json!({}),
            )
            .await;
        let listed: BTreeSet<String> = listed["data"]["roomMembers"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["peerId"].as_str().expect("peerId").to_string())
            .collect();
        assert_eq!(listed, truth, "roomMembers on {}", s.base);
    }
    stop_both(db, a, b).await;
}

#[tokio::test]
async fn a_live_query_on_one_instance_follows_writes_made_through_another() {
    let Some((db, a, b)) = two_instances().await else {
        return;
    };
    let mut ws = Ws::acked(&b.base, Some(&b.token)).await;
    ws.subscribe("l", "query @live(patch: true) { postsCount }", json!({}))
        .await;
    let first = ws.next_payload("l").await;
    let count = first["data"]["postsCount"].as_i64().expect("a count");
    create_post(&a, json!({ "title": "through a" })).await;
    let second = ws.next_payload("l").await;
    assert_eq!(
        second,
        json!({ "patch": [{ "op": "replace", "path": "/postsCount", "value": count + 1 }], "revision": 2 })
    );
    stop_both(db, a, b).await;
}
