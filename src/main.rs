//! The `livegate` binary: the command line in [`livegate::cli`], logging as it
//! asks, then its command.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// mimalloc instead of the system allocator: under CRUD load glibc's malloc and
/// free were an eighth of the server's CPU (many small, short-lived objects
/// moving between the request and delivery runtimes' threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = livegate::cli::Cli::from_args();
    let filter = EnvFilter::try_from_env("LIVEGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("livegate=info,warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        livegate::cli::LogFormat::Json => logs.json().with_filter(filter).boxed(),
        livegate::cli::LogFormat::Text => logs.with_filter(filter).boxed(),
    };
    // Traces have their own filter (their target only), apart from the logs'.
    let (traces, exporter) = match cli.otel_endpoint.as_deref().filter(|e| !e.is_empty()) {
        None => (None, None),
        Some(endpoint) => match livegate::telemetry::layer(endpoint) {
            Ok((layer, exporter)) => (Some(layer), Some(exporter)),
            Err(e) => {
                eprintln!("livegate: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    let code = match livegate::cli::run_cli(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    code
}
