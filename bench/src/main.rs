//! `loadgen`: drives one GraphQL server (livegate or a peer) through a scenario and
//! prints one JSON result. `bench/run` starts each target, pins it, and calls this
//! per scenario; `loadgen report` turns the results into a markdown table.

mod client;
mod report;
mod scenarios;
mod stamped;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for GraphQL subscription servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where and how to reach the server under test.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Name in the report (livegate, yoga, mercurius).
    #[arg(long)]
    pub name: String,
    /// The GraphQL endpoint, e.g. http://127.0.0.1:4000/graphql.
    #[arg(long)]
    pub url: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, default_value = "bench-secret-bench-secret-bench-secret-0123")]
    pub secret: String,
    /// The server's PID, for memory readings.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Loopback source addresses to spread connections over. Ports run out past
    /// ~28k per address, and well before that the kernel's search for a free one
    /// among those still in TIME_WAIT from the scenario before can stall a
    /// connect() for seconds (the server then closes it, 4408): sixteen keep
    /// that search short.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9,127.0.0.10,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,127.0.0.15,127.0.0.16"
    )]
    pub sources: Vec<IpAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N subscribers, M mutations: deliveries/s, missing deliveries, latency.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        events: usize,
        /// Events per second (0: as fast as the server takes them).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// ws (graphql-transport-ws) or sse (GraphQL over SSE, distinct connections).
        #[arg(long, default_value = "ws")]
        transport: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// N idle connections with one subscription each: server memory per connection.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value = "ws")]
        transport: String,
    },
    /// Connections per second through init, ack and a first subscription.
    Connect {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Mixed create/list/get over HTTP at a concurrency: requests/s and latency.
    Crud {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Markdown table from result files.
    Report {
        /// JSON result files (one result per line).
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fanout {
            target,
            subscribers,
            events,
            rate,
            transport,
            timeout,
        } => scenarios::fanout(&target, subscribers, events, rate, &transport, timeout).await?,
        Command::Idle {
            target,
            connections,
            transport,
        } => scenarios::idle(&target, connections, &transport).await?,
        Command::Connect {
            target,
            connections,
            concurrency,
        } => scenarios::connect(&target, connections, concurrency).await?,
        Command::Crud {
            target,
            concurrency,
            seconds,
        } => scenarios::crud(&target, concurrency, seconds).await?,
        Command::Report { files } => {
            print!("{}", report::markdown(&files)?);
            return Ok(());
        }
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
