//! The command line (API.md §6): `serve` (the default), `schema` (and `schema --diff`),
//! `migrate`, `token`.
//! Every flag has an environment fallback.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::access::Role;
use crate::auth::{
    AuthConfig, DEFAULT_HASH_QUEUE, Hasher, SIGN_UPS_PER_ADDRESS_PER_MINUTE, Tokens,
    normalize_email,
};
use crate::catalog::Catalog;
use crate::graphql::Limits;
use crate::schema_diff;
use crate::server::{Config, shutdown_signal, start};
use crate::store::Store;
use crate::transport::playground;
use crate::transport::ws::WsConfig;

/// livegate: a declared app file served as a live GraphQL API.
#[derive(Debug, Parser)]
#[command(name = "livegate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// How log lines (on stderr) are written: `text` for people, `json` for log
    /// pipelines (one JSON object a line: timestamp, level, target, fields).
    #[arg(long, global = true, env = "LIVEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export OpenTelemetry traces (a span per GraphQL operation over HTTP and
    /// per webhook attempt) to this OTLP/HTTP collector, e.g.
    /// `http://localhost:4318` (`/v1/traces` is added). Off by default. The
    /// standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS,
    /// OTEL_TRACES_SAMPLER, ...) apply once it is on.
    #[arg(long, global = true, env = "LIVEGATE_OTEL_ENDPOINT")]
    pub otel_endpoint: Option<String>,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// The command line of this process (exits with clap's message on a bad one).
    pub fn from_args() -> Cli {
        Cli::parse()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// Print the GraphQL SDL generated from the app file, or with `--diff OLD`
    /// compare it with OLD and list breaking, dangerous and safe changes.
    Schema(SchemaArgs),
    /// Apply migrations and reconcile collection tables, then exit.
    Migrate(DbArgs),
    /// Mint a development access token for a user (created, without a password,
    /// if missing); the token is the last line printed.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
struct TokenArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// The user's email.
    #[arg(long)]
    email: String,
    /// The role the token carries: user or admin.
    #[arg(long, default_value = "user")]
    role: String,
    /// Slug of the account (created if missing); default: the default account.
    #[arg(long)]
    account: Option<String>,
}

/// Token settings, shared by `serve` and `token`.
#[derive(Debug, Clone, Args)]
struct AuthArgs {
    /// HS256 signing secret, at least 32 bytes. Without one, a secret is generated
    /// into the data folder once.
    #[arg(long, env = "LIVEGATE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key of an outside identity provider (RSA: RS256, EC P-256: ES256).
    #[arg(long, env = "LIVEGATE_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// URL of an outside identity provider's key set (JWKS): keys chosen by the
    /// token's `kid` (RS256, ES256, EdDSA), refetched on an unknown `kid` (at
    /// most every 30 s) and every 10 minutes; the last good set keeps serving.
    #[arg(long, env = "LIVEGATE_JWT_JWKS_URL")]
    jwt_jwks_url: Option<String>,
    /// Required `iss` claim (also written into minted tokens).
    #[arg(long, env = "LIVEGATE_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim (also written into minted tokens).
    #[arg(long, env = "LIVEGATE_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Claim that holds the role (USER or ADMIN).
    #[arg(long, env = "LIVEGATE_JWT_ROLE_CLAIM", default_value = "role")]
    jwt_role_claim: String,
    /// Claim that holds the account id or slug.
    #[arg(long, env = "LIVEGATE_JWT_ACCOUNT_CLAIM", default_value = "account")]
    jwt_account_claim: String,
    /// Claim that holds the email.
    #[arg(long, env = "LIVEGATE_JWT_EMAIL_CLAIM", default_value = "email")]
    jwt_email_claim: String,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "LIVEGATE_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    access_token_ttl: u32,
    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "LIVEGATE_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    refresh_token_ttl: u32,
    /// Folder for generated files (the signing secret when none is set).
    #[arg(long, env = "LIVEGATE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

impl AuthArgs {
    fn config(&self) -> AuthConfig {
        AuthConfig {
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            jwt_jwks_url: self.jwt_jwks_url.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            role_claim: self.jwt_role_claim.clone(),
            account_claim: self.jwt_account_claim.clone(),
            email_claim: self.jwt_email_claim.clone(),
            access_ttl: chrono::Duration::seconds(self.access_token_ttl.into()),
            refresh_ttl: chrono::Duration::seconds(self.refresh_token_ttl.into()),
            data_dir: self.data_dir.clone(),
            ..AuthConfig::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
struct AppArgs {
    /// The app file.
    #[arg(long, env = "LIVEGATE_APP", default_value = "schema/app.toml")]
    app: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct SchemaArgs {
    #[command(flatten)]
    app: AppArgs,
    /// An SDL file clients were built against (e.g. the committed
    /// `schema/schema.graphql`): list what changed from it to the app file's schema,
    /// and exit with 1 when a change breaks those clients.
    #[arg(long, value_name = "OLD.graphql")]
    diff: Option<PathBuf>,
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
    #[command(flatten)]
    auth: AuthArgs,
    /// Address to listen on.
    #[arg(long, env = "LIVEGATE_LISTEN", default_value = "0.0.0.0:4000")]
    listen: SocketAddr,
    /// Deepest selection an operation may have.
    #[arg(long, env = "LIVEGATE_MAX_DEPTH", default_value_t = Limits::default().max_depth)]
    max_depth: usize,
    /// Largest complexity (fields selected) an operation may have.
    #[arg(long, env = "LIVEGATE_MAX_COMPLEXITY", default_value_t = Limits::default().max_complexity)]
    max_complexity: usize,
    /// How long a WebSocket client may take to send `connection_init`, in milliseconds.
    #[arg(
        long,
        env = "LIVEGATE_CONNECTION_INIT_TIMEOUT_MS",
        default_value_t = 3000
    )]
    connection_init_timeout_ms: u64,
    /// Origins whose pages may call the API from a browser (CORS), comma-separated,
    /// e.g. `https://app.example.com,http://localhost:5173`; `*` for any. Default:
    /// none (pages on the server's own origin only, such as the playground).
    #[arg(long, env = "LIVEGATE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// The manifest of persisted documents: a JSON object of id to document, as
    /// graphql-codegen's client preset writes it (`persistedDocuments: true`).
    /// Requests may then name a document by id (`documentId` or
    /// `extensions.persistedQuery.sha256Hash`).
    #[arg(long, env = "LIVEGATE_PERSISTED_DOCUMENTS")]
    persisted_documents: Option<PathBuf>,
    /// Run only the documents of --persisted-documents: any other request is
    /// refused with PERSISTED_QUERY_REQUIRED (for production).
    #[arg(
        long,
        env = "LIVEGATE_ONLY_PERSISTED",
        requires = "persisted_documents"
    )]
    only_persisted: bool,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "LIVEGATE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Events a subscriber may fall behind before its connection is closed (1013)
    /// and it resumes from its cursor.
    #[arg(long, env = "LIVEGATE_BUS_CAPACITY", default_value_t = livegate_bus_default())]
    bus_capacity: usize,
    /// Bytes of results a realtime connection (WebSocket, SSE stream, room
    /// member) may have waiting for a client that does not read before it is
    /// closed (1013, or its SSE stream ends) and resumes from its cursor.
    #[arg(long, env = "LIVEGATE_MAX_BUFFER_BYTES", default_value_t = crate::transport::ws::DEFAULT_MAX_BUFFER_BYTES)]
    max_buffer_bytes: usize,
    /// Largest record, as the JSON of the row stored and published; a larger
    /// create or update is refused (BAD_USER_INPUT). HTTP request bodies may be
    /// twice this (at least 2 MiB), room for a record's escaped text.
    #[arg(long, env = "LIVEGATE_MAX_RECORD_BYTES", default_value_t = Limits::default().max_record_bytes)]
    max_record_bytes: usize,
    /// Most realtime connections open at once (WebSockets, SSE streams and
    /// `/realtime` feeds together); past it new ones get HTTP 503 RATE_LIMITED with
    /// Retry-After. Default: the open-file limit less a reserve for the listener,
    /// the database pool and plain requests (a tenth of it, 64 to 512), so the
    /// process never runs out of descriptors. 0: no cap.
    #[arg(long, env = "LIVEGATE_MAX_CONNECTIONS", default_value_t = crate::transport::slots::default_max_connections())]
    max_connections: usize,
    /// Most realtime connections open at once from one peer address, refused
    /// like the total cap. Default 0 (no cap): behind a proxy or load balancer
    /// every client shares its address; set it when clients connect directly.
    #[arg(long, env = "LIVEGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: usize,
    /// Largest `limit` honoured on list fields.
    #[arg(long, env = "LIVEGATE_MAX_LIMIT", default_value_t = Limits::default().max_list)]
    max_limit: u64,
    /// Longest GraphQL document accepted, in bytes; longer ones are refused before parsing.
    #[arg(long, env = "LIVEGATE_MAX_DOCUMENT_BYTES", default_value_t = Limits::default().max_document_bytes)]
    max_document_bytes: usize,
    /// Password hashes (sign-up, sign-in) run at once; each takes a core and
    /// about 19 MiB. Default: the number of cores.
    #[arg(long, env = "LIVEGATE_PASSWORD_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    password_hash_concurrency: Option<u16>,
    /// Sign-ups and sign-ins that may wait for a password-hashing slot (at most
    /// 5 s); past that they are refused with RATE_LIMITED.
    #[arg(long, env = "LIVEGATE_PASSWORD_HASH_QUEUE", default_value_t = DEFAULT_HASH_QUEUE)]
    password_hash_queue: usize,
    /// Sign-ups allowed per client address per minute.
    #[arg(long, env = "LIVEGATE_SIGN_UPS_PER_MINUTE", default_value_t = SIGN_UPS_PER_ADDRESS_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    sign_ups_per_minute: u32,
}

fn livegate_bus_default() -> usize {
    crate::store::BUS_CAPACITY
}

/// Runs the command line.
pub async fn run() -> anyhow::Result<()> {
    run_cli(Cli::parse()).await
}

/// Runs the command `cli` names.
pub async fn run_cli(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Schema(args)) => schema(args),
        Some(Command::Migrate(args)) => {
            let catalog = Catalog::load(&args.app.app)?;
            let store = Store::connect(&args.database_url, catalog).await?;
            // In turn with instances starting meanwhile (PostgreSQL).
            store
                .exclusively(async {
                    store.migrate().await.context("applying migrations")?;
                    Ok(store.reconcile(&args.app.app.display().to_string()).await?)
                })
                .await?;
            println!(
                "migrations applied; collection tables match {}",
                args.app.app.display()
            );
            Ok(())
        }
        Some(Command::Token(args)) => token(args).await,
    }
}

fn schema(args: SchemaArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load(&args.app.app)?;
    let sdl = crate::graphql::sdl(&catalog).context("building the GraphQL schema")?;
    // Written, not print!ed: a closed pipe (`livegate schema | head`) is an error
    // to report, not a panic.
    let mut out = std::io::stdout().lock();
    let Some(old_path) = args.diff else {
        out.write_all(sdl.as_bytes())?;
        return Ok(());
    };
    let old = std::fs::read_to_string(&old_path)
        .with_context(|| format!("cannot read {}", old_path.display()))?;
    let new_name = format!("the schema of {}", args.app.app.display());
    let changes = schema_diff::diff(&old_path.display().to_string(), &old, &new_name, &sdl)?;
    let report = schema_diff::Report(&changes);
    writeln!(out, "changes from {} to {new_name}:", old_path.display())?;
    write!(out, "{report}")?;
    let breaking = report.count(schema_diff::Severity::Breaking);
    if breaking > 0 {
        anyhow::bail!(
            "{breaking} breaking change(s): clients built against {} may fail",
            old_path.display()
        );
    }
    Ok(())
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let role =
        Role::parse(&args.role).ok_or_else(|| anyhow::anyhow!("--role must be user or admin"))?;
    let email = normalize_email(&args.email).map_err(|m| anyhow::anyhow!("--email {m}"))?;
    let catalog = Catalog::load(&args.db.app.app)?;
    let store = Store::connect(&args.db.database_url, catalog).await?;
    store
        .exclusively(async { store.migrate().await.context("applying migrations") })
        .await?;
    let slug = args
        .account
        .as_deref()
        .unwrap_or(crate::store::DEFAULT_ACCOUNT);
    let account = store.ensure_account(slug).await?;
    let user = store.ensure_user(&account, &email, role.as_str()).await?;
    if user.account_id != account.id {
        anyhow::bail!(
            "{email} already belongs to another account; pass that account's slug with --account"
        );
    }
    let tokens = Tokens::new(args.auth.config())?;
    let (token, expires) = tokens.mint(&user.id, &user.email, role, &user.account_id, None)?;
    eprintln!(
        "access token for {email} ({}) in account \"{slug}\", valid until {expires}:",
        role.as_str()
    );
    println!("{token}");
    store.close().await.ok();
    Ok(())
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
            max_document_bytes: args.max_document_bytes,
            max_record_bytes: args.max_record_bytes,
            ..Limits::default()
        },
        auth: AuthConfig {
            hash_concurrency: args
                .password_hash_concurrency
                .map_or_else(Hasher::default_concurrency, usize::from),
            hash_queue: args.password_hash_queue,
            sign_ups_per_minute: args.sign_ups_per_minute,
            ..args.auth.config()
        },
        ws: WsConfig {
            init_timeout: std::time::Duration::from_millis(args.connection_init_timeout_ms),
            max_message_bytes: args.max_message_bytes,
            bus_capacity: args.bus_capacity,
            max_buffer_bytes: args.max_buffer_bytes,
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
        },
        trigger_env: Vec::new(),
        cors_origins: args
            .cors_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        persisted_documents: args.persisted_documents.clone(),
        only_persisted: args.only_persisted,
    };
    let running = start(config, shutdown_signal()).await?;
    let shown = if running.addr.ip().is_unspecified() {
        format!("localhost:{}", running.addr.port())
    } else {
        running.addr.to_string()
    };
    // Both lines in one write: a reader that takes only the first line (a test, a
    // supervisor) and closes the pipe must not make the second one fail, and a
    // closed stdout is no reason to stop serving, so errors are ignored.
    let lines = format!(
        "livegate listening on http://{shown}/graphql\nplayground: http://{shown}{}\n",
        playground::PATH
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(lines.as_bytes()).and_then(|()| out.flush());
    drop(out);
    running.task.await.context("server task")?
}
