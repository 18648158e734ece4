//! Row CRUD on collection tables. Every write runs in one transaction together with
//! its event-log row, and returns the committed [`Change`] so that the realtime
//! layer publishes only what is durable.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Expr, ExprTrait, LockType, NullOrdering, Order as SqlOrder, Query, SelectStatement, Value,
};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use serde_json::{Map, Value as Json};

use super::filter::{Filter, Order};
use super::{Store, StoreError};
use crate::catalog::{Collection, FieldKind};
use crate::values::{Row, Scalar, format_datetime};

/// What a viewer's query is confined to: always one account, and for owner-scoped
/// reads one owner.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub account_id: &'a str,
    pub owner_id: Option<&'a str>,
}

/// The kind of a committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    /// Lowercase, as stored in the event log and sent on the plain feed.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// A committed write, as recorded in the event log.
#[derive(Debug, Clone)]
pub struct Change {
    /// Event-log sequence number: the resume cursor.
    pub seq: i64,
    pub collection: String,
    pub action: Action,
    pub at: DateTime<Utc>,
    /// The row after the change; for a delete, the row as it was.
    pub record: Row,
    /// For updates and deletes, the row before the change.
    pub previous: Option<Row>,
}

/// The statement value for a field of `kind`, typed even when null (PostgreSQL
/// needs to know the type of a bound NULL).
pub fn db_value(kind: FieldKind, v: Option<&Scalar>) -> Value {
    match (kind, v) {
        (_, Some(Scalar::Str(s))) => Value::from(s.clone()),
        (_, Some(Scalar::Int(i))) => Value::from(*i),
        (_, Some(Scalar::Float(f))) => Value::from(*f),
        (_, Some(Scalar::Bool(b))) => Value::from(*b),
        (_, Some(Scalar::DateTime(d))) => Value::from(*d),
        (_, Some(Scalar::Json(j))) => Value::from(j.clone()),
        (FieldKind::String | FieldKind::Text | FieldKind::Ref, None) => Value::from(None::<String>),
        (FieldKind::Int, None) => Value::from(None::<i64>),
        (FieldKind::Float, None) => Value::from(None::<f64>),
        (FieldKind::Bool, None) => Value::from(None::<bool>),
        (FieldKind::DateTime, None) => Value::from(None::<DateTime<Utc>>),
        (FieldKind::Json, None) => Value::from(None::<Json>),
    }
}

/// The typed value of a JSON value stored for a field of `kind` (defaults, rows).
pub fn scalar_from_json(kind: FieldKind, v: &Json) -> Option<Scalar> {
    match (kind, v) {
        (_, Json::Null) => None,
        (FieldKind::Json, v) => Some(Scalar::Json(v.clone())),
        (FieldKind::DateTime, Json::String(s)) => {
            crate::values::parse_datetime(s).ok().map(Scalar::DateTime)
        }
        (FieldKind::Int, Json::Number(n)) => n.as_i64().map(Scalar::Int),
        (FieldKind::Float, Json::Number(n)) => n.as_f64().map(Scalar::Float),
        (FieldKind::Bool, Json::Bool(b)) => Some(Scalar::Bool(*b)),
        (FieldKind::String | FieldKind::Text | FieldKind::Ref, Json::String(s)) => {
            Some(Scalar::Str(s.clone()))
        }
        _ => None,
    }
}

const SYSTEM_COLUMNS: [&str; 5] = ["id", "owner_id", "account_id", "created_at", "updated_at"];

fn select_row(c: &Collection) -> SelectStatement {
    let mut q = Query::select();
    q.columns(SYSTEM_COLUMNS).from(c.key.clone());
    for f in &c.fields {
        q.column(f.column.clone());
    }
    q
}

fn scoped(q: &mut SelectStatement, scope: &Scope) {
    q.and_where(Expr::col("account_id").eq(scope.account_id));
    if let Some(owner) = scope.owner_id {
        q.and_where(Expr::col("owner_id").eq(owner));
    }
}

fn read_row(c: &Collection, r: &QueryResult) -> Result<Row, StoreError> {
    let mut data = Map::new();
    for f in &c.fields {
        let col = f.column.as_str();
        let v = match f.kind {
            FieldKind::String | FieldKind::Text | FieldKind::Ref => {
                r.try_get::<Option<String>>("", col)?.map(Json::String)
            }
            FieldKind::Int => r.try_get::<Option<i64>>("", col)?.map(Json::from),
            FieldKind::Float => r.try_get::<Option<f64>>("", col)?.map(Json::from),
            FieldKind::Bool => r.try_get::<Option<bool>>("", col)?.map(Json::Bool),
            FieldKind::DateTime => r
                .try_get::<Option<DateTime<Utc>>>("", col)?
                .map(|d| Json::String(format_datetime(&d))),
            FieldKind::Json => r.try_get::<Option<Json>>("", col)?,
        };
        data.insert(f.key.clone(), v.unwrap_or(Json::Null));
    }
    Ok(Row {
        id: r.try_get("", "id")?,
        owner_id: r.try_get("", "owner_id")?,
        account_id: r.try_get("", "account_id")?,
        created_at: r.try_get("", "created_at")?,
        updated_at: r.try_get("", "updated_at")?,
        data,
    })
}

impl Store {
    /// Rows in `scope` matching `filter`, ordered (then by id), paged.
    pub async fn list(
        &self,
        c: &Collection,
        scope: &Scope<'_>,
        filter: Option<&Filter>,
        order: &[Order],
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Row>, StoreError> {
        let mut q = select_row(c);
        scoped(&mut q, scope);
        if let Some(f) = filter {
            q.cond_where(f.condition());
        }
        for o in order {
            // PostgreSQL's convention on both dialects: NULLs sort as the largest value.
            let (dir, nulls) = if o.descending {
                (SqlOrder::Desc, NullOrdering::First)
            } else {
                (SqlOrder::Asc, NullOrdering::Last)
            };
            q.order_by_with_nulls(o.column.clone(), dir, nulls);
        }
        q.order_by("id", SqlOrder::Asc).limit(limit).offset(offset);
        let rows = self.db.query_all(&q).await?;
        rows.iter().map(|r| read_row(c, r)).collect()
    }

    /// How many rows in `scope` match `filter`.
    pub async fn count(
        &self,
        c: &Collection,
        scope: &Scope<'_>,
        filter: Option<&Filter>,
    ) -> Result<i64, StoreError> {
        let mut q = Query::select();
        q.expr_as(Expr::col("id").count(), "n").from(c.key.clone());
        scoped(&mut q, scope);
        if let Some(f) = filter {
            q.cond_where(f.condition());
        }
        let row = self
            .db
            .query_one(&q)
            .await?
            .ok_or_else(|| StoreError::Corrupt("count returned no row".into()))?;
        Ok(row.try_get::<i64>("", "n")?)
    }

    /// The row `id` in `scope`, if there is one.
    pub async fn get(
        &self,
        c: &Collection,
        scope: &Scope<'_>,
        id: &str,
    ) -> Result<Option<Row>, StoreError> {
        let mut q = select_row(c);
        scoped(&mut q, scope);
        q.and_where(Expr::col("id").eq(id));
        match self.db.query_one(&q).await? {
            Some(r) => Ok(Some(read_row(c, &r)?)),
            None => Ok(None),
        }
    }

    /// Inserts `row` and logs its create event, in one transaction.
    pub async fn insert(&self, c: &Collection, row: Row) -> Result<Change, StoreError> {
        self.check_size(&row)?;
        let txn = self.begin_write().await?;
        let mut q = Query::insert();
        let mut cols: Vec<String> = SYSTEM_COLUMNS.iter().map(|s| s.to_string()).collect();
        let mut vals: Vec<Value> = vec![
            row.id.clone().into(),
            row.owner_id.clone().into(),
            row.account_id.clone().into(),
            row.created_at.into(),
            row.updated_at.into(),
        ];
        for f in &c.fields {
            cols.push(f.column.clone());
            let v = row
                .data
                .get(&f.key)
                .and_then(|j| scalar_from_json(f.kind, j));
            vals.push(db_value(f.kind, v.as_ref()));
        }
        q.into_table(c.key.clone()).columns(cols);
        q.values(vals.into_iter().map(Expr::val))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        txn.execute(&q).await?;
        self.commit_with_event(txn, c, Action::Create, row, None)
            .await
    }

    /// Refuses a row whose JSON (as the event log stores it, and as it is
    /// published to every subscriber) is larger than the store takes.
    fn check_size(&self, row: &Row) -> Result<(), StoreError> {
        let size = crate::values::json_len(&row.to_json());
        if size > self.max_record_bytes {
            return Err(StoreError::TooLarge {
                size,
                limit: self.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Updates row `id` of `account_id`: loads it under a write lock, lets
    /// `authorize` veto (access is decided on the row as stored, in the same
    /// transaction), applies `patch` (field key -> JSON value) and logs the event.
    /// `Ok(None)` when there is no such row.
    pub async fn update<E: From<StoreError>>(
        &self,
        c: &Collection,
        scope: &Scope<'_>,
        id: &str,
        patch: Map<String, Json>,
        authorize: impl FnOnce(&Row) -> Result<(), E>,
    ) -> Result<Option<Change>, E> {
        let txn = self.begin_write().await?;
        let Some(before) = self.locked_row(&txn, c, scope, id).await? else {
            return Ok(None);
        };
        authorize(&before)?;
        let mut after = before.clone();
        after.updated_at = std::cmp::max(crate::values::now(), before.updated_at);
        let mut q = Query::update();
        q.table(c.key.clone()).value("updated_at", after.updated_at);
        for (key, value) in patch {
            let Some(f) = c.field(&key) else { continue };
            q.value(
                f.column.clone(),
                db_value(f.kind, scalar_from_json(f.kind, &value).as_ref()),
            );
            after.data.insert(key, value);
        }
        // Dropping the transaction rolls back: nothing written, nothing published.
        self.check_size(&after)?;
        q.and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("account_id").eq(scope.account_id));
        txn.execute(&q).await.map_err(StoreError::from)?;
        Ok(Some(
            self.commit_with_event(txn, c, Action::Update, after, Some(before))
                .await?,
        ))
    }

    /// Deletes row `id` after `authorize` approves it (as in [`Store::update`]).
    pub async fn delete<E: From<StoreError>>(
        &self,
        c: &Collection,
        scope: &Scope<'_>,
        id: &str,
        authorize: impl FnOnce(&Row) -> Result<(), E>,
    ) -> Result<Option<Change>, E> {
        let txn = self.begin_write().await?;
        let Some(before) = self.locked_row(&txn, c, scope, id).await? else {
            return Ok(None);
        };
        authorize(&before)?;
        let q = Query::delete()
            .from_table(c.key.clone())
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("account_id").eq(scope.account_id))
            .to_owned();
        txn.execute(&q).await.map_err(StoreError::from)?;
        Ok(Some(
            self.commit_with_event(txn, c, Action::Delete, before.clone(), Some(before))
                .await?,
        ))
    }

    /// Whether `id` names a row of `table` in `account_id` (ref validation).
    pub async fn exists(
        &self,
        table: &str,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let q = Query::select()
            .column("id")
            .from(table.to_string())
            .and_where(Expr::col("id").eq(id))
            .and_where(Expr::col("account_id").eq(account_id))
            .to_owned();
        Ok(self.db.query_one(&q).await?.is_some())
    }

    /// A write transaction: on SQLite `BEGIN IMMEDIATE`, so that a read-then-write
    /// transaction takes the write lock up front instead of failing to upgrade.
    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let opts = TransactionOptions {
            sqlite_transaction_mode: (self.backend() == DbBackend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok(self.db.begin_with_options(opts).await?)
    }

    async fn locked_row(
        &self,
        txn: &DatabaseTransaction,
        c: &Collection,
        scope: &Scope<'_>,
        id: &str,
    ) -> Result<Option<Row>, StoreError> {
        let mut q = select_row(c);
        scoped(&mut q, scope);
        q.and_where(Expr::col("id").eq(id));
        if self.backend() == DbBackend::Postgres {
            q.lock(LockType::Update);
        }
        match txn.query_one(&q).await? {
            Some(r) => Ok(Some(read_row(c, &r)?)),
            None => Ok(None),
        }
    }
}
