//! Test harness: a real livegate server on 127.0.0.1:0 per test, spoken to over
//! real HTTP. SQLite in a temp folder by default; with `LIVEGATE_TEST_DATABASE_URL`
//! (a PostgreSQL URL) each server gets a fresh database of its own instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use livegate::access::Role;
use livegate::auth::AuthConfig;
use livegate::graphql::Limits;
use livegate::server::{Config, Running, start};
use livegate::transport::Gateway;
use livegate::transport::ws::WsConfig;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The HS256 secret test servers sign with.
pub const TEST_SECRET: &str = "livegate-test-secret-0123456789-abcdefghij";

/// The example app file, as committed.
pub const EXAMPLE_APP: &str = include_str!("../../schema/app.toml");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where a test's data lives; reused across restarts of the same test.
pub struct Db {
    pub url: String,
    pub dir: tempfile::TempDir,
    admin: Option<(String, String)>,
}

impl Db {
    /// A fresh, empty database.
    pub async fn fresh() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var("LIVEGATE_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!(
                    "lgtest_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to LIVEGATE_TEST_DATABASE_URL");
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await
                    .expect("drop db");
                // An ICU en-US collation, where the server has ICU, sorts "alpha2" before
                // "Beta": proof that livegate's own ordering does not depend on it.
                let icu = format!(
                    "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                );
                if admin.execute_unprepared(&icu).await.is_err() {
                    admin
                        .execute_unprepared(&format!("CREATE DATABASE {name}"))
                        .await
                        .expect("create db");
                }
                admin.close().await.ok();
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_string())
                    .expect("URL with a database");
                Db {
                    url: format!("{base}/{name}"),
                    dir,
                    admin: Some((admin_url, name)),
                }
            }
            _ => {
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Db {
                    url,
                    dir,
                    admin: None,
                }
            }
        }
    }

    /// Drops a PostgreSQL test database (SQLite files go with the temp dir).
    pub async fn drop_db(self) {
        if let Some((admin_url, name)) = &self.admin
            && let Ok(admin) = Database::connect(admin_url).await
        {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
            admin.close().await.ok();
        }
    }

    /// Writes `toml` as an app file in this test's folder.
    pub fn app_file(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).expect("write app file");
        path
    }
}

/// A user made by the harness.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub account_id: String,
    pub token: String,
}

/// Settings of a test server that most tests leave alone.
#[derive(Default)]
struct Extra {
    trigger_env: Vec<(String, String)>,
    cors_origins: Vec<String>,
    persisted_documents: Option<PathBuf>,
    only_persisted: bool,
}

/// A running server.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    /// The token [`Server::gql`] sends: an admin of the default account.
    pub token: String,
    pub state: Gateway,
    stop: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

impl Server {
    /// Starts a server for the app file at `app` on `db`.
    pub async fn start_with(db: &Db, app: PathBuf, limits: Limits) -> anyhow::Result<Server> {
        let auth = AuthConfig {
            jwt_secret: Some(TEST_SECRET.into()),
            data_dir: db.dir.path().join("data"),
            ..AuthConfig::default()
        };
        Server::start_configured(db, app, limits, auth).await
    }

    /// Starts a server with explicit auth settings.
    pub async fn start_configured(
        db: &Db,
        app: PathBuf,
        limits: Limits,
        auth: AuthConfig,
    ) -> anyhow::Result<Server> {
        // A short init timeout keeps the 4408 test quick.
        let ws = WsConfig {
            init_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        };
        Server::start_full(db, app, limits, auth, ws).await
    }

    /// Starts a server with explicit auth and WebSocket settings.
    pub async fn start_full(
        db: &Db,
        app: PathBuf,
        limits: Limits,
        auth: AuthConfig,
        ws: WsConfig,
    ) -> anyhow::Result<Server> {
        Server::start_env(db, app, limits, auth, ws, Vec::new(), Vec::new()).await
    }

    /// Starts a server for app text `toml` that lets pages on `origins` call
    /// it from a browser (`--cors-origins`).
    pub async fn start_with_cors(db: &Db, toml: &str, origins: &[&str]) -> anyhow::Result<Server> {
        let app = db.app_file("app.toml", toml);
        let origins = origins.iter().map(|o| o.to_string()).collect();
        Server::start_env(
            db,
            app,
            Limits::default(),
            Server::test_auth(db),
            WsConfig::default(),
            Vec::new(),
            origins,
        )
        .await
    }

    /// Starts a server for app text `toml` whose triggers read their
    /// variables from `env` (then the process environment).
    pub async fn start_with_trigger_env(
        db: &Db,
        toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let app = db.app_file("app.toml", toml);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ws = WsConfig {
            init_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        };
        Server::start_env(
            db,
            app,
            Limits::default(),
            Server::test_auth(db),
            ws,
            env,
            Vec::new(),
        )
        .await
    }

    async fn start_env(
        db: &Db,
        app: PathBuf,
        limits: Limits,
        auth: AuthConfig,
        ws: WsConfig,
        trigger_env: Vec<(String, String)>,
        cors_origins: Vec<String>,
    ) -> anyhow::Result<Server> {
        Server::start_extra(
            db,
            app,
            limits,
            auth,
            ws,
            Extra {
                trigger_env,
                cors_origins,
                ..Extra::default()
            },
        )
        .await
    }

    /// Starts a server for app text `toml` with persisted documents from
    /// `manifest` (`--persisted-documents`), only those when `only`.
    pub async fn start_with_persisted(
        db: &Db,
        toml: &str,
        manifest: Option<PathBuf>,
        only: bool,
    ) -> anyhow::Result<Server> {
        let app = db.app_file("app.toml", toml);
        let extra = Extra {
            persisted_documents: manifest,
            only_persisted: only,
            ..Extra::default()
        };
        Server::start_extra(
            db,
            app,
            Limits::default(),
            Server::test_auth(db),
            WsConfig::default(),
            extra,
        )
        .await
    }

    async fn start_extra(
        db: &Db,
        app: PathBuf,
        limits: Limits,
        auth: AuthConfig,
        ws: WsConfig,
        extra: Extra,
    ) -> anyhow::Result<Server> {
        let Extra {
            trigger_env,
            cors_origins,
            persisted_documents,
            only_persisted,
        } = extra;
        let config = Config {
            persisted_documents,
            only_persisted,
            listen: "127.0.0.1:0".parse()?,
            app,
            database_url: db.url.clone(),
            limits,
            auth,
            ws,
            trigger_env,
            cors_origins,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let running = start(config, async {
            rx.await.ok();
        })
        .await?;
        let state = running.state.clone();
        let mut server = Server {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            token: String::new(),
            state,
            stop: Some(tx),
            running: Some(running),
        };
        server.token = server
            .token_for("admin@test.local", Role::Admin, "default")
            .await;
        Ok(server)
    }

    /// The example app with a bus of only `capacity` events, so that a slow
    /// subscriber falls behind quickly.
    pub async fn start_with_small_bus(db: &Db, capacity: usize) -> Server {
        let app = db.app_file("app.toml", EXAMPLE_APP);
        let ws = WsConfig {
            bus_capacity: capacity,
            ..Default::default()
        };
        Server::start_full(db, app, Limits::default(), Server::test_auth(db), ws)
            .await
            .expect("server starts")
    }

    /// The auth settings test servers use.
    pub fn test_auth(db: &Db) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(TEST_SECRET.into()),
            data_dir: db.dir.path().join("data"),
            ..AuthConfig::default()
        }
    }

    /// Starts a server for app text `toml` on `db`.
    pub async fn start(db: &Db, toml: &str) -> Server {
        let app = db.app_file("app.toml", toml);
        Server::start_with(db, app, Limits::default())
            .await
            .expect("server starts")
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
        if let Some(r) = self.running.take() {
            r.task
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// A token for user `email` with `role` in account `slug` (both created if
    /// missing), as `livegate token` mints it.
    pub async fn token_for(&self, email: &str, role: Role, slug: &str) -> String {
        self.user_for(email, role, slug).await.token
    }

    /// A token for a new user `short@test.local` that expires `seconds` from now
    /// (signed with the test secret, as an outside client would hold it).
    pub async fn token_expiring_in(&self, seconds: i64) -> String {
        let me = self
            .user_for("short@test.local", Role::User, "default")
            .await;
        let claims = serde_json::json!({ "sub": me.id, "email": "short@test.local", "role": "USER", "account": me.account_id, "exp": chrono::Utc::now().timestamp() + seconds });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        )
        .expect("sign")
    }

    /// Like [`Server::token_for`], with the user's and account's ids.
    pub async fn user_for(&self, email: &str, role: Role, slug: &str) -> TestUser {
        let store = self.state.store();
        let account = store.ensure_account(slug).await.expect("account");
        let user = store
            .ensure_user(&account, email, role.as_str())
            .await
            .expect("user");
        let token = self
            .state
            .auth()
            .tokens
            .mint(&user.id, &user.email, role, &user.account_id, None)
            .expect("mint")
            .0;
        TestUser {
            id: user.id,
            account_id: user.account_id,
            token,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the unlabelled metric `name` on /metrics (panics if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Whether metric `name` comes to equal `value` within 5 s (it may be
    /// updated after the request that changes it answers).
    pub async fn metric_becomes(&self, name: &str, value: f64) -> bool {
        for _ in 0..250 {
            if self.metric(name).await == value {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    /// POSTs a GraphQL request as the default admin; returns the JSON body (any status).
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(Some(&self.token), query, variables).await
    }

    /// POSTs a GraphQL request with `token` (none: anonymous); returns the JSON body.
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.post(token, &[], query, variables).await.1
    }

    /// POSTs a GraphQL request with `token` and extra headers; returns status and body.
    pub async fn post(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        (
            resp.status().as_u16(),
            resp.json().await.expect("JSON body"),
        )
    }

    /// Like [`Server::gql`], but fails the test on any error and returns `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// The `extensions.code` of the first error (fails the test when there is none).
    pub async fn error_code(&self, query: &str, variables: Value) -> (String, Value) {
        let body = self.gql(query, variables).await;
        let err = body["errors"][0].clone();
        let code = err["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body:#}"))
            .to_string();
        (code, err)
    }
}

/// A signed-up user's session (`accessToken`, `refreshToken`, `user { id }`).
pub async fn signed_up(s: &Server, email: &str) -> Value {
    let up = s
        .gql_as(
            None,
            "mutation($e: String!) { signUp(email: $e, password: \"correct horse\") { accessToken refreshToken user { id } } }",
            json!({ "e": email }),
        )
        .await;
    up["data"]["signUp"].clone()
}

/// Signs the session of `refresh_token` out (fails the test if it is refused).
pub async fn sign_out(s: &Server, refresh_token: &Value) {
    let out = s
        .gql_as(
            None,
            "mutation($t: String!) { signOut(refreshToken: $t) }",
            json!({ "t": refresh_token }),
        )
        .await;
    assert_eq!(out["data"]["signOut"], true, "{out}");
}

/// Creates a post and returns it.
/// The document [`create_post`] sends.
pub const CREATE_POST: &str = "mutation($i: PostCreateInput!) { createPost(input: $i) { id title published views rating publishedAt } }";

pub async fn create_post(s: &Server, input: Value) -> Value {
    s.data(CREATE_POST, json!({ "i": input })).await["createPost"].clone()
}

/// Waits up to `within` for `done` to hold (checked every 20 ms); says whether it did.
pub async fn eventually(within: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done()
}

/// Writes `n` posts titled `{prefix} {i}` in the background, `pause` apart.
pub fn writer(
    s: &Server,
    prefix: &'static str,
    n: usize,
    pause: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let (base, token) = (s.base.clone(), s.token.clone());
    tokio::spawn(async move {
        let c = reqwest::Client::new();
        for i in 0..n {
            c.post(format!("{base}/graphql"))
                .bearer_auth(&token)
                .json(&json!({ "query": format!("mutation {{ createPost(input: {{ title: \"{prefix} {i}\" }}) {{ id }} }}") }))
                .send()
                .await
                .expect("write");
            tokio::time::sleep(pause).await;
        }
    })
}
