//! `loadgen abuse`: malformed, oversized, truncated, out-of-order and binary
//! traffic over many connections (WebSocket, SSE, HTTP, raw TCP), while one
//! well-behaved subscriber must receive every post a paced writer creates,
//! exactly once and in order, and the server's memory stays bounded.
//!
//! The abuse itself is in [`cases`]; this module runs it, watches the server
//! and judges the run.

mod cases;
mod good;
mod http;
mod tally;
mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::Target;
use crate::client::rss_bytes;
use cases::Ctx;
use tally::Tally;

/// What `loadgen abuse` is asked to do.
pub struct Plan {
    /// Malformed frames and requests to send in all.
    pub frames: u64,
    /// Abusive connections open at once.
    pub connections: usize,
    /// Stop the abuse after this many seconds even if `frames` were not all sent.
    pub seconds: u64,
    /// Fail when the server's resident memory exceeds this (MiB).
    pub max_rss_mib: u64,
    /// Posts the writer creates per second.
    pub rate: f64,
    /// Fail on a 5xx answer or an `INTERNAL` error code too.
    pub strict: bool,
}

/// Whether process `pid` still runs (a zombie, dead but not yet reaped by the
/// script that started it, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X'))),
        Err(_) => false,
    }
}

/// Runs the abuse and returns the summary, and whether the run passed.
pub async fn run(target: &Target, plan: Plan) -> anyhow::Result<(Value, bool)> {
    let pid = target.pid.context("abuse needs --pid (the server's)")?;
    let rss_start = rss_bytes(pid).context("reading the server's memory")?;
    let tally = Arc::new(Tally::default());

    // The well-behaved side first: its subscription is live before any abuse.
    let good = good::Good::start(target)
        .await
        .context("the well-behaved subscriber")?;
    let writer = good.write(target.clone(), plan.rate);

    // Memory and liveness, sampled every 100 ms until the end.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (watching, tally) = (watching.clone(), tally.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if !alive(pid) {
                    tally.server_died.store(true, Ordering::SeqCst);
                    break;
                }
                if let Some(rss) = rss_bytes(pid) {
                    tally.rss_peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let started = Instant::now();
    let ctx = Arc::new(Ctx::new(target, tally.clone(), plan.frames)?);
    let deadline = started + Duration::from_secs(plan.seconds);
    let mut workers = Vec::with_capacity(plan.connections);
    for w in 0..plan.connections {
        workers.push(tokio::spawn(cases::worker(ctx.clone(), w, deadline)));
    }
    for w in workers {
        w.await?;
    }
    let abuse_seconds = started.elapsed().as_secs_f64();

    let written = writer.stop().await;
    let events = good.finish(&written).await;
    // Let the server settle, then read what it holds once the abuse is over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let up = alive(pid) && !tally.server_died.load(Ordering::SeqCst);
    let rss_end = rss_bytes(pid).unwrap_or(0);
    let rss_peak = tally.rss_peak.load(Ordering::Relaxed).max(rss_start);
    let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;

    let findings =
        tally.server_errors.load(Ordering::Relaxed) + tally.internal.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    if !up {
        failures.push("the server died".to_string());
    }
    if !events.clean() {
        failures.push(format!("the well-behaved subscriber: {}", events.verdict()));
    }
    if written.failed > 0 {
        failures.push(format!(
            "{} of the writer's createPost calls failed",
            written.failed
        ));
    }
    if mib(rss_peak) > plan.max_rss_mib as f64 {
        failures.push(format!(
            "server RSS peaked at {} MiB, over the bound of {} MiB",
            mib(rss_peak),
            plan.max_rss_mib
        ));
    }
    if plan.strict && findings > 0 {
        failures.push(format!(
            "{findings} 5xx answers or INTERNAL codes (--strict)"
        ));
    }
    let summary = json!({
        "target": target.name, "scenario": "abuse",
        "frames_sent": tally.frames.load(Ordering::Relaxed),
        "connections_opened": tally.connections.load(Ordering::Relaxed),
        "concurrency": plan.connections, "abuse_seconds": abuse_seconds,
        "kinds": tally.kinds_json(),
        "server_5xx": tally.server_errors.load(Ordering::Relaxed),
        "internal_codes": tally.internal.load(Ordering::Relaxed),
        "findings": tally.findings_json(),
        "rss_start_mib": mib(rss_start), "rss_peak_mib": mib(rss_peak), "rss_end_mib": mib(rss_end),
        "rss_bound_mib": plan.max_rss_mib,
        "events": events.json(), "writer_failures": written.failed,
        "server_up": up, "failures": failures,
    });
    Ok((summary, failures.is_empty()))
}
