//! The `livegate` binary: logging, then the command line in [`livegate::cli`].

use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: under CRUD load glibc's malloc and
/// free were an eighth of the server's CPU (many small, short-lived objects
/// moving between the request and delivery runtimes' threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
