//! The key set of an outside identity provider (`--jwt-jwks-url`): fetched,
//! cached, and picked by the token's `kid`.
//!
//! - A token whose `kid` is not in the cached set makes one refetch; such
//!   refetches happen at most once per [`REFETCH_EVERY`] (an identity provider that rotates keys
//!   publishes the new key before signing with it); tokens naming made-up
//!   `kid`s therefore cost one request per 30 s, not one per token.
//! - The set is also refetched every [`REFRESH_EVERY`], so a key the provider
//!   withdraws stops being accepted.
//! - A fetch that fails (the URL is down or answers an error, the answer is
//!   not JSON or has no `keys` array) keeps the last good set serving. A key
//!   set that is read replaces the cached one whatever it holds: a provider
//!   that withdraws every key (or publishes only keys livegate cannot use)
//!   gets every token refused.
//!
//! Each key is tied to one algorithm: its `alg` when the set names one, else the
//! usual one of its type (RSA: RS256, EC P-256: ES256, P-384: ES384, Ed25519:
//! EdDSA); a token must name exactly that algorithm. Symmetric (`oct`) keys and
//! keys for encryption (`use: enc`) are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value as Json;

/// Shortest time between two fetches caused by unknown `kid`s.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// How often the set is refetched anyway.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// Longest wait for the first fetch before the server starts anyway.
const START_WAIT: Duration = Duration::from_secs(3);
/// Longest wait for the key set's URL.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest key set read, in bytes.
const MAX_SET_BYTES: usize = 1 << 20;

/// One usable key of the set.
pub(super) struct Key {
    pub alg: Algorithm,
    pub key: DecodingKey,
    pub validation: Validation,
}

/// The keys of one fetch, by `kid` (keys without one are kept apart).
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    unnamed: Vec<Arc<Key>>,
}

impl Keys {
    /// The key a token with header `kid` and `alg` is checked with: the key of
    /// that `kid`, or, for a token naming none, the one key of its algorithm.
    fn pick(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut of_alg = self
                    .by_kid
                    .values()
                    .chain(self.unnamed.iter())
                    .filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }
}

/// A cached key set and how to refetch it.
pub struct KeySet {
    url: String,
    /// The URL as logged: no credentials, no query.
    shown: String,
    client: reqwest::Client,
    keys: RwLock<Arc<Keys>>,
    /// When an unknown `kid` last made a fetch (the fetches at start and every
    /// [`REFRESH_EVERY`] do not count); held while any fetch runs, so
    /// concurrent unknown `kid`s wait for one fetch instead of starting several.
    last_on_demand: tokio::sync::Mutex<Option<Instant>>,
    validation: Box<dyn Fn(Algorithm) -> Validation + Send + Sync>,
    /// [`REFETCH_EVERY`] and [`REFRESH_EVERY`], unless a test shortens them.
    refetch_every: Duration,
    refresh_every: Duration,
    /// Whether a fetch has ended (well or not) since start.
    fetched: AtomicBool,
}

impl KeySet {
    /// A key set at `url`, empty until [`KeySet::start`], refetched at most
    /// every `refetch` for unknown `kid`s and every `refresh` anyway;
    /// `validation` builds the claim checks of an algorithm.
    pub fn new(
        url: String,
        (refetch_every, refresh_every): (Duration, Duration),
        validation: impl Fn(Algorithm) -> Validation + Send + Sync + 'static,
    ) -> anyhow::Result<KeySet> {
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| anyhow::anyhow!("--jwt-jwks-url {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            anyhow::bail!("--jwt-jwks-url must be an http(s) URL, not {url:?}");
        }
        let host = parsed.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        // Logged without credentials or query, which it may hold.
        let shown = format!("{}://{}{}", parsed.scheme(), host, parsed.path());
        if parsed.scheme() == "http" && !loopback {
            // Whoever can alter the answer can sign tokens livegate accepts.
            tracing::warn!(url = %shown, "--jwt-jwks-url is plain http: use https outside a private network");
        }
        // A few redirects, never from https down to http.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().scheme() != "https"
                && attempt.previous().iter().any(|u| u.scheme() == "https")
            {
                attempt.error("a redirect from https to plain http")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(redirects)
            .user_agent(concat!("livegate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(KeySet {
            url,
            shown,
            client,
            keys: RwLock::new(Arc::new(Keys::default())),
            last_on_demand: tokio::sync::Mutex::new(None),
            validation: Box::new(validation),
            refetch_every,
            refresh_every,
            fetched: AtomicBool::new(false),
        })
    }

    /// Fetches the set, waiting at most [`START_WAIT`] for it (a slow or
    /// failed fetch is logged and the server starts anyway: the fetch goes on,
    /// and the first token with an unknown `kid` refetches), then refreshes it
    /// every [`REFRESH_EVERY`] while the set is in use.
    pub async fn start(self: &Arc<Self>) {
        let weak: Weak<KeySet> = Arc::downgrade(self);
        let every = self.refresh_every;
        tokio::spawn(async move {
            loop {
                let Some(set) = weak.upgrade() else { return };
                set.refetch(false).await;
                drop(set);
                tokio::time::sleep(every).await;
            }
        });
        let started = Instant::now();
        while started.elapsed() < START_WAIT && !self.fetched.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The key for a token whose header names `kid` and `alg` (none: no key
    /// has this `kid`, or without a `kid` no single key has this algorithm);
    /// an unknown one refetches the set first, when the last such refetch is
    /// old enough.
    pub(super) async fn pick(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        if let Some(key) = self.cached(kid, alg) {
            return Some(key);
        }
        // Whether this call fetched or waited for another's fetch, the set
        // may now hold the key.
        self.refetch(true).await;
        self.cached(kid, alg)
    }

    fn cached(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        let keys = match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        keys.pick(kid, alg)
    }

    /// Fetches the set and swaps it in when it reads; `on_demand` (for an
    /// unknown `kid`) fetches only when the last such fetch is at least
    /// [`REFETCH_EVERY`] old.
    async fn refetch(&self, on_demand: bool) {
        // On demand, one fetch at a time (others wait for it and look again);
        // the refresh runs apart, never holding them up.
        let _turn = if on_demand {
            let mut last = self.last_on_demand.lock().await;
            if last.is_some_and(|at| at.elapsed() < self.refetch_every) {
                return;
            }
            *last = Some(Instant::now());
            Some(last)
        } else {
            None
        };
        let fetched = self.fetch().await;
        self.fetched.store(true, Ordering::Release);
        match fetched {
            Ok(keys) => {
                tracing::info!(
                    url = %self.shown,
                    keys = keys.by_kid.len() + keys.unnamed.len(),
                    "fetched the identity provider's key set"
                );
                let keys = Arc::new(keys);
                match self.keys.write() {
                    Ok(mut slot) => *slot = keys,
                    Err(poisoned) => *poisoned.into_inner() = keys,
                }
            }
            Err(e) => {
                tracing::warn!(url = %self.shown, error = %e, "cannot fetch the identity provider's key set; the last good one keeps serving");
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<Keys> {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        if !response.status().is_success() {
            anyhow::bail!("the URL answered {}", response.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_SET_BYTES {
                anyhow::bail!("the key set is larger than {MAX_SET_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        let set: Json = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("the answer is not JSON: {e}"))?;
        let Some(entries) = set.get("keys").and_then(Json::as_array) else {
            anyhow::bail!("the answer has no `keys` array");
        };
        let mut keys = Keys::default();
        for entry in entries {
            let Some((kid, key)) = self.usable(entry) else {
                continue;
            };
            match kid {
                Some(kid) => {
                    keys.by_kid.insert(kid, Arc::new(key));
                }
                None => keys.unnamed.push(Arc::new(key)),
            }
        }
        if keys.by_kid.is_empty() && keys.unnamed.is_empty() {
            tracing::warn!(url = %self.shown, "the identity provider's key set holds no signing key livegate can use: every token it signs is refused");
        }
        Ok(keys)
    }

    /// The key an entry of the set stands for, if it is a signing key livegate
    /// can check.
    fn usable(&self, entry: &Json) -> Option<(Option<String>, Key)> {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(error = %e, "skipping a key the set holds: not readable");
                return None;
            }
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        let natural = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => natural,
            Some(named) => {
                let named = Algorithm::try_from(named).ok()?;
                // The named algorithm must fit the key's type.
                let same_family = |a: Algorithm| match natural {
                    Algorithm::RS256 => matches!(
                        a,
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    ),
                    other => a == other,
                };
                if !same_family(named) {
                    return None;
                }
                named
            }
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some((
            jwk.common.key_id.clone(),
            Key {
                alg,
                key,
                validation: (self.validation)(alg),
            },
        ))
    }
}
