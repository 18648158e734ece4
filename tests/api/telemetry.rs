//! OpenTelemetry traces (`--otel-endpoint`): the binary exports a span per
//! GraphQL operation to a local OTLP/HTTP collector, as a child of the
//! caller's `traceparent`, named by the operation, marked as an error when
//! the operation failed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;
use serde_json::json;

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/app.toml");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// The spans a collector received, with their resource's `service.name`.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

impl Collector {
    async fn start(&self) -> String {
        let spans = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref()?.value.clone())
                            .map(|v| match v {
                                AnyValue::StringValue(s) => s,
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                spans.0.lock().expect("lock").push((service.clone(), span));
                            }
                        }
                    }
                }
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn named(&self, name: &str) -> Option<(String, Span)> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .find(|(_, s)| s.name == name)
            .cloned()
    }
}

/// The server process, killed when dropped (a failing test stops it too).
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn operations_are_exported_as_spans_of_the_callers_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "--otel-endpoint",
            &endpoint,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app",
            APP,
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.path().join("live.db").display()))
        .env("LIVEGATE_JWT_SECRET", crate::harness::TEST_SECRET)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    // Killed if the test fails before it stops the server itself.
    let mut child = Running(Some(child));
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    let url = line
        .trim()
        .strip_prefix("livegate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let client = reqwest::Client::new();
    let ask = |body: serde_json::Value, traceparent: Option<String>| {
        let mut req = client.post(&url).json(&body);
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        async move { req.send().await.expect("request").status() }
    };
    let traced = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    ask(
        json!({ "query": "query Count { postsCount }", "operationName": "Count" }),
        Some(traced),
    )
    .await;
    ask(
        json!({ "query": "query Broken { nope }", "operationName": "Broken" }),
        None,
    )
    .await;

    // A signed-in request with a secret in its variables and a very long
    // operation name; and a name the document does not have.
    let now = chrono::Utc::now().timestamp();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "otel-user", "iat": now, "exp": now + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(crate::harness::TEST_SECRET.as_bytes()),
    )
    .expect("sign");
    let long = "L".repeat(5000);
    let status = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({
            "query": format!("query {long}($t: String) {{ postsCount(where: {{ title: {{ eq: $t }} }}) }}"),
            "operationName": long,
            "variables": { "t": "SECRET-VALUE" },
        }))
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status.as_u16(), 200);
    ask(
        json!({ "query": "query Real { postsCount }", "operationName": "Made up" }),
        None,
    )
    .await;

    let mut found = None;
    for _ in 0..100 {
        if let (Some(count), Some(broken)) = (
            collector.named("query Count"),
            collector.named("query Broken"),
        ) {
            found = Some((count, broken));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ((service, count), (_, broken)) = found.unwrap_or_else(|| {
        let names: Vec<String> = collector
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, s)| format!("{} {:?}", s.name, s.attributes))
            .collect();
        panic!("no spans for both operations within 10 s; got {names:?}")
    });
    assert_eq!(service, "livegate");
    assert_eq!(hex(&count.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&count.parent_span_id),
        PARENT_ID,
        "the caller's span is its parent"
    );
    assert_eq!(count.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&count, "graphql.operation.type").as_deref(),
        Some("query")
    );
    assert_eq!(
        attribute(&count, "graphql.operation.name").as_deref(),
        Some("Count")
    );
    assert_ne!(
        count.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_ne!(
        hex(&broken.trace_id),
        TRACE_ID,
        "no traceparent: a trace of its own"
    );
    assert!(broken.parent_span_id.is_empty());
    assert_eq!(
        broken.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "a failed operation is an error span"
    );
    // The long name is cut; a name the document lacks is not recorded.
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = collector
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, s)| s.clone())
            .collect::<Vec<_>>();
        if spans.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut = spans
        .iter()
        .find(|s| s.name.starts_with("query LLL"))
        .unwrap_or_else(|| {
            panic!(
                "no span of the long operation: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(cut.name, format!("query {}", "L".repeat(100)));
    assert!(
        spans.iter().all(|s| !s.name.contains("Made up")
            && attribute(s, "graphql.operation.name").as_deref() != Some("Made up")),
        "a name the document lacks is not recorded"
    );
    // Nothing of the request's credentials or variables is exported.
    let everything = format!("{spans:?}");
    assert!(
        !everything.contains("SECRET-VALUE"),
        "variables leaked: {everything}"
    );
    assert!(!everything.contains(&token), "the token leaked");
    assert!(
        !everything.to_ascii_lowercase().contains("authorization"),
        "a header leaked"
    );

    let mut child = child.0.take().expect("the server");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait()).await;
    assert!(
        matches!(exited, Ok(Ok(code)) if code.success()),
        "{exited:?}"
    );
}
