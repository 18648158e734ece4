//! `loadgen`: drives one GraphQL server (livegate or a peer) through a scenario and
//! prints one JSON result. `bench/run` starts each target, pins it, and calls this
//! per scenario; `loadgen report` turns the results into a markdown table.

mod abuse;
mod client;
mod flood;
mod hooks;
mod live;
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
    /// Other instances' endpoints: subscribers are spread over `--url` and
    /// these in turn (several instances on one database), while writes go to
    /// `--url` alone.
    #[arg(long, value_delimiter = ',')]
    pub subscribe_urls: Vec<String>,
    /// Receive the server's webhook trigger calls on 127.0.0.1:PORT (the
    /// server's trigger must point there): the result gains `webhooks`, the
    /// calls, their rate and their delay after the change's commit.
    #[arg(long)]
    pub webhook_port: Option<u16>,
}

impl Target {
    /// The endpoint subscriber `i` connects to.
    pub fn for_subscriber(&self, i: usize) -> Target {
        let mut t = self.clone();
        let n = self.subscribe_urls.len() + 1;
        if !i.is_multiple_of(n) {
            t.url = self.subscribe_urls[i % n - 1].clone();
        }
        t
    }
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
    /// Live queries (livegate only): N clients keeping the newest post up to
    /// date under paced writes, as `--cohorts` distinct live queries
    /// (`--mode live`) or by re-running the query on each `changes` hint
    /// (`--mode refetch`): results/s, latency, CPU, runs per change.
    Live {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// How many distinct live queries the clients hold (1: all the same).
        #[arg(long, default_value_t = 1)]
        cohorts: usize,
        #[arg(long, default_value_t = 50)]
        events: usize,
        /// Writes per second.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// live or refetch.
        #[arg(long, default_value = "live")]
        mode: String,
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
    /// Lists and gets only (after one seed write), at a concurrency: requests/s
    /// and latency.
    Reads {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Creates only, at a concurrency, spread over `--url` and `--subscribe-urls`
    /// (several instances): writes/s and latency.
    Writes {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Malformed, oversized, truncated, out-of-order and binary traffic over many
    /// connections while a well-behaved subscriber must receive every event:
    /// prints a JSON summary and fails on a crash, a missed event or memory
    /// beyond the bound.
    Abuse {
        #[command(flatten)]
        target: Target,
        /// Malformed frames and requests to send in all.
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
        /// Abusive connections open at once.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Stop the abuse after this many seconds even if not all frames were sent.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Fail when the server's resident memory exceeds this many MiB. The
        /// server buffers at most one message (64 KiB) or body (2 MiB) per
        /// connection: 200 connections all at a full body are about 400 MiB on
        /// top of a few tens at rest, so a server that holds on to what it was
        /// sent (100,000 frames, gigabytes) crosses 512 while one that stays
        /// within its limits does not.
        #[arg(long, default_value_t = 512)]
        max_rss_mib: u64,
        /// Posts the well-behaved writer creates per second.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Fail on a 5xx answer or an INTERNAL error code too (by default they
        /// are counted and listed, not fatal).
        #[arg(long)]
        strict: bool,
    },
    /// Plain-query and realtime-delivery latency without and then during a
    /// flood of concurrent `signUp` mutations (livegate only).
    SignupFlood {
        #[command(flatten)]
        target: Target,
        /// Seconds of each phase (without, then with the flood).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Concurrent sign-up requests during the flood.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Subscribers on postChanged whose delivery latency is measured.
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Posts written (and delivered) per second in each phase.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
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
    let webhook_port = match &cli.command {
        Command::Fanout { target, .. }
        | Command::Writes { target, .. }
        | Command::Crud { target, .. } => target.webhook_port,
        _ => None,
    };
    let receiver = match webhook_port {
        Some(port) => Some(hooks::Receiver::start(port).await?),
        None => None,
    };
    let mut result = match cli.command {
        Command::Fanout {
            target,
            subscribers,
            events,
            rate,
            transport,
            timeout,
        } => scenarios::fanout(&target, subscribers, events, rate, &transport, timeout).await?,
        Command::Live {
            target,
            subscribers,
            cohorts,
            events,
            rate,
            mode,
            timeout,
        } => live::live(&target, subscribers, cohorts, events, rate, &mode, timeout).await?,
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
        } => scenarios::crud(&target, concurrency, seconds, true).await?,
        Command::Reads {
            target,
            concurrency,
            seconds,
        } => scenarios::crud(&target, concurrency, seconds, false).await?,
        Command::Writes {
            target,
            concurrency,
            seconds,
        } => scenarios::writes(&target, concurrency, seconds).await?,
        Command::Abuse {
            target,
            frames,
            connections,
            seconds,
            max_rss_mib,
            rate,
            strict,
        } => {
            let plan = abuse::Plan {
                frames,
                connections,
                seconds,
                max_rss_mib,
                rate,
                strict,
            };
            let (summary, passed) = abuse::run(&target, plan).await?;
            println!("{}", serde_json::to_string(&summary)?);
            if !passed {
                anyhow::bail!("abuse run failed: {}", summary["failures"]);
            }
            return Ok(());
        }
        Command::SignupFlood {
            target,
            seconds,
            concurrency,
            subscribers,
            rate,
        } => flood::signup_flood(&target, seconds, concurrency, subscribers, rate).await?,
        Command::Report { files } => {
            print!("{}", report::markdown(&files)?);
            return Ok(());
        }
    };
    if let Some(r) = receiver {
        result["webhooks"] = r.settle(std::time::Duration::from_secs(120)).await;
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
