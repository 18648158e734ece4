//! The command line (API.md §6): `serve` (the default), `schema`, `migrate`.
//! Every flag has an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::catalog::Catalog;
use crate::graphql::Limits;
use crate::server::{Config, shutdown_signal, start};
use crate::store::Store;

/// livegate: a declared app file served as a live GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "livegate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// Print the GraphQL SDL generated from the app file.
    Schema(AppArgs),
    /// Apply migrations and reconcile collection tables, then exit.
    Migrate(DbArgs),
}

#[derive(Debug, Clone, Args)]
struct AppArgs {
    /// The app file.
    #[arg(long, env = "LIVEGATE_APP", default_value = "schema/app.toml")]
    app: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct DbArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/livegate.db"
    )]
    database_url: String,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "LIVEGATE_LISTEN", default_value = "0.0.0.0:4000")]
    listen: SocketAddr,
    /// Deepest selection an operation may have.
    #[arg(long, env = "LIVEGATE_MAX_DEPTH", default_value_t = Limits::default().max_depth)]
    max_depth: usize,
    /// Largest complexity (fields selected) an operation may have.
    #[arg(long, env = "LIVEGATE_MAX_COMPLEXITY", default_value_t = Limits::default().max_complexity)]
    max_complexity: usize,
    /// Largest `limit` honoured on list fields.
    #[arg(long, env = "LIVEGATE_MAX_LIMIT", default_value_t = Limits::default().max_list)]
    max_limit: u64,
}

/// Runs the command line.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Schema(args)) => {
            let catalog = Catalog::load(&args.app)?;
            print!(
                "{}",
                crate::graphql::sdl(&catalog).context("building the GraphQL schema")?
            );
            Ok(())
        }
        Some(Command::Migrate(args)) => {
            let catalog = Catalog::load(&args.app.app)?;
            let store = Store::connect(&args.database_url, catalog).await?;
            store.migrate().await.context("applying migrations")?;
            store.reconcile(&args.app.app.display().to_string()).await?;
            println!(
                "migrations applied; collection tables match {}",
                args.app.app.display()
            );
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        listen: args.listen,
        app: args.db.app.app,
        database_url: args.db.database_url,
        limits: Limits {
            max_depth: args.max_depth,
            max_complexity: args.max_complexity,
            max_list: args.max_limit,
        },
    };
    let running = start(config, shutdown_signal()).await?;
    let shown = if running.addr.ip().is_unspecified() {
        format!("localhost:{}", running.addr.port())
    } else {
        running.addr.to_string()
    };
    println!("livegate listening on http://{shown}/graphql");
    running.task.await.context("server task")?
}
