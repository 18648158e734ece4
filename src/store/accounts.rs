//! Accounts (tenants) and users in the system tables.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};

use super::{Store, StoreError};
use crate::values::{new_id, now};

/// The slug of the account that exists from the first start.
pub const DEFAULT_ACCOUNT: &str = "default";

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub slug: String,
}

/// A user of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub email: String,
    /// `USER` or `ADMIN`.
    pub role: String,
}

impl Store {
    /// The account with `slug`, created if missing (idempotent under concurrency).
    pub async fn ensure_account(&self, slug: &str) -> Result<Account, StoreError> {
        let insert = Query::insert()
            .into_table("livegate_accounts")
            .columns(["id", "slug", "created_at"])
            .values_panic([new_id().into(), slug.into(), now().into()])
            .on_conflict(OnConflict::column("slug").do_nothing().to_owned())
            .to_owned();
        {
            let _turn = self.write_turn().await;
            self.db.execute(&insert).await?;
        }
        self.account_by("slug", slug)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("account {slug} vanished")))
    }

    /// The account whose `id` or `slug` is `key`. Accounts never change once made,
    /// so found ones are cached: this runs for every authenticated request.
    pub async fn find_account(&self, key: &str) -> Result<Option<Account>, StoreError> {
        if let Some(a) = self.accounts.read().ok().and_then(|c| c.get(key).cloned()) {
            return Ok(Some(a));
        }
        let found = match self.account_by("id", key).await? {
            Some(a) => Some(a),
            None => self.account_by("slug", key).await?,
        };
        if let (Some(a), Ok(mut cache)) = (&found, self.accounts.write()) {
            cache.insert(a.id.clone(), a.clone());
            cache.insert(a.slug.clone(), a.clone());
        }
        Ok(found)
    }

    async fn account_by(&self, column: &str, value: &str) -> Result<Option<Account>, StoreError> {
        let q = Query::select()
            .columns(["id", "slug"])
            .from("livegate_accounts")
            .and_where(Expr::col(column.to_string()).eq(value))
            .to_owned();
        Ok(match self.db.query_one(&q).await? {
            Some(r) => Some(Account {
                id: r.try_get("", "id")?,
                slug: r.try_get("", "slug")?,
            }),
            None => None,
        })
    }

    /// The user with `email`, created (without a password) in `account` if missing.
    pub async fn ensure_user(
        &self,
        account: &Account,
        email: &str,
        role: &str,
    ) -> Result<User, StoreError> {
        let user = User {
            id: new_id(),
            account_id: account.id.clone(),
            email: email.to_string(),
            role: role.to_string(),
        };
        {
            let _turn = self.write_turn().await;
            self.db.execute(&insert_user(&user, None)).await?;
        }
        self.user_by_email(email)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("user {email} vanished")))
    }

    /// The user with `email`.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.user_where("email", email).await
    }

    /// The user with `id`.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.user_where("id", id).await
    }

    async fn user_where(&self, column: &str, value: &str) -> Result<Option<User>, StoreError> {
        Ok(self.user_row(column, value).await?.map(|(user, _)| user))
    }

    /// The user whose `column` is `value`, with its password hash.
    pub(super) async fn user_row(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        let q = Query::select()
            .columns(["id", "account_id", "email", "role", "password_hash"])
            .from("livegate_users")
            .and_where(Expr::col(column.to_string()).eq(value))
            .to_owned();
        Ok(match self.db.query_one(&q).await? {
            Some(r) => Some((
                User {
                    id: r.try_get("", "id")?,
                    account_id: r.try_get("", "account_id")?,
                    email: r.try_get("", "email")?,
                    role: r.try_get("", "role")?,
                },
                r.try_get("", "password_hash")?,
            )),
            None => None,
        })
    }
}

/// Inserts `user` unless its email is taken (then nothing happens: check
/// `rows_affected`). Emails are unique per deployment.
pub(super) fn insert_user(
    user: &User,
    password_hash: Option<&str>,
) -> sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table("livegate_users")
        .columns([
            "id",
            "account_id",
            "email",
            "password_hash",
            "role",
            "created_at",
        ])
        .values_panic([
            user.id.clone().into(),
            user.account_id.clone().into(),
            user.email.clone().into(),
            password_hash.map(str::to_string).into(),
            user.role.clone().into(),
            now().into(),
        ])
        .on_conflict(OnConflict::column("email").do_nothing().to_owned())
        .to_owned()
}
