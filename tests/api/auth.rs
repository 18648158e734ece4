//! Identity: built-in accounts and sessions, outside identity providers, and each
//! attack on tokens refused with UNAUTHENTICATED (never treated as anonymous).

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use livegate::auth::AuthConfig;
use livegate::graphql::Limits;
use serde_json::{Value, json};

use crate::harness::{Db, EXAMPLE_APP, Server, TEST_SECRET};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ME: &str = "{ me { id email role accountId } }";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of an outside identity provider's token, with `extra` merged over them.
fn claims(extra: Value) -> Value {
    let mut c = json!({ "sub": "idp|42", "email": "ext@idp.test", "role": "ADMIN", "account": "default", "iat": now(), "exp": now() + 600 });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn rs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).expect("key"),
    )
    .expect("sign")
}

fn es256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(&fixture("ec-private.pem")).expect("key"),
    )
    .expect("sign")
}

/// A server that also accepts an outside provider's tokens.
async fn idp_server(db: &Db, key: &str, issuer: Option<&str>, audience: Option<&str>) -> Server {
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let auth = AuthConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        jwt_public_key: Some(PathBuf::from(format!("{FIXTURES}/{key}"))),
        jwt_issuer: issuer.map(str::to_string),
        jwt_audience: audience.map(str::to_string),
        data_dir: db.dir.path().join("data"),
        ..AuthConfig::default()
    };
    Server::start_configured(db, app, Limits::default(), auth)
        .await
        .expect("start")
}

/// Asserts that `token` is refused with 401 UNAUTHENTICATED and a message with `words`.
async fn refused(s: &Server, token: &str, words: &str) {
    let (status, body) = s.post(Some(token), &[], ME, json!({})).await;
    let err = &body["errors"][0];
    assert_eq!(status, 401, "{body}");
    assert_eq!(err["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(words),
        "message {message:?} should say {words:?}"
    );
    assert!(
        body.get("data").is_none(),
        "a refused request never runs: {body}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    refused(
        &s,
        &hs256(
            TEST_SECRET.as_bytes(),
            &claims(json!({ "exp": now() - 60 })),
        ),
        "expired",
    )
    .await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    refused(
        &s,
        &hs256(
            TEST_SECRET.as_bytes(),
            &claims(json!({ "nbf": now() + 600 })),
        ),
        "not valid yet",
    )
    .await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    refused(
        &s,
        &hs256(
            b"another-secret-another-secret-another-secret",
            &claims(json!({})),
        ),
        "signature",
    )
    .await;
    let good = hs256(TEST_SECRET.as_bytes(), &claims(json!({})));
    let mut tampered: Vec<&str> = good.split('.').collect();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims(json!({ "sub": "someone-else" })).to_string());
    tampered[1] = &forged;
    refused(&s, &tampered.join("."), "signature").await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let db = Db::fresh().await;
    let s = idp_server(&db, "rsa-public.pem", Some("https://idp.test/"), None).await;
    refused(
        &s,
        &rs256(&claims(json!({ "iss": "https://evil.test/" }))),
        "issuer",
    )
    .await;
    refused(&s, &rs256(&claims(json!({}))), "iss").await;
    let ok = s
        .gql_as(
            Some(&rs256(&claims(json!({ "iss": "https://idp.test/" })))),
            ME,
            json!({}),
        )
        .await;
    assert_eq!(
        ok["data"]["me"]["id"], "idp|42",
        "the right issuer is accepted: {ok}"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let db = Db::fresh().await;
    let s = idp_server(&db, "rsa-public.pem", None, Some("livegate")).await;
    refused(
        &s,
        &rs256(&claims(json!({ "aud": "another-api" }))),
        "audience",
    )
    .await;
    refused(&s, &rs256(&claims(json!({}))), "aud").await;
    let ok = s
        .gql_as(
            Some(&rs256(&claims(json!({ "aud": "livegate" })))),
            ME,
            json!({}),
        )
        .await;
    assert_eq!(ok["data"]["me"]["id"], "idp|42", "{ok}");
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims(json!({})))
    );
    refused(&s, &unsigned, "none").await;
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({ "alg": "None", "typ": "JWT" })),
        b64(&claims(json!({})))
    );
    refused(&s, &unsigned, "not accepted").await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let db = Db::fresh().await;
    let s = idp_server(&db, "rsa-public.pem", None, None).await;
    // The classic confusion attack: the public key used as an HMAC secret.
    refused(
        &s,
        &hs256(&fixture("rsa-public.pem"), &claims(json!({}))),
        "signature",
    )
    .await;
    let ok = s
        .gql_as(Some(&rs256(&claims(json!({})))), ME, json!({}))
        .await;
    assert_eq!(
        ok["data"]["me"],
        json!({ "id": "idp|42", "email": "ext@idp.test", "role": "ADMIN", "accountId": ok["data"]["me"]["accountId"] })
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_unknown_account_is_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    refused(
        &s,
        &hs256(
            TEST_SECRET.as_bytes(),
            &claims(json!({ "account": "no-such-account" })),
        ),
        "unknown account",
    )
    .await;
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn other_malformed_credentials_are_refused() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    refused(&s, "not-a-jwt", "malformed").await;
    refused(&s, &rs256(&claims(json!({}))), "RS256").await;
    refused(
        &s,
        &hs256(TEST_SECRET.as_bytes(), &claims(json!({ "role": "OWNER" }))),
        "role",
    )
    .await;
    refused(
        &s,
        &hs256(TEST_SECRET.as_bytes(), &claims(json!({ "sub": "" }))),
        "sub",
    )
    .await;
    let (status, body) = s
        .post(
            None,
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            ME,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{body}"
    );
    let (status, body) = s
        .post(None, &[("authorization", "Bearer ")], ME, json!({}))
        .await;
    assert_eq!(
        status, 401,
        "an empty bearer token is an error, not anonymity: {body}"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn outside_providers_es256_and_claim_mapping() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let auth = AuthConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        jwt_public_key: Some(PathBuf::from(format!("{FIXTURES}/ec-public.pem"))),
        role_claim: "https://livegate.dev/role".into(),
        account_claim: "org".into(),
        data_dir: db.dir.path().join("data"),
        ..AuthConfig::default()
    };
    let s = Server::start_configured(&db, app, Limits::default(), auth)
        .await
        .expect("start");
    s.state
        .store()
        .ensure_account("acme")
        .await
        .expect("account");
    let token = es256(&claims(
        json!({ "sub": "auth0|7", "https://livegate.dev/role": "admin", "org": "acme", "role": "USER", "account": "default" }),
    ));
    let me = s.gql_as(Some(&token), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["id"], "auth0|7");
    assert_eq!(
        me["data"]["me"]["role"], "ADMIN",
        "the configured role claim is read, case-insensitively"
    );
    let acme = s
        .state
        .store()
        .find_account("acme")
        .await
        .expect("db")
        .expect("acme");
    assert_eq!(
        me["data"]["me"]["accountId"],
        acme.id.as_str(),
        "the configured account claim names the account by slug"
    );
    let post = s
        .gql_as(
            Some(&token),
            "mutation { createPost(input: { title: \"from the IdP\" }) { ownerId accountId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        post["data"]["createPost"],
        json!({ "ownerId": "auth0|7", "accountId": acme.id })
    );
    let no_role = es256(
        &claims(json!({ "sub": "auth0|8", "org": "acme" }))
            .as_object()
            .map(|c| {
                let mut c = c.clone();
                c.remove("role");
                Value::Object(c)
            })
            .unwrap_or_default(),
    );
    assert_eq!(
        s.gql_as(Some(&no_role), ME, json!({})).await["data"]["me"]["role"],
        "USER",
        "no role claim: USER"
    );
    s.stop().await;
    db.drop_db().await;
}

async fn sign_up(s: &Server, email: &str, password: &str, new_account: Option<&str>) -> Value {
    s.gql_as(
        None,
        "mutation($e: String!, $p: String!, $a: String) { signUp(email: $e, password: $p, newAccount: $a) { accessToken refreshToken expiresAt user { id email role accountId } } }",
        json!({ "e": email, "p": password, "a": new_account }),
    )
    .await
}

async fn sign_in(s: &Server, email: &str, password: &str) -> Value {
    s.gql_as(None, "mutation($e: String!, $p: String!) { signIn(email: $e, password: $p) { accessToken refreshToken user { id } } }", json!({ "e": email, "p": password }))
        .await
}

async fn refresh(s: &Server, token: &str) -> Value {
    s.gql_as(None, "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken user { email } } }", json!({ "t": token })).await
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

#[tokio::test]
async fn sign_up_and_sign_in() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let up = sign_up(&s, "  Ada@Example.COM ", "correct horse", None).await;
    let session = &up["data"]["signUp"];
    assert_eq!(
        session["user"]["email"], "ada@example.com",
        "emails are normalised: {up}"
    );
    assert_eq!(session["user"]["role"], "USER");
    let token = session["accessToken"].as_str().expect("token");
    let me = s.gql_as(Some(token), ME, json!({})).await;
    assert_eq!(me["data"]["me"], session["user"], "me reflects the token");
    assert_eq!(
        s.gql_as(None, ME, json!({})).await["data"]["me"],
        Value::Null,
        "anonymous: no me"
    );

    assert_eq!(
        code(&sign_up(&s, "ADA@example.com", "another pass", None).await),
        "CONFLICT",
        "emails are unique per deployment"
    );
    let weak = sign_up(&s, "bob@example.com", "short", None).await;
    assert_eq!(
        (
            code(&weak),
            weak["errors"][0]["extensions"]["field"].as_str()
        ),
        ("BAD_USER_INPUT", Some("password")),
        "{weak}"
    );
    let bad = sign_up(&s, "not-an-email", "long enough", None).await;
    assert_eq!(
        (code(&bad), bad["errors"][0]["extensions"]["field"].as_str()),
        ("BAD_USER_INPUT", Some("email")),
        "{bad}"
    );

    let inn = sign_in(&s, "ADA@example.com", "correct horse").await;
    assert_eq!(
        inn["data"]["signIn"]["user"]["id"], session["user"]["id"],
        "sign-in is case-insensitive on email: {inn}"
    );
    let wrong = sign_in(&s, "ada@example.com", "wrong horse").await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    let unknown = sign_in(&s, "nobody@example.com", "wrong horse").await;
    assert_eq!(
        wrong["errors"][0]["message"], unknown["errors"][0]["message"],
        "an unknown email is not told apart from a wrong password"
    );

    let acme = sign_up(&s, "boss@acme.test", "correct horse", Some("acme")).await;
    assert_eq!(
        acme["data"]["signUp"]["user"]["role"], "ADMIN",
        "creating an account makes you its admin: {acme}"
    );
    assert_ne!(
        acme["data"]["signUp"]["user"]["accountId"],
        session["user"]["accountId"]
    );
    assert_eq!(
        code(&sign_up(&s, "other@acme.test", "correct horse", Some("acme")).await),
        "CONFLICT",
        "account slugs are unique"
    );
    assert_eq!(
        code(&sign_up(&s, "x@acme.test", "correct horse", Some("Not A Slug")).await),
        "BAD_USER_INPUT"
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_session() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let up = sign_up(&s, "rot@example.com", "correct horse", None).await;
    let first = up["data"]["signUp"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_string();
    let access = up["data"]["signUp"]["accessToken"]
        .as_str()
        .expect("access")
        .to_string();

    let second = refresh(&s, &first).await;
    let second_refresh = second["data"]["refreshSession"]["refreshToken"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(
        second_refresh, first,
        "every refresh rotates the refresh token"
    );
    assert_eq!(
        second["data"]["refreshSession"]["user"]["email"],
        "rot@example.com"
    );
    let new_access = second["data"]["refreshSession"]["accessToken"]
        .as_str()
        .expect("access")
        .to_string();
    assert_eq!(
        s.gql_as(Some(&new_access), ME, json!({})).await["data"]["me"]["email"],
        "rot@example.com"
    );

    // The first token again: someone replayed it. The whole session ends.
    let reuse = refresh(&s, &first).await;
    assert_eq!(code(&reuse), "UNAUTHENTICATED", "{reuse}");
    assert!(
        reuse["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already used")
    );
    assert_eq!(
        code(&refresh(&s, &second_refresh).await),
        "UNAUTHENTICATED",
        "reuse revoked the newest token of the family too"
    );
    refused(&s, &new_access, "signed out").await;
    refused(&s, &access, "signed out").await;
    assert_eq!(code(&refresh(&s, "made-up").await), "UNAUTHENTICATED");

    // Another session of the same user is untouched.
    let other = sign_in(&s, "rot@example.com", "correct horse").await;
    let other_refresh = other["data"]["signIn"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert!(refresh(&s, &other_refresh).await.get("errors").is_none());
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sign_out_revokes_the_session() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let up = sign_up(&s, "out@example.com", "correct horse", None).await;
    let refresh_token = up["data"]["signUp"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_string();
    let access = up["data"]["signUp"]["accessToken"]
        .as_str()
        .expect("access")
        .to_string();
    let out = s
        .gql_as(
            None,
            "mutation($t: String!) { signOut(refreshToken: $t) }",
            json!({ "t": refresh_token }),
        )
        .await;
    assert_eq!(out["data"]["signOut"], true);
    refused(&s, &access, "signed out").await;
    assert_eq!(code(&refresh(&s, &refresh_token).await), "UNAUTHENTICATED");
    let unknown = s
        .gql_as(
            None,
            "mutation { signOut(refreshToken: \"made-up\") }",
            json!({}),
        )
        .await;
    assert_eq!(unknown["data"]["signOut"], false);
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_email_and_per_address() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    sign_up(&s, "limited@example.com", "correct horse", None).await;
    let started = std::time::Instant::now();
    for i in 0..10 {
        assert_eq!(
            code(&sign_in(&s, "limited@example.com", "wrong horse").await),
            "UNAUTHENTICATED",
            "attempt {i}"
        );
    }
    let limited = sign_in(&s, "Limited@Example.com", "correct horse").await;
    assert_eq!(
        code(&limited),
        "RATE_LIMITED",
        "the 11th attempt in a minute is refused, even with the right password: {limited}"
    );
    assert!(
        limited["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("try again")
    );
    // Other emails from the same address still get through, up to the address limit.
    for i in 0..19 {
        assert_eq!(
            code(&sign_in(&s, &format!("someone{i}@example.com"), "wrong horse").await),
            "UNAUTHENTICATED",
            "attempt {i}"
        );
    }
    // The address's allowance refills at one attempt per 2 s: on a loaded machine
    // the attempts above may have earned one or two more.
    let mut extra = 0;
    while code(&sign_in(&s, &format!("fresh{extra}@example.com"), "wrong horse").await)
        != "RATE_LIMITED"
    {
        extra += 1;
        let earned = started.elapsed().as_secs() / 2 + 1;
        assert!(
            extra <= earned,
            "{extra} attempts past the 30th from one address got through in {:?}",
            started.elapsed()
        );
    }
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_token_command_mints_a_usable_token() {
    let db = Db::fresh().await;
    let app = db.app_file("app.toml", EXAMPLE_APP);
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "token",
            "--email",
            "Dev@Example.com",
            "--role",
            "admin",
            "--account",
            "studio",
            "--database-url",
            &db.url,
            "--app",
        ])
        .arg(&app)
        .env("LIVEGATE_JWT_SECRET", TEST_SECRET)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_string();
    let s = Server::start(&db, EXAMPLE_APP).await;
    let me = s.gql_as(Some(&token), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "dev@example.com", "{me}");
    assert_eq!(me["data"]["me"]["role"], "ADMIN");
    let studio = s
        .state
        .store()
        .find_account("studio")
        .await
        .expect("db")
        .expect("the account was created");
    assert_eq!(me["data"]["me"]["accountId"], studio.id.as_str());
    s.stop().await;
    db.drop_db().await;
}

#[test]
fn tokens_and_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema/app.toml"),
            "--database-url",
        ])
        .arg(format!("sqlite://{}", dir.path().join("l.db").display()))
        .arg("--data-dir")
        .arg(dir.path())
        .env("LIVEGATE_LOG", "trace")
        .env("LIVEGATE_JWT_SECRET", TEST_SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    let base = line
        .trim()
        .trim_start_matches("livegate listening on ")
        .to_string();
    let password = "Pa55-Word-Never-Logged";
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (access, refresh_token) = rt.block_on(async {
        let c = reqwest::Client::new();
        let post = |body: Value, token: Option<String>| {
            let mut r = c.post(&base).json(&body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move { r.send().await.expect("send").json::<Value>().await.expect("json") }
        };
        let up = post(json!({ "query": "mutation($p: String!) { signUp(email: \"logs@example.com\", password: $p) { accessToken refreshToken } }", "variables": { "p": password } }), None).await;
        let access = up["data"]["signUp"]["accessToken"].as_str().expect("token").to_string();
        let refresh_token = up["data"]["signUp"]["refreshToken"].as_str().expect("refresh").to_string();
        post(json!({ "query": "mutation($p: String!) { signIn(email: \"logs@example.com\", password: $p) { accessToken } }", "variables": { "p": password } }), None).await;
        post(json!({ "query": "mutation($p: String!) { signIn(email: \"logs@example.com\", password: $p) { accessToken } }", "variables": { "p": "wrong-password-also-secret" } }), None).await;
        post(json!({ "query": "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }", "variables": { "t": refresh_token } }), None).await;
        post(json!({ "query": "{ me { id } }" }), Some(access.clone())).await;
        post(json!({ "query": "{ me { id } }" }), Some(format!("{access}x"))).await;
        (access, refresh_token)
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    child.wait().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(
        log.contains("signed up"),
        "the log is written at all (trace level): {log}"
    );
    for secret in [
        password,
        "wrong-password-also-secret",
        &access,
        &refresh_token,
        TEST_SECRET,
    ] {
        assert!(
            !log.contains(secret),
            "the log contains a secret ({}…)",
            &secret[..8]
        );
    }
    let access_signature = access.rsplit('.').next().unwrap_or_default();
    assert!(
        !log.contains(access_signature),
        "the log contains a token signature"
    );
}
