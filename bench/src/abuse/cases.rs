//! The abuse mix: each worker holds one abusive connection (or request) at a
//! time and takes the next case from a shared counter until the frame budget is
//! spent. Case `i` is kind `KINDS[i % KINDS.len()]`, varied by `i` within the kind.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::tally::Tally;
use super::{http, ws};
use crate::Target;
use crate::client::{server_addr, token};

/// Every kind of abuse, by name (the names in the summary).
pub const KINDS: &[&str] = &[
    "ws_invalid_json",
    "ws_non_object",
    "ws_unknown_type",
    "ws_subscribe_before_init",
    "ws_duplicate_id",
    "ws_huge_id",
    "ws_oversized",
    "ws_binary",
    "ws_deep_document",
    "ws_where_not_nesting",
    "ws_where_or_terms",
    "ws_rapid_init",
    "ws_out_of_order",
    "ws_abrupt_disconnect",
    "ws_garbage_bytes",
    "tcp_garbage_mid_handshake",
    "sse_bad_accept",
    "sse_bad_last_event_id",
    "sse_bad_reservation_token",
    "sse_put_delete_misuse",
    "sse_half_sent_body",
    "sse_where_or_terms",
    "http_invalid_json",
    "http_wrong_content_type",
    "http_huge_body",
    "http_truncated",
    "http_invalid_utf8",
    "http_mutation_over_get",
    "http_deep_document",
    "http_where_or_terms",
    "http_where_not_nesting",
];

/// A huge body is 3 MiB on the wire: one case in this many of that kind sends
/// one (the others send a body just over the document limit), so that the run
/// measures the server, not loopback bandwidth.
const HUGE_EVERY: u64 = 10;

/// What every case needs.
pub struct Ctx {
    pub target: Target,
    pub tally: Arc<Tally>,
    pub addr: SocketAddr,
    pub path: String,
    /// One HTTP client per loopback source address.
    http: Vec<reqwest::Client>,
    /// A valid token (half the abusive clients authenticate, half are anonymous).
    pub token: String,
    budget: u64,
    next: AtomicU64,
    /// The big documents and variables, built once.
    pub p: Payloads,
}

/// Big documents and `where` values, built once and shared by every case.
pub struct Payloads {
    /// `{ __typename(x: [[[…]]]) }`, 2,000 lists deep.
    pub deep_list: String,
    /// A selection set 2,000 deep.
    pub deep_selection: String,
    /// `where` literal with 2,000 nested `not`s.
    pub not_literal: String,
    /// The same as JSON (a variable's value).
    pub not_json: String,
    /// `where` literal `or` of 20,000 terms (beyond the document size limit).
    pub or_literal: String,
    /// `where` JSON `or` of 20,000 terms.
    pub or_json: String,
    /// `where` JSON `or` of 2,500 terms (fits a 64 KiB WebSocket message).
    pub or_json_small: String,
}

impl Payloads {
    fn new() -> Payloads {
        Payloads {
            deep_list: deep_list(2000),
            deep_selection: deep_selection(2000),
            not_literal: not_where(2000),
            not_json: not_where_json(2000).to_string(),
            or_literal: or_where(20_000),
            or_json: or_where_json(20_000).to_string(),
            or_json_small: or_where_json(2_500).to_string(),
        }
    }
}

impl Ctx {
    pub fn new(target: &Target, tally: Arc<Tally>, budget: u64) -> anyhow::Result<Ctx> {
        let (addr, path) = server_addr(&target.url)?;
        let http = target
            .sources
            .iter()
            .map(|s| {
                reqwest::Client::builder()
                    .local_address(*s)
                    .pool_max_idle_per_host(64)
                    .timeout(Duration::from_secs(15))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ctx {
            target: target.clone(),
            tally,
            addr,
            path,
            http,
            token: token(&target.secret, "abuser"),
            budget,
            next: AtomicU64::new(0),
            p: Payloads::new(),
        })
    }

    pub fn http(&self, i: u64) -> &reqwest::Client {
        &self.http[i as usize % self.http.len()]
    }

    pub fn source(&self, i: u64) -> IpAddr {
        self.target.sources[i as usize % self.target.sources.len()]
    }

    /// `http://addr` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The token for case `i`: every other case is anonymous.
    pub fn token_for(&self, i: u64) -> Option<&str> {
        i.is_multiple_of(2).then_some(self.token.as_str())
    }
}

/// One abusive client: runs cases until the budget or the deadline is reached.
pub async fn worker(ctx: Arc<Ctx>, _w: usize, deadline: Instant) {
    loop {
        if Instant::now() > deadline
            || ctx.tally.frames.load(Ordering::Relaxed) >= ctx.budget
            || ctx.tally.server_died.load(Ordering::Relaxed)
        {
            return;
        }
        let i = ctx.next.fetch_add(1, Ordering::Relaxed);
        let kind = KINDS[i as usize % KINDS.len()];
        // The variant within the kind.
        let v = i / KINDS.len() as u64;
        let ran = tokio::time::timeout(Duration::from_secs(30), one(&ctx, kind, i, v)).await;
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx
                .tally
                .outcome(kind, format!("client error: {}", short(&e))),
            Err(_) => ctx.tally.outcome(kind, "no end in 30 s".into()),
        }
    }
}

/// The first line of an error chain, without addresses or numbers that would
/// make every outcome distinct.
fn short(e: &anyhow::Error) -> String {
    let s = e.root_cause().to_string();
    let s: String = s.chars().take(60).collect();
    s.chars().filter(|c| !c.is_ascii_digit()).collect()
}

async fn one(ctx: &Ctx, kind: &'static str, i: u64, v: u64) -> anyhow::Result<()> {
    match kind {
        k if k.starts_with("ws_") || k.starts_with("tcp_") => ws::case(ctx, k, i, v).await,
        k if k == "http_huge_body" => http::huge(ctx, k, i, v.is_multiple_of(HUGE_EVERY)).await,
        k => http::case(ctx, k, i, v).await,
    }
}

/// A small deterministic generator of garbage bytes (no rand dependency).
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `{ __typename(x: [[[ … 1 … ]]]) }`, `depth` lists deep.
fn deep_list(depth: usize) -> String {
    format!(
        "{{ __typename(x: {}1{}) }}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// `{ posts { author { … } } }`-like selection `depth` deep (fields that do not exist).
fn deep_selection(depth: usize) -> String {
    format!("{}{}", "{ a ".repeat(depth), "}".repeat(depth))
}

/// A `PostWhere` literal `depth` `not`s deep.
fn not_where(depth: usize) -> String {
    format!(
        "{}{{ title: {{ eq: \"x\" }} }}{}",
        "{ not: ".repeat(depth),
        " }".repeat(depth)
    )
}

/// The same as a JSON value (for variables).
fn not_where_json(depth: usize) -> serde_json::Value {
    let mut w = serde_json::json!({ "title": { "eq": "x" } });
    for _ in 0..depth {
        w = serde_json::json!({ "not": w });
    }
    w
}

/// A `PostWhere` JSON value: an `or` of `terms` terms.
fn or_where_json(terms: usize) -> serde_json::Value {
    let terms: Vec<serde_json::Value> = (0..terms)
        .map(|k| serde_json::json!({ "title": { "eq": format!("t{k}") } }))
        .collect();
    serde_json::json!({ "or": terms })
}

/// The same as a literal.
fn or_where(terms: usize) -> String {
    let terms: Vec<String> = (0..terms)
        .map(|k| format!("{{ title: {{ eq: \"t{k}\" }} }}"))
        .collect();
    format!("{{ or: [{}] }}", terms.join(", "))
}
