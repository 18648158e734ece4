//! What the fuzz targets share: one livegate server per fuzzing process, built
//! in-process (a temporary SQLite database, the example app) and called through
//! its router without a socket, and the oracle every answer must satisfy.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use livegate::access::Role;
use livegate::auth::AuthConfig;
use livegate::graphql::Limits;
use livegate::server::{Config, app, prepare};
use livegate::transport::Gateway;
use livegate::transport::ws::WsConfig;
use tower::ServiceExt;

/// The HS256 secret of the fuzzed server.
pub const SECRET: &str = "livegate-fuzz-secret-0123456789-abcdefghij";

/// The in-process server.
pub struct Target {
    pub runtime: tokio::runtime::Runtime,
    pub state: Gateway,
    pub router: Router,
    /// An admin's and a user's access tokens.
    pub admin: String,
    pub user: String,
    _dir: tempfile::TempDir,
}

/// The server, started on first use.
pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let app_file = dir.path().join("app.toml");
        std::fs::write(&app_file, include_str!("../../schema/app.toml")).expect("app file");
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            app: app_file,
            database_url: format!("sqlite://{}", dir.path().join("fuzz.db").display()),
            limits: Limits::default(),
            auth: AuthConfig {
                jwt_secret: Some(SECRET.into()),
                data_dir: dir.path().join("data"),
                ..AuthConfig::default()
            },
            ws: WsConfig::default(),
            trigger_env: Vec::new(),
            cors_origins: Vec::new(),
            persisted_documents: None,
            only_persisted: false,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (state, admin, user) = runtime.block_on(async {
            let state = prepare(&config).await.expect("server prepares");
            let mut tokens = Vec::new();
            for (email, role) in [
                ("admin@fuzz.local", Role::Admin),
                ("user@fuzz.local", Role::User),
            ] {
                let store = state.store();
                let account = store.ensure_account("default").await.expect("account");
                let u = store
                    .ensure_user(&account, email, role.as_str())
                    .await
                    .expect("user");
                let token = state
                    .auth()
                    .tokens
                    .mint(&u.id, &u.email, role, &u.account_id, None)
                    .expect("mint")
                    .0;
                tokens.push(token);
            }
            let user = tokens.pop().expect("user token");
            let admin = tokens.pop().expect("admin token");
            (state, admin, user)
        });
        Target {
            router: app(state.clone()),
            runtime,
            state,
            admin,
            user,
            _dir: dir,
        }
    })
}

/// An answer: status and as much of the body as came within a moment (a stream
/// never ends by itself).
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Target {
    /// Sends `request` through the router.
    pub fn call(&self, mut request: Request<Body>) -> Answer {
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = self.router.clone();
        // On a worker thread, as in the server: its stack is the 2 MiB that a
        // deep recursion must not outgrow (the fuzzer's main thread has 8).
        let handled = self.runtime.spawn(async move {
            let response =
                match tokio::time::timeout(Duration::from_secs(5), router.oneshot(request)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => match e {},
                    Err(_) => panic!("no response head within 5 s"),
                };
            let status = response.status();
            let mut body = Vec::new();
            let mut stream = response.into_body().into_data_stream();
            while let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_millis(50), stream.next()).await
            {
                body.extend_from_slice(&chunk);
                if body.len() > 1 << 20 {
                    break;
                }
            }
            Answer { status, body }
        });
        match self.runtime.block_on(handled) {
            Ok(answer) => answer,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The oracle for any input: never a 5xx, and never an `INTERNAL` error (bad
/// input gets a coded error that says what is wrong; `INTERNAL` means a bug).
pub fn check(answer: &Answer, input: &dyn std::fmt::Debug) {
    assert!(
        !answer.status.is_server_error() || answer.status == StatusCode::SERVICE_UNAVAILABLE,
        "{} for {input:?}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        !text.contains("\"INTERNAL\""),
        "INTERNAL for {input:?}: {text}"
    );
}
