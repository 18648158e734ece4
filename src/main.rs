//! The `livegate` binary: logging, then the command line in [`livegate::cli`].

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LIVEGATE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("livegate=info,warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match livegate::cli::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
