//! The application state, the router, and start-up / graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use tokio::net::TcpListener;

use crate::app::{AppState, Parts};
use crate::auth::{AuthConfig, SignIn, Tokens};
use crate::catalog::Catalog;
use crate::graphql::persisted::Persisted;
use crate::graphql::{Limits, build_schema};
use crate::metrics::Metrics;
use crate::realtime::rooms::Rooms;
use crate::store::Store;
use crate::transport::ws::WsConfig;
use crate::transport::{Gateway, feed, http, playground, sse};
use crate::triggers::Armed;

/// Everything `serve` needs, from flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The app file.
    pub app: PathBuf,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Per-operation limits.
    pub limits: Limits,
    /// Token and session settings.
    pub auth: AuthConfig,
    /// WebSocket transport settings.
    pub ws: WsConfig,
    /// Variables trigger settings (`url_env`, `secret_env`) are read from
    /// before the process environment (an embedding program's, or a test's).
    pub trigger_env: Vec<(String, String)>,
    /// Origins browsers may call the API from (`--cors-origins`): none (no
    /// CORS headers: same-origin pages only), a list, or `*` for any.
    pub cors_origins: Vec<String>,
    /// The manifest of persisted documents (`--persisted-documents`).
    pub persisted_documents: Option<PathBuf>,
    /// Run only the manifest's documents (`--only-persisted`).
    pub only_persisted: bool,
}

/// The CORS layer for `origins` (see [`Config::cors_origins`]); `None` when
/// there are none. An entry that is not `*` nor an origin (`scheme://host`
/// with an optional port, nothing after) is an error naming it.
pub fn cors_layer(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        anyhow::ensure!(
            origins.len() == 1,
            "--cors-origins: `*` (any origin) stands alone, not in a list"
        );
        AllowOrigin::any()
    } else {
        let mut values = Vec::with_capacity(origins.len());
        for o in origins {
            let parsed = reqwest::Url::parse(o).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !o
                        .trim_end_matches('/')
                        .contains(&format!("{}/", u.authority()))
            });
            let Some(u) = parsed else {
                anyhow::bail!(
                    "--cors-origins: {o:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
                );
            };
            // As browsers send it: no trailing slash, default ports left out.
            let origin = u.origin().ascii_serialization();
            values.push(axum::http::HeaderValue::from_str(&origin)?);
        }
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PUT,
                axum::http::Method::DELETE,
            ])
            // Whatever the page asks to send (Authorization, X-Account, the
            // SSE stream token, Last-Event-ID, Apollo's headers): credentials
            // are bearer tokens, never cookies, so nothing rides along unasked.
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

/// Loads the app file, connects, migrates, reconciles and builds the schema.
pub async fn prepare(config: &Config) -> anyhow::Result<Gateway> {
    Ok(prepare_with_triggers(config).await?.0)
}

/// [`prepare`], and the app file's triggers armed with their URLs and secrets.
async fn prepare_with_triggers(config: &Config) -> anyhow::Result<(Gateway, Vec<Armed>)> {
    let catalog = Catalog::load(&config.app)?;
    // Before anything connects: a missing secret is an app-file error.
    let armed = crate::triggers::arm(&config.app.display().to_string(), &catalog, |name| {
        config
            .trigger_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    })?;
    let metrics = Metrics::default();
    let store = Store::connect(&config.database_url, catalog.clone())
        .await?
        .with_bus_capacity(config.ws.bus_capacity)
        .with_write_metrics(metrics.writes.clone())
        .with_max_record_bytes(config.limits.max_record_bytes);
    let store = store.claim_database_file(&config.database_url)?;
    // Instances starting together on one PostgreSQL take turns.
    let account = store
        .exclusively(async {
            store.migrate().await.context("applying migrations")?;
            store.reconcile(&config.app.display().to_string()).await?;
            Ok(store.ensure_account(crate::store::DEFAULT_ACCOUNT).await?)
        })
        .await?;
    // Before serving: a subscriber resuming from a cursor replays the log up
    // to the bus's published seq, which must cover what an earlier run wrote.
    store.start_following().await?;
    let tokens = Tokens::new(config.auth.clone())?;
    tokens.start_key_set().await;
    let heartbeat =
        std::time::Duration::from_secs(catalog.realtime.heartbeat_seconds.max(1).into());
    let rooms = Arc::new(if store.shares_rooms() {
        Rooms::shared(config.ws.max_buffer_bytes, store.clone(), heartbeat)
    } else {
        Rooms::new(config.ws.max_buffer_bytes)
    });
    rooms.start_lease().await?;
    let schema = build_schema(&catalog, config.limits, rooms.clone())
        .context("building the GraphQL schema")?;
    let persisted = Persisted::load(
        config.persisted_documents.as_deref(),
        config.only_persisted,
        &config.limits,
    )?;
    if config.persisted_documents.is_some() {
        tracing::info!(
            documents = persisted.manifest_len(),
            only = persisted.only(),
            "persisted documents loaded"
        );
    }
    let app = AppState::new(Parts {
        persisted: Arc::new(persisted),
        catalog,
        schema,
        store,
        auth: Arc::new(SignIn::new(tokens, metrics.hashing.clone())),
        metrics,
        default_account_id: account.id,
        limits: config.limits,
        rooms,
        max_buffer_bytes: config.ws.max_buffer_bytes,
    });
    app.store().start_triggers().await?;
    // One `WsConfig` for the engine's hold limit and the connections' queues.
    Ok((Gateway::new(app, config.ws), armed))
}

/// Every graphql-sse request on `/graphql/stream`, and `PUT`/`DELETE` on `/graphql`.
async fn sse_request(
    State(app): State<Gateway>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: axum::body::Bytes,
) -> axum::response::Response {
    sse::handle(app, peer, method, headers, query, body).await
}

/// The HTTP routes.
pub fn app(state: Gateway) -> Router {
    Router::new()
        .route(
            "/graphql",
            get(http::get)
                .post(http::post)
                .put(sse_request)
                .delete(sse_request),
        )
        .route("/graphql/stream", any(sse_request))
        .route("/realtime", get(feed::realtime))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(playground::routes())
        // A record's text arrives JSON-escaped inside a GraphQL document or its
        // variables: room for twice the largest record (axum's 2 MB default at least).
        .layer(axum::extract::DefaultBodyLimit::max(body_limit(
            state.store().max_record_bytes(),
        )))
        .with_state(state)
}

/// The largest HTTP request body: twice the largest record, at least 2 MiB.
pub fn body_limit(max_record_bytes: usize) -> usize {
    max_record_bytes.saturating_mul(2).max(2 * 1024 * 1024)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

/// 200 while this instance can serve: the database answers and the log
/// follower reads the log and hears of new events; 503 otherwise, so that a
/// load balancer sends clients elsewhere.
async fn readyz(State(app): State<Gateway>) -> impl IntoResponse {
    let store = app.store();
    let database = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let (status, body) = match (database, store.is_following()) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database does not answer\n",
        ),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not following the event log\n",
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

async fn metrics(State(app): State<Gateway>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics().encode(),
    )
}

/// A running server: where it listens, its state, and a handle that ends when it stops.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Gateway,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let cors = cors_layer(&config.cors_origins)?;
    let (state, armed) = prepare_with_triggers(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let delivery = Delivery::new();
    if let Some(runtime) = delivery.handle() {
        state.deliveries().set_runtime(runtime);
    }
    let delivering = state.deliveries().tracker().clone();
    let handle = state.clone();
    let handle_for_tasks = state.app().clone();
    let stopping = state.clone();
    let store = state.store().clone();
    let auth = state.auth().clone();
    let rooms = state.rooms().clone();
    let trigger_metrics = state.metrics().triggers.clone();
    let router = match cors {
        Some(cors) => app(state).layer(cors),
        None => app(state),
    };
    let task = tokio::spawn(async move {
        // Rate-limit state for keys that went quiet is dropped once a minute, so a
        // stream of distinct emails cannot grow it without bound.
        let swept = rooms.clone();
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                auth.forget_quiet_keys();
                swept.forget_quiet_senders();
            }
        });
        let housekeeping = tokio::spawn(housekeeping(handle_for_tasks));
        let follower = tokio::spawn(store.clone().follow());
        let room_reader = tokio::spawn(rooms.clone().follow_rooms());
        let lease = tokio::spawn(rooms.clone().keep_lease());
        let triggers = crate::triggers::start(store.clone(), armed, trigger_metrics);
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.stop();
        })
        .await;
        // Connections saw `stopping` and are closing with 1001: let their close
        // frames leave before the runtime they run on goes.
        delivering.close();
        if tokio::time::timeout(std::time::Duration::from_secs(5), delivering.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "realtime connections still open 5 s after shutdown began; dropping them"
            );
        }
        drop(delivery);
        sweeper.abort();
        housekeeping.abort();
        follower.abort();
        room_reader.abort();
        lease.abort();
        for t in &triggers {
            t.abort();
        }
        // Its members leave their rooms now, not when the lease lapses.
        rooms.end_lease().await;
        store.close().await.ok();
        Ok(served?)
    });
    Ok(Running {
        addr,
        state: handle,
        task,
    })
}

/// The runtime realtime connections run on, beside the one that serves requests.
///
/// An event for 10,000 subscribers wakes 10,000 connection tasks at once. On one
/// runtime they queue ahead of everything woken after them, so a mutation (whose
/// every await wakes it from the database's thread into that queue) waited for
/// whole fan-outs: 160 ms per write instead of 3 ms, and every event then fanned
/// out alone instead of several per wake-up. On a runtime of their own the
/// operating system shares the cores between requests and deliveries, and a write
/// never waits behind a fan-out. It has as many workers as the request runtime
/// (the usable cores), and is shut down, without blocking, when dropped.
struct Delivery(Option<tokio::runtime::Runtime>);

impl Delivery {
    fn new() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("livegate-delivery")
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no runtime of their own for realtime connections; they share the request runtime")
            })
            .ok();
        Delivery(runtime)
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on another runtime.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Background upkeep: counts published events for `/metrics`, and prunes the event
/// log past `history_hours` every ten minutes.
async fn housekeeping(state: AppState) {
    let mut bus = state.store().subscribe();
    let counter = state.metrics().events_published.clone();
    let count = tokio::spawn(async move {
        loop {
            match bus.recv().await {
                Ok(_) => {
                    counter.inc();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    counter.inc_by(n);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let history = chrono::Duration::hours(state.catalog().realtime.history_hours.into());
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        match state
            .store()
            .prune_events(chrono::Utc::now() - history)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned the event log"),
            Err(e) => tracing::warn!(error = %e, "could not prune the event log"),
        }
        // Delivered and failed webhook deliveries are kept as long as the log.
        let before_ms = (chrono::Utc::now() - history).timestamp_millis();
        match state.store().prune_deliveries(before_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned finished trigger deliveries"),
            Err(e) => tracing::warn!(error = %e, "could not prune trigger deliveries"),
        }
        if count.is_finished() {
            return;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
