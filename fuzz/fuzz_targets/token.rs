//! Token verification: any string is either a verified identity or an error,
//! and a correctly signed token with arbitrary claims is judged by its claims
//! alone (no panic, no identity without a subject and a live expiry).
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate::auth::{AuthConfig, Tokens};

fn tokens() -> &'static Tokens {
    static TOKENS: std::sync::OnceLock<Tokens> = std::sync::OnceLock::new();
    TOKENS.get_or_init(|| {
        Tokens::new(AuthConfig {
            jwt_secret: Some(livegate_fuzz::SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("tokens")
    })
}

/// `Tokens::verify`, run to completion (without a key set it never waits).
fn verify(token: &str) -> Result<livegate::auth::Identity, livegate::auth::AuthError> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
        })
        .block_on(tokens().verify(token))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As it came: a forged, truncated or malformed token.
    assert!(
        verify(text).is_err() || text.split('.').count() == 3,
        "only a three-part token can verify"
    );
    // As claims, signed with the right key.
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_str::<serde_json::Value>(text) {
        let key = jsonwebtoken::EncodingKey::from_secret(livegate_fuzz::SECRET.as_bytes());
        let Ok(token) = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        else {
            return;
        };
        if let Ok(identity) = verify(&token) {
            let sub = claims
                .get("sub")
                .and_then(|s| s.as_str())
                .unwrap_or_default();
            assert!(!sub.is_empty(), "an identity needs a subject: {text}");
            assert!(
                claims.get("exp").and_then(|e| e.as_f64()).is_some(),
                "and an expiry: {text}"
            );
            // Verified means not yet expired: the identity must say so too (a
            // fractional or exponent `exp` once read as 1970).
            assert!(
                identity.expires_at > chrono::Utc::now() - chrono::Duration::seconds(10),
                "a live token's identity expires in the future: {text} -> {}",
                identity.expires_at
            );
        }
    }
});
