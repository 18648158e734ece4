//! Live queries (livegate only): N clients keeping "the newest post" up to date
//! under paced writes, three ways:
//!
//! - `live` with `--cohorts 1`: every client holds the same live query as the
//!   same viewer (one cohort: one run per change, whatever N);
//! - `live` with `--cohorts N`: each client's query differs by a variable (N
//!   cohorts: N runs per change);
//! - `refetch`: each client subscribes to the `changes` hint feed and, on each
//!   hint, runs the query again over its socket (what the seeds did, and what a
//!   client without live queries does).
//!
//! Each result carries the newest post's title, `bench:<i>:<send nanos>`. A
//! client counts each write once, the first time a result covers it: a result
//! for write `i` covers every write up to `i` the client had not seen yet (a
//! live query that coalesced writes, a refetch that found a later post), each
//! timed from its own send to that result's arrival. A result covering nothing
//! new (a refetch answering with a post already seen) counts nothing.
//! Reported: writes covered (of clients × writes), latency, the server's CPU,
//! and for live queries the runs per change (from `/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::Target;
use crate::client::{Ws, cpu_seconds, http_client, token, ws_open};
use crate::scenarios::{Tally, ms, send_events_noting, title_of, warm_up};

/// The newest post, as a live query; `$min` only tells cohorts apart (every
/// post has `views` 0, so every cohort's answer is the same).
const LIVE: &str = "query($min: Int!) @live { posts(where: { views: { gte: $min } }, orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 1) { title } }";

/// The same, run once (for `refetch`).
const ONCE: &str = "query($min: Int!) { posts(where: { views: { gte: $min } }, orderBy: [{ field: CREATED_AT, direction: DESC }], limit: 1) { title } }";

const HINTS: &str = r#"subscription { changes(collections: ["posts"]) { collection } }"#;

/// Runs the scenario; `mode` is `live` or `refetch`.
pub async fn live(
    target: &Target,
    subscribers: usize,
    cohorts: usize,
    events: usize,
    rate: f64,
    mode: &str,
    timeout: u64,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        mode == "live" || mode == "refetch",
        "--mode is live or refetch"
    );
    // Runs and CPU are read from the one server named by --url and --pid.
    anyhow::ensure!(
        target.subscribe_urls.is_empty(),
        "the live scenario runs against one instance (no --subscribe-urls)"
    );
    let cohorts = cohorts.clamp(1, subscribers.max(1));
    let tally = Tally::new();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let gate = Arc::new(Semaphore::new(256));
    let mut opening = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let permit = gate.clone().acquire_owned().await?;
        let (target, tally, refetch, sent) = (
            target.for_subscriber(i),
            tally.clone(),
            mode == "refetch",
            sent.clone(),
        );
        opening.push(tokio::spawn(async move {
            let _permit = permit;
            let source = target.sources[i % target.sources.len()];
            // One viewer for all: cohorts differ by their variables only.
            let tok = token(&target.secret, "live-viewer");
            let mut ws = ws_open(&target, source, &tok)
                .await
                .with_context(|| format!("WebSocket client {i} from {source}"))?;
            let min = -((i % cohorts) as i64);
            let first = if refetch {
                json!({ "type": "subscribe", "id": "h", "payload": { "query": HINTS } })
            } else {
                json!({ "type": "subscribe", "id": "l", "payload": { "query": LIVE, "variables": { "min": min } } })
            };
            ws.send(Message::text(first.to_string())).await?;
            tokio::spawn(run_client(ws, tally, refetch.then_some(min), sent));
            anyhow::Ok(())
        }));
    }
    for o in opening {
        o.await??;
    }
    warm_up(target, &tally, subscribers).await?;
    tally.reset();
    let runs_before = runs(target).await;
    let cpu_before = target.pid.and_then(cpu_seconds);
    let started = crate::client::now_nanos();
    let mutation = send_events_noting(target.clone(), events, rate, Some(sent.clone())).await?;
    let expected = subscribers * events;
    let received = tally
        .wait_for(
            expected,
            Duration::from_secs(timeout),
            Duration::from_secs(5),
        )
        .await;
    let cpu = match (cpu_before, target.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    let runs_after = runs(target).await;
    let end = tally.last_at.load(Ordering::Relaxed) as u128;
    let seconds = end.saturating_sub(started) as f64 / 1e9;
    let latency = tally.merged();
    let runs = match (runs_before, runs_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(json!({
        "target": target.name, "scenario": format!("live-{mode}"), "subscribers": subscribers,
        "cohorts": if mode == "live" { Some(cohorts) } else { None }, "events": events, "rate": rate,
        "expected": expected, "received": received, "missing": expected.saturating_sub(received),
        "seconds": seconds, "deliveries_per_s": if seconds > 0.0 { received as f64 / seconds } else { 0.0 },
        "latency_ms": ms(&latency.arrived), "read_latency_ms": ms(&latency.read), "mutation_ms": ms(&mutation),
        "server_cpu_s": cpu, "server_cpu_ms_per_change": cpu.map(|c| c * 1000.0 / events.max(1) as f64),
        "live_runs": runs, "runs_per_change": runs.map(|r| r / events.max(1) as f64),
    }))
}

/// `livegate_live_query_runs_total` from the server's `/metrics`.
async fn runs(target: &Target) -> Option<f64> {
    let url = target.url.replace("/graphql", "/metrics");
    let text = http_client()
        .get(url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("livegate_live_query_runs_total ")?
            .trim()
            .parse()
            .ok()
    })
}

/// One client: counts the writes each result covers for the first time (see
/// the module docs); with `refetch`, answers each hint by running the query
/// (`min` its variable) over the same socket.
async fn run_client(
    mut ws: Ws,
    tally: Arc<Tally>,
    refetch: Option<i64>,
    sent: Arc<Vec<AtomicU64>>,
) {
    let mut local = None;
    let mut n = 0u64;
    // The writes this client has seen: 0..seen.
    let mut seen = 0usize;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            continue;
        };
        let t = t.as_str();
        if t.contains(r#""type":"ping""#) {
            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
            continue;
        }
        if !t.contains(r#""type":"next""#) {
            continue;
        }
        if let Some(min) = refetch
            && t.contains(r#""id":"h""#)
        {
            n += 1;
            let ask = json!({ "type": "subscribe", "id": format!("q{n}"), "payload": { "query": ONCE, "variables": { "min": min } } });
            if ws.send(Message::text(ask.to_string())).await.is_err() {
                return;
            }
            continue;
        }
        let title = title_of(t);
        let Some(i) = title
            .strip_prefix("bench:")
            .and_then(|rest| rest.split(':').next())
            .and_then(|i| i.parse::<usize>().ok())
        else {
            // Warm-ups count towards the warm-up only.
            tally.record(t, ws.get_ref().arrival().nanos(), &mut local);
            continue;
        };
        let arrived = ws.get_ref().arrival().nanos();
        while seen <= i && seen < sent.len() {
            let at = u128::from(sent[seen].load(Ordering::SeqCst));
            if at > 0 {
                tally.timed(at, arrived, &mut local);
            }
            seen += 1;
        }
    }
}
