//! OpenTelemetry traces (`--otel-endpoint`): a span per GraphQL operation
//! over HTTP and per webhook attempt, exported over OTLP/HTTP (protobuf) in
//! batches. (Operations on WebSocket and SSE streams have none: a span that
//! lasts as long as a subscription tells little.)
//!
//! Spans are `tracing` spans of target [`TARGET`], turned into OpenTelemetry
//! spans by `tracing-opentelemetry`. Without `--otel-endpoint` no subscriber
//! is interested in that target, so a span costs a callsite check and nothing
//! more. An incoming W3C `traceparent` header makes the operation's span a
//! child of the caller's trace.
//!
//! The exporter follows the usual `OTEL_*` variables too (`OTEL_SERVICE_NAME`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, ...).

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of the spans exported.
pub const TARGET: &str = "otel";

/// Set once export is on: reading `traceparent` is then worth its cost.
static EXPORTING: OnceLock<()> = OnceLock::new();

/// The export pipeline: its `tracing` layer, and the provider to flush at exit.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends the spans still buffered; called once, at exit.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("livegate: flushing OpenTelemetry spans failed: {e}");
        }
    }
}

/// The layer that exports spans of [`TARGET`] to the OTLP/HTTP collector at
/// `endpoint` (a base URL such as `http://localhost:4318`; `/v1/traces` is
/// added), and the exporter to shut down at exit.
pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, Exporter)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry_otlp::WithHttpConfig;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let client = OnRuntime {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("traces are set up inside the runtime"))?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .build()
        .map_err(|e| anyhow::anyhow!("--otel-endpoint {endpoint}: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "livegate".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("livegate");
    let _ = EXPORTING.set(());
    let filter =
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO);
    // Without context activation a span stays a builder until it closes, so
    // its name and status can be set once the operation is known and done.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_threads(false)
        .with_filter(filter);
    Ok((layer, Exporter { provider }))
}

/// Makes `span` a child of the trace a request's `traceparent` header names,
/// when spans are exported and the header is there.
pub fn follow(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if EXPORTING.get().is_none() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
    let _ = span.set_parent(parent);
}

/// The exporter's HTTP client: the batch processor exports from a thread of
/// its own, without a Tokio reactor, so each request runs on the server's
/// runtime and the thread waits for its answer.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<opentelemetry_http::Bytes>,
    ) -> Result<http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
