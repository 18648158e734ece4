//! The `livegate` binary: the command line in [`livegate::cli`], logging as it
//! asks, then its command.

use tracing_subscriber::EnvFilter;

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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        livegate::cli::LogFormat::Json => logs.json().init(),
        livegate::cli::LogFormat::Text => logs.init(),
    }
    match livegate::cli::run_cli(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
