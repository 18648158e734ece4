//! Outside identity providers by key set (`--jwt-jwks-url`): a local key-set
//! server that rotates keys, withdraws them, and goes down, and the tokens
//! livegate accepts and refuses through it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use livegate::auth::AuthConfig;
use livegate::graphql::Limits;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, TEST_SECRET};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ME: &str = "{ me { id email role } }";

/// A signing key of the identity provider: its private half and algorithm.
#[derive(Clone, Copy)]
struct Signer {
    file: &'static str,
    alg: Algorithm,
}

const RSA_1: Signer = Signer {
    file: "rsa-private.pem",
    alg: Algorithm::RS256,
};
const RSA_2: Signer = Signer {
    file: "rsa2-private.pem",
    alg: Algorithm::RS256,
};
const EC: Signer = Signer {
    file: "ec-private.pem",
    alg: Algorithm::ES256,
};
const ED: Signer = Signer {
    file: "ed25519-private.pem",
    alg: Algorithm::EdDSA,
};

impl Signer {
    fn encoding_key(self) -> EncodingKey {
        let pem = std::fs::read(format!("{FIXTURES}/{}", self.file)).expect("fixture");
        match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("key")
    }

    /// The public key as the provider publishes it, under `kid`.
    fn jwk(self, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).expect("json")
    }

    /// A token for `sub`, signed with this key and naming `kid` (and `alg`).
    fn token(self, kid: Option<&str>, alg: Algorithm, sub: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        let claims = json!({ "sub": sub, "email": format!("{sub}@idp.test"), "role": "USER", "iat": now, "exp": now + 600 });
        encode(&header, &claims, &self.encoding_key()).expect("sign")
    }

    fn signed(self, kid: &str, sub: &str) -> String {
        self.token(Some(kid), self.alg, sub)
    }
}

/// The identity provider's key-set endpoint, whose answer the test changes.
#[derive(Clone)]
struct Provider {
    answer: Arc<Mutex<(StatusCode, Value)>>,
    hits: Arc<AtomicUsize>,
    url: String,
}

impl Provider {
    async fn start(keys: Vec<Value>) -> Provider {
        async fn serve(State(p): State<Provider>) -> impl IntoResponse {
            p.hits.fetch_add(1, Ordering::SeqCst);
            let (status, body) = p.answer.lock().expect("lock").clone();
            (status, axum::Json(body))
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut provider = Provider {
            answer: Arc::new(Mutex::new((StatusCode::OK, json!({ "keys": keys })))),
            hits: Arc::new(AtomicUsize::new(0)),
            url: String::new(),
        };
        provider.url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve))
            .with_state(provider.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        provider
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.answer.lock().expect("lock") = (StatusCode::OK, json!({ "keys": keys }));
    }

    fn fail(&self) {
        *self.answer.lock().expect("lock") = (StatusCode::BAD_GATEWAY, json!({ "error": "down" }));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A server that takes the provider's tokens, refetching for unknown `kid`s at
/// most every `refetch` and refreshing every `refresh`.
async fn server(db: &Db, provider: &Provider, refetch: Duration, refresh: Duration) -> Server {
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let auth = AuthConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        jwt_jwks_url: Some(provider.url.clone()),
        jwks_refetch_every: refetch,
        jwks_refresh_every: refresh,
        data_dir: db.dir.path().join("data"),
        ..AuthConfig::default()
    };
    Server::start_configured(db, app, Limits::default(), auth)
        .await
        .expect("start")
}

/// The user `token` is taken for, or the error code and message.
async fn me(s: &Server, token: &str) -> Result<String, (String, String)> {
    let (_, body) = s.post(Some(token), &[], ME, json!({})).await;
    match body["data"]["me"]["id"].as_str() {
        Some(id) => Ok(id.to_string()),
        None => Err((
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )),
    }
}

/// Whether `token` comes to be accepted (`accepted`) or refused within 10 s
/// (the set is refetched in the background).
async fn becomes(s: &Server, token: &str, accepted: bool) -> bool {
    for _ in 0..200 {
        if me(s, token).await.is_ok() == accepted {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn refused(s: &Server, token: &str, words: &str) {
    match me(s, token).await {
        Ok(id) => panic!("a token that should be refused ({words}) was taken for {id}"),
        Err((code, message)) => {
            assert_eq!(code, "UNAUTHENTICATED", "{message}");
            assert!(message.contains(words), "{message:?} should say {words:?}");
        }
    }
}

#[tokio::test]
async fn tokens_are_checked_with_the_key_their_kid_names() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![RSA_1.jwk("r1"), EC.jwk("e1"), ED.jwk("d1")]).await;
    let s = server(
        &db,
        &provider,
        Duration::from_secs(30),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(provider.hits(), 1, "the set is fetched once at start");

    for (signer, kid) in [(RSA_1, "r1"), (EC, "e1"), (ED, "d1")] {
        let sub = format!("idp|{kid}");
        assert_eq!(me(&s, &signer.signed(kid, &sub)).await, Ok(sub));
    }
    // Built-in tokens still work beside the key set.
    assert!(me(&s, &s.token).await.is_ok());

    // A key the set does not hold, claiming the kid of one it does.
    refused(&s, &RSA_2.signed("r1", "idp|forged"), "signature").await;
    // The right key under a kid whose key is of another type: the token may
    // not choose how it is checked.
    refused(
        &s,
        &RSA_1.token(Some("e1"), Algorithm::RS256, "idp|mixed"),
        "RS256",
    )
    .await;
    // HS256 with the RSA key's public half as the secret (the classic
    // confusion attack) fails against the server's own secret.
    let public_as_secret = RSA_1.jwk("r1").to_string();
    let now = chrono::Utc::now().timestamp();
    let confused = encode(
        &Header {
            kid: Some("r1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &json!({ "sub": "idp|hs", "iat": now, "exp": now + 600 }),
        &EncodingKey::from_secret(public_as_secret.as_bytes()),
    )
    .expect("sign");
    refused(&s, &confused, "signature").await;
    // Without a kid, the set's one key of the token's algorithm is used.
    assert_eq!(
        me(&s, &ED.token(None, Algorithm::EdDSA, "idp|nokid")).await,
        Ok("idp|nokid".into())
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_unknown_kids_fetch_at_most_once_per_window() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![RSA_1.jwk("r1")]).await;
    let s = server(
        &db,
        &provider,
        Duration::from_secs(30),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(
        me(&s, &RSA_1.signed("r1", "idp|a")).await,
        Ok("idp|a".into())
    );
    assert_eq!(provider.hits(), 1);

    // The provider rotates: it publishes a new key and signs with it.
    provider.publish(vec![RSA_1.jwk("r1"), RSA_2.jwk("r2")]);
    assert_eq!(
        me(&s, &RSA_2.signed("r2", "idp|b")).await,
        Ok("idp|b".into())
    );
    assert_eq!(provider.hits(), 2, "the unknown kid refetched the set once");

    // Made-up kids, many at once: refused, and within 30 s of the last fetch
    // they fetch nothing more.
    let forged: Vec<_> = (0..40)
        .map(|i| RSA_2.signed(&format!("made-up-{i}"), "idp|x"))
        .collect();
    let answers = futures_util::future::join_all(forged.iter().map(|token| me(&s, token))).await;
    for answer in answers {
        let (code, message) = answer.expect_err("refused");
        assert_eq!(code, "UNAUTHENTICATED");
        assert!(message.contains("kid"), "{message}");
    }
    assert_eq!(
        provider.hits(),
        2,
        "unknown kids fetch at most once per 30 s"
    );
    // Known keys keep working meanwhile.
    assert_eq!(
        me(&s, &RSA_1.signed("r1", "idp|c")).await,
        Ok("idp|c".into())
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_last_good_set_serves_while_the_url_is_down_and_withdrawn_keys_stop_working() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![RSA_1.jwk("r1"), EC.jwk("e1")]).await;
    // A short refetch window and refresh, so the test sees several fetches.
    let s = server(
        &db,
        &provider,
        Duration::from_millis(300),
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(me(&s, &EC.signed("e1", "idp|a")).await, Ok("idp|a".into()));

    // Down: refreshes and unknown-kid refetches fail, the last good set serves.
    provider.fail();
    let before = provider.hits();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(provider.hits() > before, "the set was refetched while down");
    refused(&s, &RSA_2.signed("r2", "idp|new"), "kid").await;
    assert_eq!(
        me(&s, &RSA_1.signed("r1", "idp|b")).await,
        Ok("idp|b".into())
    );
    assert_eq!(me(&s, &EC.signed("e1", "idp|c")).await, Ok("idp|c".into()));
    // A set that is not a key set does not replace the good one either.
    *provider.answer.lock().expect("lock") = (StatusCode::OK, json!({ "keys": "nope" }));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        me(&s, &RSA_1.signed("r1", "idp|d")).await,
        Ok("idp|d".into())
    );

    // Back, with r1 withdrawn and r2 added: the refresh drops r1.
    provider.publish(vec![RSA_2.jwk("r2"), EC.jwk("e1")]);
    assert!(
        becomes(&s, &RSA_1.signed("r1", "idp|e"), false).await,
        "a withdrawn key stops being accepted after a refresh"
    );
    refused(&s, &RSA_1.signed("r1", "idp|f"), "kid").await;
    assert_eq!(
        me(&s, &RSA_2.signed("r2", "idp|g")).await,
        Ok("idp|g".into())
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_server_starts_while_the_key_set_is_unreachable_and_fetches_it_later() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![ED.jwk("d1")]).await;
    provider.fail();
    let s = server(
        &db,
        &provider,
        Duration::from_millis(200),
        Duration::from_secs(600),
    )
    .await;
    refused(&s, &ED.signed("d1", "idp|a"), "kid").await;
    provider.publish(vec![ED.jwk("d1")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(me(&s, &ED.signed("d1", "idp|b")).await, Ok("idp|b".into()));
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_set_that_withdraws_every_key_refuses_every_token() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![RSA_1.jwk("r1")]).await;
    let s = server(
        &db,
        &provider,
        Duration::from_secs(30),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        me(&s, &RSA_1.signed("r1", "idp|a")).await,
        Ok("idp|a".into())
    );
    // An empty set, then one with only a key for encryption: read, so they
    // replace the cached set (unlike an error, which keeps it).
    for keys in [
        vec![],
        vec![{
            let mut enc = RSA_1.jwk("r1");
            enc["use"] = json!("enc");
            enc
        }],
    ] {
        provider.publish(keys);
        assert!(
            becomes(&s, &RSA_1.signed("r1", "idp|b"), false).await,
            "the withdrawn key is refused after a refresh"
        );
        provider.publish(vec![RSA_1.jwk("r1")]);
        assert!(
            becomes(&s, &RSA_1.signed("r1", "idp|c"), true).await,
            "published again, accepted again"
        );
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn with_a_pem_key_and_a_key_set_a_kid_the_set_lacks_falls_back_to_the_pem_key() {
    let db = Db::fresh().await;
    let provider = Provider::start(vec![EC.jwk("e1")]).await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let auth = AuthConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        jwt_public_key: Some(format!("{FIXTURES}/rsa-public.pem").into()),
        jwt_jwks_url: Some(provider.url.clone()),
        data_dir: db.dir.path().join("data"),
        ..AuthConfig::default()
    };
    let s = Server::start_configured(&db, app, Limits::default(), auth)
        .await
        .expect("start");
    // Signed with the PEM key's private half, naming a kid the set lacks.
    assert_eq!(
        me(&s, &RSA_1.signed("pem-key", "idp|pem")).await,
        Ok("idp|pem".into())
    );
    assert_eq!(
        me(&s, &EC.signed("e1", "idp|set")).await,
        Ok("idp|set".into())
    );
    // A kid the set lacks, of an algorithm with no PEM key: unknown.
    refused(&s, &ED.signed("d9", "idp|x"), "kid").await;
    // HS512 is no algorithm of a key set: refused as such.
    let now = chrono::Utc::now().timestamp();
    let hs512 = encode(
        &Header {
            kid: Some("e1".into()),
            ..Header::new(Algorithm::HS512)
        },
        &json!({ "sub": "idp|hs", "iat": now, "exp": now + 600 }),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .expect("sign");
    refused(&s, &hs512, "HS512").await;
    s.stop().await;
    db.drop_db().await;
}
