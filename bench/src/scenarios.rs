//! The scenarios. Each returns one JSON object with its parameters and results.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::Target;
use crate::client::{
    Subscriber, cpu_seconds, gql, http_client, now_nanos, rss_bytes, sse_open, token, ws_open,
    ws_subscribe,
};

const SUBSCRIPTION: &str = "subscription { postChanged { action id record { title } } }";
const CREATE: &str = "mutation($t: String!) { createPost(input: { title: $t }) { id } }";

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist()))
}

fn unreachable_hist() -> Histogram<u64> {
    // new(3) cannot fail for a valid significant-figures value.
    Histogram::new(2).unwrap_or_else(|_| panic!("hdrhistogram"))
}

/// Percentiles of a histogram of microseconds, in milliseconds.
pub(crate) fn ms(h: &Histogram<u64>) -> Value {
    let q = |p: f64| (h.value_at_quantile(p) as f64) / 1000.0;
    json!({ "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": h.max() as f64 / 1000.0, "count": h.len() })
}

/// The send time carried in a title `bench:<n>:<nanos>`.
fn sent_at(title: &str) -> Option<u128> {
    title
        .strip_prefix("bench:")?
        .split(':')
        .nth(1)?
        .parse()
        .ok()
}

/// What all subscribers count and time.
pub(crate) struct Tally {
    pub(crate) received: AtomicUsize,
    warm: AtomicUsize,
    /// Per subscriber (never contended), merged at the end: latency to the frame's
    /// arrival at the subscriber's socket, and to the generator reading it.
    latencies: std::sync::Mutex<Vec<Arc<std::sync::Mutex<Latencies>>>>,
    pub(crate) last_at: AtomicU64,
}

impl Tally {
    pub(crate) fn new() -> Arc<Tally> {
        Arc::new(Tally {
            received: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            latencies: Default::default(),
            last_at: AtomicU64::new(0),
        })
    }

    pub(crate) fn merged(&self) -> Latencies {
        let mut all = Latencies::new();
        for h in self.latencies.lock().map(|l| l.clone()).unwrap_or_default() {
            if let Ok(h) = h.lock() {
                let _ = all.arrived.add(&h.arrived);
                let _ = all.read.add(&h.read);
            }
        }
        all
    }

    /// Waits until `expected` results arrived, `timeout` passed, or none
    /// arrived for `stalled`; the number received.
    pub(crate) async fn wait_for(
        &self,
        expected: usize,
        timeout: Duration,
        stalled: Duration,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        let mut last = (0, Instant::now());
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.received.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stalled {
                break;
            }
        }
        self.received.load(Ordering::Relaxed)
    }

    /// Starts counting and timing afresh (a scenario's next phase).
    pub(crate) fn reset(&self) {
        self.received.store(0, Ordering::SeqCst);
        for h in self.latencies.lock().map(|l| l.clone()).unwrap_or_default() {
            if let Ok(mut h) = h.lock() {
                h.arrived.reset();
                h.read.reset();
            }
        }
    }
}

/// Microseconds from the send timestamp to the frame's arrival (kernel receive
/// timestamp) and to the generator reading it.
pub(crate) struct Latencies {
    pub(crate) arrived: Histogram<u64>,
    pub(crate) read: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            arrived: hist(),
            read: hist(),
        }
    }
}

/// The title in a result frame, found without parsing the frame.
pub(crate) fn title_of(frame: &str) -> &str {
    let Some(at) = frame.find(r#""title":""#) else {
        return "";
    };
    let rest = &frame[at + 9..];
    &rest[..rest.find('"').unwrap_or(rest.len())]
}

async fn run_subscriber(mut sub: Subscriber, tally: Arc<Tally>) {
    // Made at the first timed event: two histograms are ~300 KB, and an idle
    // subscriber (of 100,000 held) never times one.
    let mut local = None;
    while let Some((frame, arrived)) = sub.next().await {
        tally.record(&frame, arrived, &mut local);
    }
}

impl Tally {
    /// Counts a result frame: a warm-up, or a timed event (its latency from
    /// the send time in its title); anything else is not counted. `local`
    /// is the subscriber's own histograms, made at its first timed event.
    pub(crate) fn record(
        &self,
        frame: &str,
        arrived: u128,
        local: &mut Option<Arc<std::sync::Mutex<Latencies>>>,
    ) {
        let title = title_of(frame);
        if title.starts_with("warmup:") {
            self.warm.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let Some(sent) = sent_at(title) else {
            return;
        };
        self.timed(sent, arrived, local);
    }

    /// Counts one timed event sent at `sent` (nanoseconds) whose result
    /// arrived at `arrived`.
    pub(crate) fn timed(
        &self,
        sent: u128,
        arrived: u128,
        local: &mut Option<Arc<std::sync::Mutex<Latencies>>>,
    ) {
        let now = now_nanos();
        // No kernel timestamp (never seen on Linux): the read time stands in.
        let arrived = if arrived > 0 { arrived.min(now) } else { now };
        let micros = |at: u128| (at.saturating_sub(sent) / 1000).max(1) as u64;
        let local = local.get_or_insert_with(|| {
            let made = Arc::new(std::sync::Mutex::new(Latencies::new()));
            if let Ok(mut l) = self.latencies.lock() {
                l.push(made.clone());
            }
            made
        });
        if let Ok(mut h) = local.lock() {
            let _ = h.arrived.record(micros(arrived));
            let _ = h.read.record(micros(now));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_at.fetch_max(arrived as u64, Ordering::Relaxed);
    }
}

/// Opens `n` subscribers (ws or sse) that feed `tally`, `concurrency` at a time.
pub(crate) async fn open_subscribers(
    target: &Target,
    n: usize,
    transport: &str,
    tally: Arc<Tally>,
) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(256));
    let mut opening = Vec::with_capacity(n);
    for i in 0..n {
        // Taken before the task exists: spawning all n at once (each task is a
        // large future, handshake state included) kept the generator's core
        // page-faulting for seconds at 19,000, and connections it had just
        // opened sent their `connection_init` too late (4408).
        let permit = gate.clone().acquire_owned().await?;
        let (target, tally, transport) = (
            target.for_subscriber(i),
            tally.clone(),
            transport.to_string(),
        );
        opening.push(tokio::spawn(async move {
            let _permit = permit;
            let source = target.sources[i % target.sources.len()];
            let tok = token(&target.secret, &format!("sub-{i}"));
            let sub = if transport == "sse" {
                Subscriber::Sse(Box::new(
                    sse_open(&target, source, &tok, SUBSCRIPTION)
                        .await
                        .with_context(|| format!("SSE subscriber {i} from {source}"))?,
                ))
            } else {
                let mut ws = ws_open(&target, source, &tok)
                    .await
                    .with_context(|| format!("WebSocket subscriber {i} from {source}"))?;
                ws_subscribe(&mut ws, "1", SUBSCRIPTION).await?;
                Subscriber::Ws(Box::new(ws))
            };
            tokio::spawn(run_subscriber(sub, tally));
            anyhow::Ok(())
        }));
    }
    for o in opening {
        o.await??;
    }
    Ok(())
}

/// Sends warm-up events until every subscriber got one (subscriptions are live).
pub(crate) async fn warm_up(target: &Target, tally: &Tally, n: usize) -> anyhow::Result<()> {
    let http = http_client();
    let tok = token(&target.secret, "sender");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while tally.warm.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} subscribers became live",
                tally.warm.load(Ordering::SeqCst)
            );
        }
        tally.warm.store(0, Ordering::SeqCst);
        gql(
            &http,
            target,
            &tok,
            CREATE,
            json!({ "t": format!("warmup:{i}") }),
        )
        .await?;
        i += 1;
        tokio::time::sleep(Duration::from_millis(500 + n as u64 / 20)).await;
    }
    // Let the last warm-up events drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Writes `events` posts (at `rate` per second, or each as soon as the last one
/// is answered) from a thread and runtime of their own: on the generator's one
/// core the writer would otherwise wait behind thousands of subscriber reads, and
/// the server would be sent its events late. Returns the mutation latencies.
pub(crate) async fn send_events(
    target: Target,
    events: usize,
    rate: f64,
) -> anyhow::Result<Histogram<u64>> {
    send_events_noting(target, events, rate, None).await
}

/// [`send_events`], noting each write's send time (nanoseconds) at its index
/// in `sent` when given.
pub(crate) async fn send_events_noting(
    target: Target,
    events: usize,
    rate: f64,
    sent: Option<Arc<Vec<AtomicU64>>>,
) -> anyhow::Result<Histogram<u64>> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sender".into())
        .spawn(move || {
            let sent = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("the sender's runtime")
                .and_then(|rt| {
                    rt.block_on(async move {
                        let http = http_client();
                        let tok = token(&target.secret, "sender");
                        let mut mutation = hist();
                        let clock = Instant::now();
                        for i in 0..events {
                            if rate > 0.0 {
                                let due = Duration::from_secs_f64(i as f64 / rate);
                                if let Some(wait) = due.checked_sub(clock.elapsed()) {
                                    tokio::time::sleep(wait).await;
                                }
                            }
                            let at = now_nanos();
                            if let Some(slot) = sent.as_ref().and_then(|s| s.get(i)) {
                                slot.store(at as u64, Ordering::SeqCst);
                            }
                            let (_, took) = gql(
                                &http,
                                &target,
                                &tok,
                                CREATE,
                                json!({ "t": format!("bench:{i}:{at}") }),
                            )
                            .await?;
                            let _ = mutation.record(took.as_micros().max(1) as u64);
                        }
                        anyhow::Ok(mutation)
                    })
                });
            let _ = done.send(sent);
        })?;
    result.await.context("the sender thread died")?
}

pub async fn fanout(
    target: &Target,
    subscribers: usize,
    events: usize,
    rate: f64,
    transport: &str,
    timeout: u64,
) -> anyhow::Result<Value> {
    let tally = Tally::new();
    open_subscribers(target, subscribers, transport, tally.clone())
        .await
        .context("opening subscribers")?;
    warm_up(target, &tally, subscribers).await?;
    let cpu_before = target.pid.and_then(cpu_seconds);
    let started = now_nanos();
    let mutation = send_events(target.clone(), events, rate).await?;
    let expected = subscribers * events;
    let received = tally
        .wait_for(
            expected,
            Duration::from_secs(timeout),
            Duration::from_secs(10),
        )
        .await;
    // Server CPU per delivery does not depend on how the writes interleave with
    // the fan-out, which moves the wall-clock figure from run to run.
    let cpu = match (cpu_before, target.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    let end = tally.last_at.load(Ordering::Relaxed) as u128;
    let seconds = (end.saturating_sub(started)) as f64 / 1e9;
    let latency = tally.merged();
    Ok(json!({
        "target": target.name, "scenario": if rate > 0.0 { "latency" } else { "fanout" }, "transport": transport,
        "subscribers": subscribers, "events": events, "rate": rate,
        "expected": expected, "received": received, "missing": expected.saturating_sub(received),
        "seconds": seconds, "deliveries_per_s": if seconds > 0.0 { received as f64 / seconds } else { 0.0 },
        "latency_ms": ms(&latency.arrived), "read_latency_ms": ms(&latency.read), "mutation_ms": ms(&mutation),
        "server_cpu_s": cpu, "deliveries_per_cpu_s": cpu.map(|c| received as f64 / c),
    }))
}

pub async fn idle(target: &Target, connections: usize, transport: &str) -> anyhow::Result<Value> {
    let pid = target.pid.context("idle needs --pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid).context("reading the server's memory")?;
    let tally = Tally::new();
    open_subscribers(target, connections, transport, tally.clone())
        .await
        .context("opening connections")?;
    warm_up(target, &tally, connections).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(pid).context("reading the server's memory")?;
    Ok(json!({
        "target": target.name, "scenario": "idle", "transport": transport, "connections": connections,
        "rss_before_mib": before as f64 / 1048576.0, "rss_after_mib": after as f64 / 1048576.0,
        "bytes_per_connection": (after.saturating_sub(before)) as f64 / connections as f64,
    }))
}

pub async fn connect(
    target: &Target,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let latency = Arc::new(Mutex::new(hist()));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        // Taken before the task exists (see `open_subscribers`).
        let permit = gate.clone().acquire_owned().await?;
        let (target, latency) = (target.clone(), latency.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let tok = token(&target.secret, &format!("c-{i}"));
            let mut ws = ws_open(&target, target.sources[i % target.sources.len()], &tok).await?;
            ws_subscribe(&mut ws, "1", SUBSCRIPTION).await?;
            let _ = latency
                .lock()
                .await
                .record(t.elapsed().as_micros().max(1) as u64);
            let _ = futures_util::SinkExt::close(&mut ws).await;
            anyhow::Ok(())
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let latency = latency.lock().await;
    Ok(json!({
        "target": target.name, "scenario": "connect", "connections": connections, "concurrency": concurrency, "failed": failed,
        "seconds": seconds, "connections_per_s": (connections - failed) as f64 / seconds, "latency_ms": ms(&latency),
    }))
}

/// Mixed create/list/get (`writes`), or list/get only, at a concurrency.
pub async fn crud(
    target: &Target,
    concurrency: usize,
    seconds: u64,
    writes: bool,
) -> anyhow::Result<Value> {
    let http = http_client();
    let tok = token(&target.secret, "crud");
    let (seed, _) = gql(&http, target, &tok, CREATE, json!({ "t": "seed" })).await?;
    let id = seed["data"]["createPost"]["id"]
        .as_str()
        .context("created id")?
        .to_string();
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (http, target, tok, id) = (http.clone(), target.clone(), tok.clone(), id.clone());
        workers.push(tokio::spawn(async move {
            let mut h = hist();
            let mut errors = 0u64;
            let mut i = w;
            while Instant::now() < stop {
                let r = match i % 3 {
                    0 if writes => {
                        gql(
                            &http,
                            &target,
                            &tok,
                            CREATE,
                            json!({ "t": format!("crud {i}") }),
                        )
                        .await
                    }
                    0 | 1 => {
                        gql(
                            &http,
                            &target,
                            &tok,
                            "{ posts(limit: 20) { id title } }",
                            json!({}),
                        )
                        .await
                    }
                    _ => {
                        gql(
                            &http,
                            &target,
                            &tok,
                            "query($id: ID!) { post(id: $id) { id title } }",
                            json!({ "id": id }),
                        )
                        .await
                    }
                };
                match r {
                    Ok((_, took)) => {
                        let _ = h.record(took.as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
                i += concurrency;
            }
            (h, errors)
        }));
    }
    let mut all = hist();
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await?;
        let _ = all.add(&h);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "target": target.name, "scenario": if writes { "crud" } else { "reads" }, "concurrency": concurrency, "seconds": elapsed,
        "requests": all.len(), "errors": errors, "requests_per_s": all.len() as f64 / elapsed, "latency_ms": ms(&all),
    }))
}

/// Creates only, from `concurrency` writers spread over every instance given
/// (`--url` and `--subscribe-urls`), for `seconds`: writes/s and latency.
pub async fn writes(target: &Target, concurrency: usize, seconds: u64) -> anyhow::Result<Value> {
    let http = http_client();
    let tok = token(&target.secret, "writes");
    let commits_before = commits(&http, target).await;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (http, target, tok) = (http.clone(), target.for_subscriber(w), tok.clone());
        workers.push(tokio::spawn(async move {
            let mut h = hist();
            let mut errors = 0u64;
            let mut i = 0usize;
            while Instant::now() < stop {
                let r = gql(
                    &http,
                    &target,
                    &tok,
                    CREATE,
                    json!({ "t": format!("w{w} {i}") }),
                )
                .await;
                match r {
                    Ok((_, took)) => {
                        let _ = h.record(took.as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (h, errors)
        }));
    }
    let mut all = hist();
    let mut errors = 0;
    for w in workers {
        let (h, e) = w.await?;
        let _ = all.add(&h);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Commits per second beside writes per second (livegate's /metrics; a peer has none).
    let commits_per_s = match (commits_before, commits(&http, target).await) {
        (Some(a), Some(b)) => json!(b.saturating_sub(a) as f64 / elapsed),
        _ => Value::Null,
    };
    Ok(json!({
        "target": target.name, "scenario": "writes", "instances": target.subscribe_urls.len() + 1,
        "concurrency": concurrency, "seconds": elapsed,
        "requests": all.len(), "errors": errors, "writes_per_s": all.len() as f64 / elapsed, "latency_ms": ms(&all),
        "commits_per_s": commits_per_s,
    }))
}

/// `livegate_write_commits_total` summed over every instance of `target`, or
/// None where an instance has no such metric (the peers).
async fn commits(http: &reqwest::Client, target: &Target) -> Option<u64> {
    let mut total = 0;
    for url in std::iter::once(&target.url).chain(&target.subscribe_urls) {
        let metrics = url.trim_end_matches("/graphql").to_string() + "/metrics";
        let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("livegate_write_commits_total "))?
            .trim()
            .parse::<f64>()
            .ok()? as u64;
    }
    Some(total)
}
