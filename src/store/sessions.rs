//! Users with passwords, accounts created by sign-up, sessions and refresh tokens.
//! Refresh tokens are stored only as hashes; a session is the family of tokens
//! rotated from one sign-in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{Account, Store, StoreError, User};
use crate::values::{new_id, now};

/// A stored refresh token with its session's state.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    pub session_id: String,
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
    /// Set once the token was exchanged: presenting it again is reuse.
    pub used: bool,
    /// Whether the session (the whole family) is revoked.
    pub revoked: bool,
}

impl Store {
    /// Creates a user with a password hash in `account`; `account_slug_new` first
    /// creates that account (the user then administers it). `Conflict` when the
    /// email or the new slug is taken. One transaction: no half-made sign-ups.
    pub async fn create_user(
        &self,
        account: Option<&Account>,
        new_account_slug: Option<&str>,
        email: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<User, StoreError> {
        let txn = self.db.begin().await?;
        let account_id = match (new_account_slug, account) {
            (Some(slug), _) => {
                let id = new_id();
                let q = Query::insert()
                    .into_table("livegate_accounts")
                    .columns(["id", "slug", "created_at"])
                    .values_panic([id.clone().into(), slug.into(), now().into()])
                    .on_conflict(OnConflict::column("slug").do_nothing().to_owned())
                    .to_owned();
                if txn.execute(&q).await?.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!(
                        "the account \"{slug}\" already exists"
                    )));
                }
                id
            }
            (None, Some(a)) => a.id.clone(),
            (None, None) => return Err(StoreError::Corrupt("create_user needs an account".into())),
        };
        let user = User {
            id: new_id(),
            account_id,
            email: email.to_string(),
            role: role.to_string(),
        };
        if txn
            .execute(&super::accounts::insert_user(&user, Some(password_hash)))
            .await?
            .rows_affected()
            == 0
        {
            return Err(StoreError::Conflict(
                "an account with this email already exists".into(),
            ));
        }
        txn.commit().await?;
        Ok(user)
    }

    /// The user with `email` and its password hash (none for password-less users).
    pub async fn user_credentials(
        &self,
        email: &str,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        self.user_row("email", email).await
    }

    /// Starts a session for `user_id` with its first refresh token.
    pub async fn create_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let txn = self.db.begin().await?;
        let id = new_id();
        let q = Query::insert()
            .into_table("livegate_sessions")
            .columns(["id", "user_id", "created_at", "revoked_at"])
            .values_panic([
                id.clone().into(),
                user_id.into(),
                now().into(),
                None::<DateTime<Utc>>.into(),
            ])
            .to_owned();
        txn.execute(&q).await?;
        txn.execute(&insert_token(&id, token_hash, expires_at))
            .await?;
        txn.commit().await?;
        Ok(id)
    }

    /// The refresh token whose hash is `token_hash`.
    pub async fn refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshToken>, StoreError> {
        let q = Query::select()
            .column(("t", "session_id"))
            .column(("t", "expires_at"))
            .column(("t", "used_at"))
            .column(("s", "user_id"))
            .column(("s", "revoked_at"))
            .from_as("livegate_refresh_tokens", "t")
            .join_as(
                sea_orm::sea_query::JoinType::InnerJoin,
                "livegate_sessions",
                "s",
                Expr::col(("s", "id")).equals(("t", "session_id")),
            )
            .and_where(Expr::col(("t", "token_hash")).eq(token_hash))
            .to_owned();
        Ok(match self.db.query_one(&q).await? {
            Some(r) => Some(RefreshToken {
                session_id: r.try_get("", "session_id")?,
                user_id: r.try_get("", "user_id")?,
                expires_at: r.try_get("", "expires_at")?,
                used: r.try_get::<Option<DateTime<Utc>>>("", "used_at")?.is_some(),
                revoked: r
                    .try_get::<Option<DateTime<Utc>>>("", "revoked_at")?
                    .is_some(),
            }),
            None => None,
        })
    }

    /// Exchanges `old_hash` for `new_hash` in the same session. `false` when the old
    /// token was already used (a concurrent or replayed refresh): that is reuse.
    pub async fn rotate_refresh_token(
        &self,
        session_id: &str,
        old_hash: &str,
        new_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let q = Query::update()
            .table("livegate_refresh_tokens")
            .value("used_at", now())
            .and_where(Expr::col("token_hash").eq(old_hash))
            .and_where(Expr::col("used_at").is_null())
            .to_owned();
        if txn.execute(&q).await?.rows_affected() != 1 {
            return Ok(false);
        }
        txn.execute(&insert_token(session_id, new_hash, expires_at))
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Revokes session `id` and with it every refresh token of its family,
    /// then tells the live connections of every instance (see
    /// [`Store::revocations`]).
    pub async fn revoke_session(&self, id: &str) -> Result<(), StoreError> {
        let q = Query::update()
            .table("livegate_sessions")
            .value("revoked_at", now())
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("revoked_at").is_null())
            .to_owned();
        self.db.execute(&q).await?;
        self.announce_revocation(id).await;
        Ok(())
    }

    /// Whether session `id` is revoked (`None`: no such session). Asked on
    /// every request with a session token, so a session found live is
    /// remembered for [`LIVE_SESSION_TTL`] (see [`SessionCache`]).
    pub async fn session_revoked(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let cache = &self.outbox.sessions;
        // Only while revocations are heard (on PostgreSQL, through `LISTEN`).
        let heard = self.outbox.listening.load(Ordering::SeqCst);
        if heard && cache.is_live(id) {
            return Ok(Some(false));
        }
        let generation = cache.generation();
        cache.lookups.fetch_add(1, Ordering::Relaxed);
        let q = Query::select()
            .column("revoked_at")
            .from("livegate_sessions")
            .and_where(Expr::col("id").eq(id))
            .to_owned();
        let revoked = match self.db.query_one(&q).await? {
            Some(r) => Some(
                r.try_get::<Option<DateTime<Utc>>>("", "revoked_at")?
                    .is_some(),
            ),
            None => None,
        };
        if heard && revoked == Some(false) {
            cache.remember(id, generation);
        }
        Ok(revoked)
    }

    /// How many session checks went to the database (the rest were answered
    /// by the cache of live sessions).
    pub fn session_lookups(&self) -> u64 {
        self.outbox.sessions.lookups.load(Ordering::Relaxed)
    }
}

/// How long a session found live is trusted without asking the database.
/// Revocations reach the cache at once (see [`SessionCache`]); this bounds
/// how long one that never arrives (a `NOTIFY` that could not be sent) goes
/// unnoticed by plain requests, as it already bounds nothing longer than an
/// access token's life for open connections.
pub const LIVE_SESSION_TTL: Duration = Duration::from_secs(10);

/// Sessions remembered live at most (past it the cache starts over).
const LIVE_SESSIONS_KEPT: usize = 10_000;

/// Sessions recently found live, so that a request with a session token does
/// not cost a database round trip every time.
///
/// Why it is safe: every revocation this instance hears of (its own, another
/// instance's `NOTIFY`, the replay after a lost `LISTEN` connection, or "any
/// session" when they cannot be told one by one) passes through
/// [`SessionCache::forget`] before any connection is told, and the cache is
/// used only while revocations are heard. A lookup that raced a revocation is
/// not remembered: `forget` moves the generation on, and `remember` keeps an
/// answer only if the generation is the one read before the lookup began.
#[derive(Default)]
pub struct SessionCache {
    /// A generation, moved on by every revocation, and when each session
    /// was found live.
    live: Mutex<(u64, HashMap<String, Instant>)>,
    pub(super) lookups: AtomicU64,
}

impl SessionCache {
    fn state(&self) -> MutexGuard<'_, (u64, HashMap<String, Instant>)> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` was found live within [`LIVE_SESSION_TTL`].
    fn is_live(&self, id: &str) -> bool {
        self.state()
            .1
            .get(id)
            .is_some_and(|at| at.elapsed() < LIVE_SESSION_TTL)
    }

    /// The generation to pass to [`remember`](Self::remember) after a lookup.
    fn generation(&self) -> u64 {
        self.state().0
    }

    /// Remembers `id` as live, unless a revocation was heard since
    /// `generation` was read.
    fn remember(&self, id: &str, generation: u64) {
        let mut state = self.state();
        if state.0 != generation {
            return;
        }
        if state.1.len() >= LIVE_SESSIONS_KEPT {
            state.1.clear();
        }
        state.1.insert(id.to_string(), Instant::now());
    }

    /// Forgets `id` ([`super::ANY_SESSION`]: every session), and whatever
    /// lookup is under way.
    pub(super) fn forget(&self, id: &str) {
        let mut state = self.state();
        state.0 += 1;
        if id == super::ANY_SESSION {
            state.1.clear();
        } else {
            state.1.remove(id);
        }
    }
}

fn insert_token(
    session_id: &str,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table("livegate_refresh_tokens")
        .columns([
            "token_hash",
            "session_id",
            "expires_at",
            "created_at",
            "used_at",
        ])
        .values_panic([
            token_hash.into(),
            session_id.into(),
            expires_at.into(),
            now().into(),
            None::<DateTime<Utc>>.into(),
        ])
        .to_owned()
}
