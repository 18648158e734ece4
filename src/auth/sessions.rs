//! Built-in accounts: sign-up and sign-in (both rate-limited, their password
//! hashing bounded), refresh-token rotation with reuse detection, and sign-out. Refresh tokens are random, shown to the client
//! once, and stored only as SHA-256 hashes.

use std::net::IpAddr;
use std::num::NonZeroU32;

use base64::Engine;
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::password::check_password;
use super::{Busy, Hasher, Tokens, normalize_email};
use crate::access::Role;
use crate::metrics::HashMetrics;
use crate::store::{DEFAULT_ACCOUNT, Store, StoreError, User};

/// A signed-in session as the `Session` GraphQL type shows it.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// Why a session operation failed; each maps to one API error code.
#[derive(Debug)]
pub enum SessionError {
    /// `BAD_USER_INPUT` on argument `field`.
    BadInput {
        field: &'static str,
        message: String,
    },
    Conflict(String),
    Unauthenticated(String),
    RateLimited(String),
    Internal(String),
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => SessionError::Conflict(m),
            other => SessionError::Internal(other.to_string()),
        }
    }
}

impl From<anyhow::Error> for SessionError {
    fn from(e: anyhow::Error) -> Self {
        SessionError::Internal(format!("{e:#}"))
    }
}

/// Sign-in attempts allowed per email per minute.
pub const SIGN_INS_PER_EMAIL_PER_MINUTE: u32 = 10;
/// Sign-in attempts allowed per client address per minute.
pub const SIGN_INS_PER_ADDRESS_PER_MINUTE: u32 = 30;
pub use crate::store::REVOCATIONS_BUFFER;
/// Sign-ups allowed per client address per minute, unless configured otherwise.
pub const SIGN_UPS_PER_ADDRESS_PER_MINUTE: u32 = 30;

/// The session service: tokens, sign-in and sign-up rate limits, and the
/// bounded password hasher.
pub struct SignIn {
    pub tokens: Tokens,
    by_email: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    sign_ups_by_address: DefaultKeyedRateLimiter<IpAddr>,
    hasher: Hasher,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// `RATE_LIMITED` for `what` (e.g. "sign-in attempts"), retry after `n` allows.
fn limited(what: &str, n: governor::NotUntil<governor::clock::QuantaInstant>) -> SessionError {
    let wait = n.wait_time_from(DefaultClock::default().now());
    SessionError::RateLimited(format!(
        "too many {what}; try again in {} s",
        wait.as_secs().max(1)
    ))
}

impl From<Busy> for SessionError {
    fn from(_: Busy) -> Self {
        SessionError::RateLimited(
            "the server is busy checking passwords; try again in a few seconds".into(),
        )
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn role_of(user: &User) -> Role {
    Role::parse(&user.role).unwrap_or(Role::User)
}

/// `^[a-z0-9][a-z0-9-]{1,62}$`: account slugs appear in URLs and headers.
fn check_slug(slug: &str) -> Result<(), SessionError> {
    let ok = (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SessionError::BadInput {
            field: "newAccount",
            message: "newAccount: use 2 to 63 lowercase letters, digits and dashes, not starting with a dash".into(),
        })
    }
}

impl SignIn {
    /// The service around `tokens`, its limits from their config; its password
    /// hashing reports to `hashing`.
    pub fn new(tokens: Tokens, hashing: HashMetrics) -> SignIn {
        let config = tokens.config();
        let hasher = Hasher::new(config.hash_concurrency, config.hash_queue, hashing);
        let sign_ups = per_minute(config.sign_ups_per_minute);
        SignIn {
            tokens,
            by_email: RateLimiter::keyed(per_minute(SIGN_INS_PER_EMAIL_PER_MINUTE)),
            by_address: RateLimiter::keyed(per_minute(SIGN_INS_PER_ADDRESS_PER_MINUTE)),
            sign_ups_by_address: RateLimiter::keyed(sign_ups),
            hasher,
        }
    }

    /// Whether session `id` has ended (revoked or gone), for a connection that
    /// missed revocations. A failed check counts as ended: the client reconnects
    /// and is checked afresh, rather than a signed-out one streaming on.
    pub async fn session_ended(&self, store: &Store, id: &str) -> bool {
        match store.session_revoked_now(id).await {
            Ok(Some(false)) => false,
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-check a session after missed revocations");
                true
            }
        }
    }

    /// Revokes a session; says whether this call did (not: it was already).
    async fn revoke(&self, store: &Store, session_id: &str) -> Result<bool, SessionError> {
        // The store tells every instance's live connections.
        Ok(store.revoke_session(session_id).await?)
    }

    /// Forgets rate-limit state of keys that have been quiet (call now and then).
    pub fn forget_quiet_keys(&self) {
        self.by_email.retain_recent();
        self.by_address.retain_recent();
        self.sign_ups_by_address.retain_recent();
    }

    /// `signUp`: joins the default account, or creates `new_account` and becomes
    /// its ADMIN. Limited per client address. The cheap refusals come first (bad
    /// input, the rate limit, a taken email or slug), so only a sign-up that can
    /// succeed costs a password hash.
    pub async fn sign_up(
        &self,
        store: &Store,
        email: &str,
        password: &str,
        new_account: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<Session, SessionError> {
        let email = normalize_email(email).map_err(|m| SessionError::BadInput {
            field: "email",
            message: format!("email: {m}"),
        })?;
        check_password(password, &email).map_err(|m| SessionError::BadInput {
            field: "password",
            message: format!("password: {m}"),
        })?;
        if let Some(slug) = new_account {
            check_slug(slug)?;
        }
        if let Some(ip) = address {
            self.sign_ups_by_address
                .check_key(&super::address_key(ip))
                .map_err(|n| limited("sign-ups from this address", n))?;
        }
        // A taken email is refused before hashing. The answer says so anyway
        // (CONFLICT), so answering it faster tells nobody more; the rate limit
        // above bounds how fast anyone can ask. The insert below stays the
        // authority (a concurrent sign-up may take the email meanwhile).
        if store.user_credentials(&email).await?.is_some() {
            return Err(SessionError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        if let Some(slug) = new_account
            && store
                .find_account(slug)
                .await?
                .is_some_and(|a| a.slug == slug)
        {
            return Err(SessionError::Conflict(format!(
                "the account \"{slug}\" already exists"
            )));
        }
        let hash = self.hasher.hash(password.to_string()).await??;
        let user = match new_account {
            Some(slug) => {
                store
                    .create_user(None, Some(slug), &email, &hash, Role::Admin.as_str())
                    .await?
            }
            None => {
                let account = store.ensure_account(DEFAULT_ACCOUNT).await?;
                store
                    .create_user(Some(&account), None, &email, &hash, Role::User.as_str())
                    .await?
            }
        };
        tracing::info!(user = %user.id, account = %user.account_id, "signed up");
        self.start_session(store, user).await
    }

    /// `signIn`, limited per email and per client address.
    pub async fn sign_in(
        &self,
        store: &Store,
        email: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<Session, SessionError> {
        let key = email.trim().to_lowercase();
        if let Some(ip) = address {
            self.by_address
                .check_key(&super::address_key(ip))
                .map_err(|n| limited("sign-in attempts", n))?;
        }
        self.by_email
            .check_key(&key)
            .map_err(|n| limited("sign-in attempts", n))?;
        let wrong = || SessionError::Unauthenticated("wrong email or password".into());
        let found = match normalize_email(email) {
            Ok(email) => store.user_credentials(&email).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        if !self.hasher.verify(password.to_string(), hash).await? {
            return Err(wrong());
        }
        let user = user.ok_or_else(wrong)?;
        self.start_session(store, user).await
    }

    async fn start_session(&self, store: &Store, user: User) -> Result<Session, SessionError> {
        let refresh = random_token();
        let expires = Utc::now() + self.tokens.config().refresh_ttl;
        let session_id = store
            .create_session(&user.id, &token_hash(&refresh), expires)
            .await?;
        let (access, expires_at) = self.tokens.mint(
            &user.id,
            &user.email,
            role_of(&user),
            &user.account_id,
            Some(&session_id),
        )?;
        Ok(Session {
            access_token: access,
            refresh_token: refresh,
            expires_at,
            user,
        })
    }

    /// `refreshSession`: exchanges a refresh token for a new pair. Presenting a
    /// token that was already exchanged revokes its whole session (it was stolen,
    /// or replayed).
    pub async fn refresh(
        &self,
        store: &Store,
        refresh_token: &str,
    ) -> Result<Session, SessionError> {
        let old_hash = token_hash(refresh_token);
        let refused = |m: &str| SessionError::Unauthenticated(m.to_string());
        let found = store
            .refresh_token(&old_hash)
            .await?
            .ok_or_else(|| refused("unknown refresh token"))?;
        if found.revoked {
            return Err(refused("this session was signed out"));
        }
        if found.used {
            // Told once: presenting the used token again and again is one event.
            if self.revoke(store, &found.session_id).await? {
                tell(store, "auth.refresh_reuse", &found).await;
            }
            tracing::warn!(session = %found.session_id, "refresh token reuse detected; session revoked");
            return Err(refused(
                "this refresh token was already used; the session has been revoked, sign in again",
            ));
        }
        if found.expires_at <= Utc::now() {
            return Err(refused("the refresh token has expired; sign in again"));
        }
        let user = store
            .user_by_id(&found.user_id)
            .await?
            .ok_or_else(|| refused("the user no longer exists"))?;
        let new_token = random_token();
        let expires = Utc::now() + self.tokens.config().refresh_ttl;
        if !store
            .rotate_refresh_token(
                &found.session_id,
                &old_hash,
                &token_hash(&new_token),
                expires,
            )
            .await?
        {
            if self.revoke(store, &found.session_id).await? {
                tell(store, "auth.refresh_reuse", &found).await;
            }
            return Err(refused(
                "this refresh token was already used; the session has been revoked, sign in again",
            ));
        }
        let (access, expires_at) = self.tokens.mint(
            &user.id,
            &user.email,
            role_of(&user),
            &user.account_id,
            Some(&found.session_id),
        )?;
        Ok(Session {
            access_token: access,
            refresh_token: new_token,
            expires_at,
            user,
        })
    }

    /// `signOut`: revokes the session of `refresh_token`; `false` if it names none.
    pub async fn sign_out(&self, store: &Store, refresh_token: &str) -> Result<bool, SessionError> {
        match store.refresh_token(&token_hash(refresh_token)).await? {
            Some(found) => {
                // Signing out a session already signed out again and again
                // is not an event each time.
                if self.revoke(store, &found.session_id).await? {
                    tell(store, "auth.sign_out", &found).await;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Emits system event `kind` for the session of `found` (its user's account),
/// with the session's id: never the token.
async fn tell(store: &Store, kind: &str, found: &crate::store::RefreshToken) {
    match store.user_by_id(&found.user_id).await {
        Ok(Some(user)) => store.emit(
            &user.account_id,
            kind,
            Some(&user.id),
            serde_json::json!({ "email": user.email, "session": found.session_id }),
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not emit a system event"),
    }
}
