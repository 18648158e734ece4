//! Users with passwords, accounts created by sign-up, sessions and refresh tokens.
//! Refresh tokens are stored only as hashes; a session is the family of tokens
//! rotated from one sign-in.

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

    /// Whether session `id` is revoked (`None`: no such session).
    pub async fn session_revoked(&self, id: &str) -> Result<Option<bool>, StoreError> {
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
