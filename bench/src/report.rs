//! The markdown report: one row per target and scenario, with livegate/peer ratios.

use std::path::PathBuf;

use serde_json::Value;

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// The headline figure of a result, its unit, and whether larger is better.
fn headline(r: &Value) -> (String, f64, &'static str, bool) {
    let t = r["transport"].as_str().unwrap_or("ws");
    if r["error"].is_string() {
        let name = format!(
            "{} {}",
            r["scenario"].as_str().unwrap_or("?"),
            r["args"].as_str().unwrap_or_default()
        );
        return (name.trim_end().to_string(), 0.0, "", true);
    }
    match r["scenario"].as_str().unwrap_or_default() {
        "fanout" => (
            format!("fanout {}×{} {t}", r["subscribers"], r["events"]),
            num(r, &["deliveries_per_s"]),
            "deliveries/s",
            true,
        ),
        "latency" => (
            format!("latency {}×{}/s {t} (p99)", r["subscribers"], r["rate"]),
            num(r, &["latency_ms", "p99"]),
            "ms p99",
            false,
        ),
        "idle" => (
            format!("idle {} {t}", r["connections"]),
            num(r, &["bytes_per_connection"]) / 1024.0,
            "KiB/conn",
            false,
        ),
        "connect" => (
            "connect".to_string(),
            num(r, &["connections_per_s"]),
            "conn/s",
            true,
        ),
        "signup-flood" => {
            let what = r["measure"].as_str().unwrap_or("?");
            let label = if what == "query_ms" {
                "plain query"
            } else {
                "realtime delivery"
            };
            (
                format!(
                    "{label} p99 during a {} s sign-up flood (c={})",
                    r["seconds"], r["concurrency"]
                ),
                num(r, &["flood", what, "p99"]),
                "ms p99",
                false,
            )
        }
        "reads" => (
            format!("reads c={}", r["concurrency"]),
            num(r, &["requests_per_s"]),
            "req/s",
            true,
        ),
        "crud" => (
            format!("crud c={}", r["concurrency"]),
            num(r, &["requests_per_s"]),
            "req/s",
            true,
        ),
        "writes" => (
            format!("writes c={}", r["concurrency"]),
            num(r, &["writes_per_s"]),
            "writes/s",
            true,
        ),
        "live-live" => (
            format!(
                "live query {}×{}/s, {} cohort(s) (p99)",
                r["subscribers"], r["rate"], r["cohorts"]
            ),
            num(r, &["latency_ms", "p99"]),
            "ms p99",
            false,
        ),
        "live-refetch" => (
            format!("refetch on hint {}×{}/s (p99)", r["subscribers"], r["rate"]),
            num(r, &["latency_ms", "p99"]),
            "ms p99",
            false,
        ),
        other => (other.to_string(), 0.0, "", true),
    }
}

/// What the webhook receiver saw, if the run had one (`--webhook-port`).
fn webhooks(r: &Value) -> String {
    let w = &r["webhooks"];
    if w.is_null() {
        return String::new();
    }
    format!(
        " · trigger: {} calls, {:.0}/s, {:.1}/{:.1} ms p50/p99 after the commit",
        w["calls"],
        num(r, &["webhooks", "calls_per_s"]),
        num(r, &["webhooks", "delay_ms", "p50"]),
        num(r, &["webhooks", "delay_ms", "p99"])
    )
}

fn details(r: &Value) -> String {
    match r["scenario"].as_str().unwrap_or_default() {
        "fanout" | "latency" => {
            format!(
                "missing {} · latency p50/p90/p99/max {:.1}/{:.1}/{:.1}/{:.1} ms (read by the generator: p50/p99 {:.1}/{:.1} ms) · mutation p50/p99 {:.1}/{:.1} ms",
                r["missing"],
                num(r, &["latency_ms", "p50"]),
                num(r, &["latency_ms", "p90"]),
                num(r, &["latency_ms", "p99"]),
                num(r, &["latency_ms", "max"]),
                num(r, &["read_latency_ms", "p50"]),
                num(r, &["read_latency_ms", "p99"]),
                num(r, &["mutation_ms", "p50"]),
                num(r, &["mutation_ms", "p99"])
            ) + &match r["deliveries_per_cpu_s"].as_f64() {
                Some(per_cpu) => format!(" · {per_cpu:.0} deliveries per server CPU-second"),
                None => String::new(),
            }
        }
        "live-live" | "live-refetch" => format!(
            "missing {} · {:.0} results/s · latency p50/p99 {:.1}/{:.1} ms · server CPU {:.1} ms a change{}",
            r["missing"],
            num(r, &["deliveries_per_s"]),
            num(r, &["latency_ms", "p50"]),
            num(r, &["latency_ms", "p99"]),
            num(r, &["server_cpu_ms_per_change"]),
            match r["runs_per_change"].as_f64() {
                Some(runs) if r["scenario"] == "live-live" => format!(" · {runs:.1} runs a change"),
                _ => String::new(),
            }
        ),
        "idle" => format!(
            "RSS {:.0} → {:.0} MiB",
            num(r, &["rss_before_mib"]),
            num(r, &["rss_after_mib"])
        ),
        "connect" => format!(
            "{} connections, {} failed, p99 {:.1} ms",
            r["connections"],
            r["failed"],
            num(r, &["latency_ms", "p99"])
        ),
        "crud" | "reads" | "writes" => {
            format!(
                "{} requests, {} errors, p50/p99 {:.1}/{:.1} ms",
                r["requests"],
                r["errors"],
                num(r, &["latency_ms", "p50"]),
                num(r, &["latency_ms", "p99"])
            ) + &match r["commits_per_s"].as_f64() {
                Some(c) if c > 0.0 => format!(
                    " · {c:.0} commits/s ({:.1} writes a commit)",
                    num(r, &["writes_per_s"]) / c
                ),
                _ => String::new(),
            }
        }
        "signup-flood" => {
            let what = r["measure"].as_str().unwrap_or("?");
            let errors: u64 = r["signups"]["other_errors"]
                .as_object()
                .map(|e| e.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            format!(
                "without the flood p50/p99 {:.1}/{:.1} ms, during it {:.1}/{:.1} ms · sign-ups: {} ok, {} RATE_LIMITED, {} other errors, {} failed ({:.0}/s attempted)",
                num(r, &["baseline", what, "p50"]),
                num(r, &["baseline", what, "p99"]),
                num(r, &["flood", what, "p50"]),
                num(r, &["flood", what, "p99"]),
                r["signups"]["ok"],
                r["signups"]["rate_limited"],
                errors,
                r["signups"]["failed_requests"],
                num(r, &["signups", "per_s"])
            ) + &match (
                r["baseline"]["missing"].as_u64(),
                r["flood"]["missing"].as_u64(),
            ) {
                (Some(a), Some(b)) if what == "delivery_ms" && a + b > 0 => {
                    format!(" · missing deliveries {a} without, {b} during")
                }
                _ => String::new(),
            }
        }
        _ => String::new(),
    }
}

/// One result line, as the rows it makes: a sign-up flood result gives one row
/// for the plain query and one for realtime delivery.
fn expand(r: Value) -> Vec<Value> {
    if r["scenario"] != "signup-flood" || r["error"].is_string() {
        return vec![r];
    }
    ["query_ms", "delivery_ms"]
        .iter()
        .map(|m| {
            let mut row = r.clone();
            row["measure"] = Value::from(*m);
            row
        })
        .collect()
}

/// Reads result lines from `files` and renders the table.
pub fn markdown(files: &[PathBuf]) -> anyhow::Result<String> {
    let mut results = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f)?
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
        {
            results.extend(expand(serde_json::from_str::<Value>(line)?));
        }
    }
    let mut out = String::from(
        "| scenario | target | result | livegate ÷ target | details |\n|---|---|---|---|---|\n",
    );
    let mut scenarios: Vec<String> = Vec::new();
    for r in &results {
        let name = headline(r).0;
        if !scenarios.contains(&name) {
            scenarios.push(name);
        }
    }
    for s in scenarios {
        let rows: Vec<&Value> = results.iter().filter(|r| headline(r).0 == s).collect();
        let ours = rows
            .iter()
            .find(|r| r["target"] == "livegate")
            .map(|r| headline(r).1);
        for r in rows {
            let (_, value, unit, bigger_is_better) = headline(r);
            // Peers only: livegate on PostgreSQL or several instances is
            // livegate too, not a target to compare with.
            let peer = !r["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with("livegate");
            let ratio = match ours {
                Some(o) if peer && value > 0.0 && o > 0.0 => {
                    let x = if bigger_is_better {
                        o / value
                    } else {
                        value / o
                    };
                    format!("{x:.1}×")
                }
                _ => "".to_string(),
            };
            if r["error"].is_string() {
                out.push_str(&format!(
                    "| {s} | {} | failed |  | the generator's output is kept beside the results |\n",
                    r["target"].as_str().unwrap_or("?"),
                ));
                continue;
            }
            out.push_str(&format!(
                "| {s} | {} | {value:.1} {unit} | {ratio} | {} |\n",
                r["target"].as_str().unwrap_or("?"),
                details(r) + &webhooks(r)
            ));
        }
    }
    Ok(out)
}
