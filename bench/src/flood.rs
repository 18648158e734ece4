//! `loadgen signup-flood`: what a flood of `signUp` mutations (each one a
//! password hash) does to everyone else. Two phases on one server: without the
//! flood, then with it; in each, the p99 of a plain query (`{ postsCount }`) and
//! of realtime delivery (subscribers on `postChanged`, posts written at a
//! steady pace, timed as the latency scenario times them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::Target;
use crate::client::{gql, http_client, now_nanos, token};
use crate::scenarios::{Tally, hist, ms, open_subscribers, send_events, warm_up};

const SIGN_UP: &str =
    "mutation($e: String!, $p: String!) { signUp(email: $e, password: $p) { accessToken } }";

/// How the sign-ups of the flood ended.
#[derive(Default)]
struct SignUps {
    ok: u64,
    rate_limited: u64,
    /// Other GraphQL errors, by code.
    errors: BTreeMap<String, u64>,
    /// Requests that got no GraphQL answer (HTTP error, timeout, reset).
    failed: u64,
}

pub async fn signup_flood(
    target: &Target,
    seconds: u64,
    concurrency: usize,
    subscribers: usize,
    rate: f64,
) -> anyhow::Result<Value> {
    let tally = Tally::new();
    open_subscribers(target, subscribers, "ws", tally.clone())
        .await
        .context("opening subscribers")?;
    warm_up(target, &tally, subscribers).await?;

    tally.reset();
    let baseline = phase(target, &tally, seconds, subscribers, rate).await?;

    tally.reset();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut flood = Vec::with_capacity(concurrency);
    let run = now_nanos();
    for w in 0..concurrency {
        flood.push(tokio::spawn(sign_up_loop(
            target.clone(),
            w,
            run,
            stop.clone(),
        )));
    }
    // Let the flood build up before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = phase(target, &tally, seconds, subscribers, rate).await?;
    stop.store(true, Ordering::Relaxed);
    let mut ups = SignUps::default();
    for f in flood {
        let s = f.await?;
        ups.ok += s.ok;
        ups.rate_limited += s.rate_limited;
        ups.failed += s.failed;
        for (code, n) in s.errors {
            *ups.errors.entry(code).or_default() += n;
        }
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    let attempted = ups.ok + ups.rate_limited + ups.failed + ups.errors.values().sum::<u64>();
    Ok(json!({
        "target": target.name, "scenario": "signup-flood", "seconds": seconds,
        "concurrency": concurrency, "subscribers": subscribers, "rate": rate,
        "baseline": baseline,
        "flood": during,
        "signups": {
            "attempted": attempted, "ok": ups.ok, "rate_limited": ups.rate_limited,
            "other_errors": ups.errors, "failed_requests": ups.failed,
            "per_s": attempted as f64 / flood_seconds, "ok_per_s": ups.ok as f64 / flood_seconds,
        },
    }))
}

/// One measuring phase: paced writes delivered to the subscribers, and a plain
/// query every 50 ms, for `seconds`.
async fn phase(
    target: &Target,
    tally: &Tally,
    seconds: u64,
    subscribers: usize,
    rate: f64,
) -> anyhow::Result<Value> {
    let events = ((seconds as f64 * rate) as usize).max(1);
    let writing = tokio::spawn(send_events(target.clone(), events, rate));
    let http = http_client();
    let tok = token(&target.secret, "prober");
    let mut query = hist();
    let mut query_errors = 0u64;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        match gql(&http, target, &tok, "{ postsCount }", json!({})).await {
            Ok((_, took)) => {
                let _ = query.record(took.as_micros().max(1) as u64);
            }
            Err(_) => query_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mutation = writing.await??;
    let expected = subscribers * events;
    // Deliveries still under way.
    let drain = Instant::now() + Duration::from_secs(10);
    while tally.received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = tally.received.load(Ordering::Relaxed);
    Ok(json!({
        "query_ms": ms(&query), "query_errors": query_errors,
        "delivery_ms": ms(&tally.merged().arrived), "mutation_ms": ms(&mutation),
        "expected": expected, "received": received, "missing": expected.saturating_sub(received),
    }))
}

/// One flooding client: sign-ups with fresh emails, back to back, until told to stop.
async fn sign_up_loop(target: Target, w: usize, run: u128, stop: Arc<AtomicBool>) -> SignUps {
    let source = target.sources[w % target.sources.len()];
    let mut ups = SignUps::default();
    let Ok(http) = reqwest::Client::builder()
        .local_address(source)
        .timeout(Duration::from_secs(60))
        .build()
    else {
        ups.failed += 1;
        return ups;
    };
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let email = format!("flood-{run}-{w}-{k}@bench.test");
        k += 1;
        let sent = http
            .post(&target.url)
            .json(&json!({ "query": SIGN_UP, "variables": { "e": email, "p": "flood-password-1234" } }))
            .send()
            .await;
        let body: Option<Value> = match sent {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        match body {
            Some(b) if b["data"]["signUp"]["accessToken"].is_string() => ups.ok += 1,
            Some(b) if b["errors"].is_array() => {
                let code = b["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("no code")
                    .to_string();
                // An attacker does not slow down when told to: neither does the flood.
                if code == "RATE_LIMITED" {
                    ups.rate_limited += 1;
                } else {
                    *ups.errors.entry(code).or_default() += 1;
                }
            }
            _ => ups.failed += 1,
        }
    }
    ups
}
