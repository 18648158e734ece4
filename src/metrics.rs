//! Prometheus metrics, held in [`AppState`](crate::app::AppState) (no global
//! recorder): GraphQL requests and their latency by operation type and outcome.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The operation type of a request, or `invalid` when none could be selected.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OpKind {
    query,
    mutation,
    subscription,
    invalid,
}

/// Whether a request had errors.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: OpKind,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: OpKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    protocol: String,
    code: u16,
}

/// Password hashing (argon2 runs for sign-up and sign-in), bounded by
/// [`Hasher`](crate::auth::Hasher).
#[derive(Clone, Default)]
pub struct HashMetrics {
    /// Hashes running now.
    pub running: Gauge,
    /// Requests waiting for a hashing slot now.
    pub waiting: Gauge,
    /// Hashes started.
    pub runs: Counter,
    /// Requests refused (`RATE_LIMITED`) because every slot was taken and the
    /// queue was full, or the wait ran out.
    pub refused: Counter,
}

/// Collection writes (creates, updates, deletes) and the transactions that
/// committed them: fewer transactions than writes when writes share a commit
/// (SQLite's writer takes every write waiting into one).
#[derive(Clone, Default)]
pub struct WriteMetrics {
    /// Collection writes committed.
    pub writes: Counter,
    /// Transactions committed that held collection writes.
    pub commits: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerOutcomeLabels {
    trigger: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: String,
}

/// Webhook triggers: attempts by outcome, and each queue's age.
#[derive(Clone, Default)]
pub struct TriggerMetrics {
    attempts: Family<TriggerOutcomeLabels, Counter>,
    queue_age: Family<TriggerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl TriggerMetrics {
    /// Counts an attempt of `trigger` that ended as `outcome` (`delivered`,
    /// `retried` or `failed`).
    pub fn attempt(&self, trigger: &str, outcome: &str) {
        self.attempts
            .get_or_create(&TriggerOutcomeLabels {
                trigger: trigger.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Sets how long `trigger`'s oldest pending delivery has waited.
    pub fn queue_age(&self, trigger: &str, seconds: f64) {
        self.queue_age
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_string(),
            })
            .set(seconds);
    }
}

/// Live queries: their runs and cohorts.
#[derive(Clone, Default)]
pub struct LiveMetrics {
    /// Runs of live queries (first ones included).
    pub runs: Counter,
    /// Cohorts running.
    pub cohorts: Gauge,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    /// Open realtime connections by protocol.
    connections: Family<ProtocolLabels, Gauge>,
    /// Running subscriptions (all protocols).
    pub subscriptions: Gauge,
    /// Changes committed and published on the bus.
    pub events_published: Counter,
    /// Events delivered to subscribers.
    pub deliveries: Counter,
    closes: Family<CloseLabels, Counter>,
    /// Password hashing.
    pub hashing: HashMetrics,
    /// Collection writes and their commits.
    pub writes: WriteMetrics,
    refusals: Family<ReasonLabels, Counter>,
    /// Webhook triggers.
    pub triggers: TriggerMetrics,
    /// Live queries.
    pub live: LiveMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("livegate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "graphql_requests",
            "GraphQL requests over HTTP, by operation type and outcome",
            requests.clone(),
        );
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL request latency over HTTP, by operation type",
            latency.clone(),
        );
        let connections = Family::<ProtocolLabels, Gauge>::default();
        let subscriptions = Gauge::default();
        let events_published = Counter::default();
        let deliveries = Counter::default();
        let closes = Family::<CloseLabels, Counter>::default();
        registry.register(
            "realtime_connections",
            "Open realtime connections, by protocol",
            connections.clone(),
        );
        registry.register(
            "realtime_subscriptions",
            "Running subscriptions",
            subscriptions.clone(),
        );
        registry.register(
            "events_published",
            "Committed changes published to subscribers",
            events_published.clone(),
        );
        registry.register(
            "deliveries",
            "Events delivered to subscribers",
            deliveries.clone(),
        );
        registry.register(
            "realtime_closes",
            "Realtime connections closed by the server, by protocol and close code",
            closes.clone(),
        );
        let hashing = HashMetrics::default();
        registry.register(
            "password_hashes_running",
            "Password hashes (argon2) running now",
            hashing.running.clone(),
        );
        registry.register(
            "password_hashes_waiting",
            "Sign-ups and sign-ins waiting for a password-hashing slot",
            hashing.waiting.clone(),
        );
        registry.register(
            "password_hashes",
            "Password hashes (argon2) started, for sign-up and sign-in",
            hashing.runs.clone(),
        );
        registry.register(
            "password_hashes_refused",
            "Sign-ups and sign-ins refused because password hashing was saturated",
            hashing.refused.clone(),
        );
        let writes = WriteMetrics::default();
        registry.register(
            "writes",
            "Collection writes (creates, updates, deletes) committed",
            writes.writes.clone(),
        );
        registry.register(
            "write_commits",
            "Transactions committed holding collection writes (fewer than writes when writes share a commit)",
            writes.commits.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "realtime_refused",
            "Realtime connections refused at a connection cap, by reason (total, per_address)",
            refusals.clone(),
        );
        let triggers = TriggerMetrics::default();
        registry.register(
            "trigger_attempts",
            "Webhook attempts of triggers, by trigger and outcome (delivered, retried, failed)",
            triggers.attempts.clone(),
        );
        registry.register(
            "trigger_queue_age_seconds",
            "How long each trigger's oldest pending delivery has waited",
            triggers.queue_age.clone(),
        );
        let live = LiveMetrics::default();
        registry.register(
            "live_query_runs",
            "Runs of live queries (one per cohort: identical live queries run once), first runs included",
            live.runs.clone(),
        );
        registry.register(
            "live_query_cohorts",
            "Live query cohorts running (identical live queries of viewers who see the same rows)",
            live.cohorts.clone(),
        );
        Metrics {
            live,
            triggers,
            hashing,
            writes,
            registry,
            requests,
            latency,
            connections,
            subscriptions,
            events_published,
            deliveries,
            closes,
            refusals,
        }
    }
}

impl Metrics {
    /// Records one finished GraphQL request.
    pub fn observe(&self, operation: OpKind, ok: bool, elapsed: Duration) {
        let outcome = if ok { Outcome::ok } else { Outcome::error };
        self.requests
            .get_or_create(&RequestLabels { operation, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The open-connections gauge of `protocol`.
    pub fn connections(&self, protocol: &str) -> Gauge {
        self.connections
            .get_or_create(&ProtocolLabels {
                protocol: protocol.to_string(),
            })
            .clone()
    }

    /// Counts a connection the server closed with `code`.
    pub fn closed(&self, protocol: &str, code: u16) {
        self.closes
            .get_or_create(&CloseLabels {
                protocol: protocol.to_string(),
                code,
            })
            .inc();
    }

    /// Counts a realtime connection refused at a cap (`reason`: which one).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
