//! Minting and verifying access tokens.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::AuthError;
use super::jwks::KeySet;
use crate::access::Role;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;
/// Sign-ups and sign-ins that may wait for a password-hashing slot, by default:
/// with a few cores that is well under a second of waiting.
pub const DEFAULT_HASH_QUEUE: usize = 32;
/// Shortest HS256 secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 32;

/// Auth settings from flags and environment.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 secret (`LIVEGATE_JWT_SECRET`); generated into `data_dir` when absent.
    pub jwt_secret: Option<String>,
    /// PEM public key of an outside identity provider (RSA: RS256, EC P-256: ES256).
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// URL of an outside identity provider's key set (JWKS).
    pub jwt_jwks_url: Option<String>,
    /// Shortest time between fetches of the key set for unknown `kid`s (30 s;
    /// tests shorten it).
    pub jwks_refetch_every: std::time::Duration,
    /// How often the key set is refetched anyway (10 minutes; tests shorten it).
    pub jwks_refresh_every: std::time::Duration,
    /// Required `iss`, when set (also written into minted tokens).
    pub jwt_issuer: Option<String>,
    /// Required `aud`, when set (also written into minted tokens).
    pub jwt_audience: Option<String>,
    /// Claim holding the role (`USER`/`ADMIN`, any case).
    pub role_claim: String,
    /// Claim holding the account id or slug.
    pub account_claim: String,
    /// Claim holding the email.
    pub email_claim: String,
    /// Lifetime of minted access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Where a generated secret is kept.
    pub data_dir: std::path::PathBuf,
    /// Password hashes (sign-up and sign-in) run at once; default: the number of cores.
    pub hash_concurrency: usize,
    /// Sign-ups and sign-ins that may wait for a hashing slot; past that they
    /// are refused with `RATE_LIMITED`.
    pub hash_queue: usize,
    /// Sign-ups allowed per client address per minute.
    pub sign_ups_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_jwks_url: None,
            jwks_refetch_every: super::jwks::REFETCH_EVERY,
            jwks_refresh_every: super::jwks::REFRESH_EVERY,
            jwt_issuer: None,
            jwt_audience: None,
            role_claim: "role".into(),
            account_claim: "account".into(),
            email_claim: "email".into(),
            access_ttl: Duration::hours(1),
            refresh_ttl: Duration::days(30),
            data_dir: "data".into(),
            hash_concurrency: super::Hasher::default_concurrency(),
            hash_queue: DEFAULT_HASH_QUEUE,
            sign_ups_per_minute: super::sessions::SIGN_UPS_PER_ADDRESS_PER_MINUTE,
        }
    }
}

/// The claims livegate writes into the tokens it mints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub role: String,
    pub account: String,
    /// The session (refresh-token family) the token belongs to; not `sid`, which
    /// outside identity providers use for their own sessions.
    #[serde(rename = "lg_sid", skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub iat: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub email: Option<String>,
    pub role: Role,
    /// Account id or slug, as the token names it; `None` when it names none.
    pub account: Option<String>,
    pub session_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Keys and validations, built once at start-up.
pub struct Tokens {
    config: AuthConfig,
    encoding: EncodingKey,
    /// One (key, validation) per accepted algorithm.
    verifiers: Vec<(Algorithm, DecodingKey, Validation)>,
    /// An outside identity provider's key set, when configured.
    key_set: Option<Arc<KeySet>>,
}

fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECONDS;
    v.validate_nbf = true;
    // jsonwebtoken checks `iss`/`aud` only when present unless they are required:
    // a configured issuer or audience must also be present.
    let mut required = vec!["exp", "sub"];
    match &config.jwt_issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    match &config.jwt_audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

impl Tokens {
    /// Loads or generates the secret, reads the public key, builds the validations.
    pub fn new(config: AuthConfig) -> anyhow::Result<Tokens> {
        let secret = match &config.jwt_secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                anyhow::bail!("LIVEGATE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
            }
            Some(s) => s.clone().into_bytes(),
            None => generated_secret(&config.data_dir)?,
        };
        let mut verifiers = vec![(
            Algorithm::HS256,
            DecodingKey::from_secret(&secret),
            validation(Algorithm::HS256, &config),
        )];
        if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --jwt-public-key {}: {e}", path.display())
            })?;
            let (alg, key) = match (
                DecodingKey::from_rsa_pem(&pem),
                DecodingKey::from_ec_pem(&pem),
            ) {
                (Ok(key), _) => (Algorithm::RS256, key),
                (_, Ok(key)) => (Algorithm::ES256, key),
                _ => anyhow::bail!(
                    "--jwt-public-key {}: not an RSA or EC (P-256) public key in PEM form",
                    path.display()
                ),
            };
            verifiers.push((alg, key, validation(alg, &config)));
        }
        let key_set = match &config.jwt_jwks_url {
            Some(url) => {
                let checks = config.clone();
                let every = (config.jwks_refetch_every, config.jwks_refresh_every);
                Some(Arc::new(KeySet::new(url.clone(), every, move |alg| {
                    validation(alg, &checks)
                })?))
            }
            None => None,
        };
        Ok(Tokens {
            encoding: EncodingKey::from_secret(&secret),
            verifiers,
            key_set,
            config,
        })
    }

    /// Fetches the outside identity provider's key set, if one is configured,
    /// and keeps it fresh from then on.
    pub async fn start_key_set(&self) {
        if let Some(set) = &self.key_set {
            set.start().await;
        }
    }

    /// The settings these tokens follow.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Mints an access token for a built-in user.
    pub fn mint(
        &self,
        user_id: &str,
        email: &str,
        role: Role,
        account_id: &str,
        session: Option<&str>,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let exp = now + self.config.access_ttl;
        let claims = Claims {
            sub: user_id.into(),
            email: email.into(),
            role: role.as_str().into(),
            account: account_id.into(),
            sid: session.map(str::to_string),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            iss: self.config.jwt_issuer.clone(),
            aud: self.config.jwt_audience.clone(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((
            token,
            DateTime::from_timestamp(exp.timestamp(), 0).unwrap_or(exp),
        ))
    }

    /// Verifies `token` with the validation of the algorithm its header names:
    /// HS256 with the secret; with a key set, the key its `kid` names (or the
    /// set's one key of its algorithm); else the PEM key of its algorithm.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|_| match header_alg(token) {
            Some(alg) => AuthError::Algorithm(alg),
            None => AuthError::Malformed("not a JWT".into()),
        })?;
        let pem = self.verifiers.iter().find(|(alg, _, _)| *alg == header.alg);
        // Which key checks a token: HS256 always the secret. Other algorithms:
        // with a key set, the key its `kid` names (without a `kid`, the set's
        // one key of its algorithm); a token the set has no key for falls back
        // to the PEM key of its algorithm, if any (a provider's tokens carry a
        // `kid` whichever way livegate knows its key).
        let from_set = match &self.key_set {
            Some(set) if asymmetric(header.alg) && (header.kid.is_some() || pem.is_none()) => {
                Some(set.pick(header.kid.as_deref(), header.alg).await)
            }
            _ => None,
        };
        let data = match (from_set, pem) {
            (Some(Some(key)), _) if key.alg == header.alg => {
                decode_claims(token, &key.key, &key.validation, header.alg)?
            }
            (Some(Some(_)), _) => return Err(AuthError::Algorithm(format!("{:?}", header.alg))),
            (_, Some((_, key, validation))) => decode_claims(token, key, validation, header.alg)?,
            (Some(None), None) => return Err(AuthError::UnknownKey),
            (None, None) => return Err(AuthError::Algorithm(format!("{:?}", header.alg))),
        };
        let claims = data.claims;
        let text = |name: &str| claims.get(name).and_then(Json::as_str).map(str::to_string);
        let user_id = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Malformed("`sub` must be a non-empty string".into()))?;
        let role = match claims.get(&self.config.role_claim) {
            None | Some(Json::Null) => Role::User,
            Some(Json::String(r)) => Role::parse(r)
                .ok_or_else(|| AuthError::Malformed(format!("unknown role \"{r}\"")))?,
            Some(_) => {
                return Err(AuthError::Malformed(format!(
                    "`{}` must be a string",
                    self.config.role_claim
                )));
            }
        };
        // A NumericDate may be fractional or written with an exponent (RFC 7519
        // §2: `1.7e9`), and the library has checked it is in the future; read
        // it as such, not as 1970 (which closed a socket at once). Past year
        // 9999 is the same as year 9999.
        let exp = claims
            .get("exp")
            .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f.floor() as i64)))
            .unwrap_or_default()
            .min(LAST_TIMESTAMP);
        Ok(Identity {
            user_id,
            email: text(&self.config.email_claim),
            role,
            account: text(&self.config.account_claim),
            session_id: text("lg_sid"),
            expires_at: DateTime::from_timestamp(exp, 0).unwrap_or_else(Utc::now),
        })
    }
}

/// Whether `alg` is a public-key algorithm (the only kind a key set serves).
fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The claims of `token`, checked with `key` and `validation`.
fn decode_claims(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    alg: Algorithm,
) -> Result<jsonwebtoken::TokenData<Map<String, Json>>, AuthError> {
    decode::<Map<String, Json>>(token, key, validation).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm => AuthError::Algorithm(format!("{alg:?}")),
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::Malformed(format!("the `{c}` claim is missing"))
        }
        _ => AuthError::Malformed("its claims cannot be read".into()),
    })
}

/// 9999-12-31T23:59:59Z: the latest expiry a token is taken to have.
const LAST_TIMESTAMP: i64 = 253_402_300_799;

/// The `alg` a token's header names, read without trusting anything else in it:
/// for a clear refusal of algorithms livegate does not know (such as `none`).
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let first = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .ok()?;
    let header: Map<String, Json> = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_string)
}

/// The secret in `data_dir/jwt-secret`, generated (and saved, readable only by
/// this user) on first use.
fn generated_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let path = data_dir.join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let trimmed = existing.trim();
        if trimmed.len() >= MIN_SECRET_BYTES {
            return Ok(trimmed.as_bytes().to_vec());
        }
        anyhow::bail!(
            "{} holds a secret shorter than {MIN_SECRET_BYTES} bytes; delete it to generate a new one",
            path.display()
        );
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let mut bytes = [0u8; 48];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(&path, &secret)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    tracing::warn!(path = %path.display(), "no LIVEGATE_JWT_SECRET set: generated a signing secret; set LIVEGATE_JWT_SECRET in production");
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
