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
        let _turn = self.write_turn().await;
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
        let _turn = self.write_turn().await;
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
        let _turn = self.write_turn().await;
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
    /// Says whether it revoked it (false: it was revoked already).
    pub async fn revoke_session(&self, id: &str) -> Result<bool, StoreError> {
        let q = Query::update()
            .table("livegate_sessions")
            .value("revoked_at", now())
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("revoked_at").is_null())
            .to_owned();
        // Announced only when it revokes: signing out a session already
        // signed out again and again must not flood every instance.
        let revoked = {
            let _turn = self.write_turn().await;
            self.db.execute(&q).await?.rows_affected()
        };
        if revoked > 0 {
            self.announce_revocation(id).await;
        }
        Ok(revoked > 0)
    }

    /// Whether session `id` is revoked (`None`: no such session). Asked on
    /// every plain request with a session token, so a session found live is
    /// remembered for [`LIVE_SESSION_TTL`] (see [`SessionCache`]).
    pub async fn session_revoked(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let cache = &self.outbox.sessions;
        if cache.is_live(id) {
            return Ok(Some(false));
        }
        let (generation, asked) = (cache.generation(), Instant::now());
        let revoked = self.session_revoked_now(id).await?;
        if revoked == Some(false) {
            cache.remember(id, generation, asked);
        }
        Ok(revoked)
    }

    /// [`session_revoked`](Self::session_revoked), from the database: for
    /// what lives longer than a request (a socket, a stream), which must not
    /// start on a revocation this instance has not heard of yet.
    pub async fn session_revoked_now(&self, id: &str) -> Result<Option<bool>, StoreError> {
        self.outbox.sessions.lookups.fetch_add(1, Ordering::Relaxed);
        let q = Query::select()
            .column("revoked_at")
            .from("livegate_sessions")
            .and_where(Expr::col("id").eq(id))
            .to_owned();
        Ok(match self.db.query_one(&q).await? {
            Some(r) => Some(
                r.try_get::<Option<DateTime<Utc>>>("", "revoked_at")?
                    .is_some(),
            ),
            None => None,
        })
    }

    /// How many session checks went to the database (the rest were answered
    /// by the cache of live sessions).
    pub fn session_lookups(&self) -> u64 {
        self.outbox.sessions.lookups.load(Ordering::Relaxed)
    }
}

/// How long a session found live is trusted without asking the database
/// again, counted from before the lookup. Revocations reach the cache as soon
/// as this instance hears of them (see [`SessionCache`]); this bounds how long
/// one it has not heard of yet goes unnoticed by plain requests: the moments
/// between another instance's commit and its `NOTIFY` arriving, or a
/// `NOTIFY` that could not be sent.
pub const LIVE_SESSION_TTL: Duration = Duration::from_secs(10);

/// Sessions remembered live at most.
const LIVE_SESSIONS_KEPT: usize = 10_000;

/// Sessions recently found live, so that a plain request with a session
/// token does not cost a database round trip every time. Sockets and streams
/// ask the database when they start ([`Store::session_revoked_now`]).
///
/// Why it is safe: every revocation this instance hears of (its own, another
/// instance's `NOTIFY`, the replay after a lost `LISTEN` connection, or "any
/// session" when they cannot be told one by one) passes through
/// [`SessionCache::forget`] before any connection is told, and nothing is
/// trusted (or remembered) while revocations cannot be heard: from a lost
/// `LISTEN` connection until the revocations missed meanwhile were replayed
/// ([`SessionCache::hear`]). A lookup that raced a revocation is not
/// remembered: `forget` moves the generation on, and `remember` keeps an
/// answer only if the generation is the one read before the lookup began.
#[derive(Default)]
pub struct SessionCache {
    state: Mutex<Heard>,
    pub(super) lookups: AtomicU64,
}

#[derive(Default)]
struct Heard {
    /// Moved on by every revocation heard, and by going deaf.
    generation: u64,
    /// Whether revocations are heard now.
    hearing: bool,
    /// When each session was last asked about and found live.
    live: HashMap<String, Instant>,
}

impl SessionCache {
    fn state(&self) -> MutexGuard<'_, Heard> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `id` was found live within [`LIVE_SESSION_TTL`], while hearing.
    fn is_live(&self, id: &str) -> bool {
        let state = self.state();
        state.hearing
            && state
                .live
                .get(id)
                .is_some_and(|at| at.elapsed() < LIVE_SESSION_TTL)
    }

    /// The generation to pass to [`remember`](Self::remember) after a lookup.
    fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Remembers `id` as found live by a lookup begun at `asked`, unless a
    /// revocation was heard (or hearing stopped) since `generation` was read.
    fn remember(&self, id: &str, generation: u64, asked: Instant) {
        let mut state = self.state();
        if !state.hearing || state.generation != generation {
            return;
        }
        if state.live.len() >= LIVE_SESSIONS_KEPT {
            state.live.retain(|_, at| at.elapsed() < LIVE_SESSION_TTL);
            if state.live.len() >= LIVE_SESSIONS_KEPT {
                // Full of live sessions: this one is asked about each time.
                return;
            }
        }
        state.live.insert(id.to_string(), asked);
    }

    /// Forgets `id` ([`super::ANY_SESSION`]: every session), and whatever
    /// lookup is under way.
    pub(super) fn forget(&self, id: &str) {
        let mut state = self.state();
        state.generation += 1;
        if id == super::ANY_SESSION {
            state.live.clear();
        } else {
            state.live.remove(id);
        }
    }

    /// Says whether revocations are heard from now on; going deaf forgets
    /// everything (and every lookup under way).
    pub(super) fn hear(&self, hearing: bool) {
        let mut state = self.state();
        if !hearing {
            state.generation += 1;
            state.live.clear();
        }
        state.hearing = hearing;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_what_no_revocation_or_deafness_raced() {
        let cache = SessionCache::default();
        let now = Instant::now();
        cache.remember("a", cache.generation(), now);
        assert!(!cache.is_live("a"), "nothing is remembered while deaf");
        cache.hear(true);
        cache.remember("a", cache.generation(), now);
        assert!(cache.is_live("a"));
        // A lookup that began before a revocation was heard.
        let before = cache.generation();
        cache.forget("b");
        cache.remember("c", before, now);
        assert!(!cache.is_live("c"), "raced a revocation");
        cache.forget("a");
        assert!(!cache.is_live("a"), "revoked");
        // Going deaf forgets, and refuses a lookup begun before it.
        cache.remember("d", cache.generation(), now);
        let before = cache.generation();
        cache.hear(false);
        cache.hear(true);
        assert!(!cache.is_live("d"));
        cache.remember("e", before, now);
        assert!(!cache.is_live("e"), "raced going deaf");
        // Any session.
        cache.remember("f", cache.generation(), now);
        cache.forget(crate::store::ANY_SESSION);
        assert!(!cache.is_live("f"));
    }

    #[test]
    fn trusts_for_the_ttl_counted_from_the_question() {
        let cache = SessionCache::default();
        cache.hear(true);
        let long_ago = Instant::now() - LIVE_SESSION_TTL;
        cache.remember("old", cache.generation(), long_ago);
        assert!(!cache.is_live("old"));
    }

    #[test]
    fn a_full_cache_makes_room_from_what_expired_and_never_grows_past_its_bound() {
        let cache = SessionCache::default();
        cache.hear(true);
        let long_ago = Instant::now() - LIVE_SESSION_TTL;
        for n in 0..LIVE_SESSIONS_KEPT {
            cache.remember(&format!("old{n}"), cache.generation(), long_ago);
        }
        cache.remember("new", cache.generation(), Instant::now());
        assert!(cache.is_live("new"), "room made from expired entries");
        for n in 0..LIVE_SESSIONS_KEPT {
            cache.remember(&format!("live{n}"), cache.generation(), Instant::now());
        }
        assert!(cache.state().live.len() <= LIVE_SESSIONS_KEPT);
        assert!(cache.is_live("new"), "live entries are not thrown out");
    }
}
