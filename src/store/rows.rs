//! Row CRUD on collection tables. Every write commits together with its
//! event-log row (on SQLite, in a savepoint of a transaction it may share with
//! other writes: see `store::writer`), and returns the committed [`Change`] so
//! that the realtime layer publishes only what is durable.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use sea_orm::sea_query::{
    DeleteStatement, Expr, ExprTrait, InsertStatement, LockType, NullOrdering, Order as SqlOrder,
    Query, SelectStatement, UpdateStatement, Value,
};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use serde_json::{Map, Value as Json};

use super::events::event_insert;
use super::filter::{Filter, Order};
use super::writer::{self, Staged};
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

/// A [`Scope`] that owns its ids, for a write sent to the SQLite writer.
struct OwnedScope {
    account_id: String,
    owner_id: Option<String>,
}

impl OwnedScope {
    fn as_scope(&self) -> Scope<'_> {
        Scope {
            account_id: &self.account_id,
            owner_id: self.owner_id.as_deref(),
        }
    }
}

impl From<&Scope<'_>> for OwnedScope {
    fn from(scope: &Scope<'_>) -> OwnedScope {
        OwnedScope {
            account_id: scope.account_id.to_string(),
            owner_id: scope.owner_id.map(str::to_string),
        }
    }
}

/// Refuses a row whose JSON (as the event log stores it, and as it is
/// published to every subscriber) is larger than the store takes.
fn check_size(row: &Row, limit: usize) -> Result<(), StoreError> {
    let size = crate::values::json_len(&row.to_json());
    if size > limit {
        return Err(StoreError::TooLarge { size, limit });
    }
    Ok(())
}

/// The insert of `row` into `c`'s table.
fn insert_row(c: &Collection, row: &Row) -> Result<InsertStatement, StoreError> {
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
    Ok(q)
}

/// The update applying `patch` (field key -> JSON value) to `before`, and
/// the row it leaves (refused if larger than `limit`).
fn update_row(
    c: &Collection,
    account_id: &str,
    id: &str,
    patch: Map<String, Json>,
    before: &Row,
    limit: usize,
) -> Result<(UpdateStatement, Row), StoreError> {
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
    check_size(&after, limit)?;
    q.and_where(Expr::col("id").eq(id))
        .and_where(Expr::col("account_id").eq(account_id));
    Ok((q, after))
}

/// The delete of row `id` of `account_id`.
fn delete_row(c: &Collection, account_id: &str, id: &str) -> DeleteStatement {
    Query::delete()
        .from_table(c.key.clone())
        .and_where(Expr::col("id").eq(id))
        .and_where(Expr::col("account_id").eq(account_id))
        .to_owned()
}

/// Row `id` in `scope`, read on the SQLite writer (inside its transaction,
/// which holds the database's write lock: no other write can come between).
fn row_on(
    conn: &rusqlite::Connection,
    c: &Collection,
    scope: &Scope<'_>,
    id: &str,
) -> Result<Option<Row>, StoreError> {
    let mut q = select_row(c);
    scoped(&mut q, scope);
    q.and_where(Expr::col("id").eq(id));
    writer::query_rows(conn, &q)?
        .into_iter()
        .next()
        .map(|values| row_from_lite(c, values))
        .transpose()
}

/// A row as [`select_row`] selects it, from SQLite values read on a
/// connection of our own (the writer's or a reader's), decoded as sqlx
/// decodes them in [`read_row`], and refusing what it refuses.
fn row_from_lite(c: &Collection, values: Vec<rusqlite::types::Value>) -> Result<Row, StoreError> {
    use rusqlite::types::Value as Lite;
    let bad = |what: &str| StoreError::Corrupt(format!("a stored {what} cannot be read"));
    if values.len() != SYSTEM_COLUMNS.len() + c.fields.len() {
        return Err(bad("row"));
    }
    let mut values = values.into_iter();
    let mut next = || values.next().unwrap_or(Lite::Null);
    let id = writer::lite_text(next())?.ok_or_else(|| bad("id"))?;
    let owner_id = writer::lite_text(next())?;
    let account_id = writer::lite_text(next())?.ok_or_else(|| bad("account id"))?;
    let created_at = writer::lite_time(&next())?.ok_or_else(|| bad("creation time"))?;
    let updated_at = writer::lite_time(&next())?.ok_or_else(|| bad("update time"))?;
    let mut data = Map::new();
    for f in &c.fields {
        let value = next();
        // Only the storage classes sqlx decodes each kind from (a float
        // also from an integer, which converts exactly); anything else was
        // written by another tool and is refused, not guessed at.
        let v = match (f.kind, value) {
            (_, Lite::Null) => Json::Null,
            (FieldKind::String | FieldKind::Text | FieldKind::Ref, Lite::Text(t)) => {
                Json::String(t)
            }
            (FieldKind::Int, Lite::Integer(i)) => Json::from(i),
            (FieldKind::Float, Lite::Real(f)) => Json::from(f),
            (FieldKind::Float, Lite::Integer(i)) => Json::from(i as f64),
            (FieldKind::Bool, Lite::Integer(i)) => Json::Bool(i != 0),
            (FieldKind::DateTime, v) => {
                writer::lite_time(&v)?.map_or(Json::Null, |d| Json::String(format_datetime(&d)))
            }
            (FieldKind::Json, Lite::Text(text)) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("stored JSON of {}: {e}", f.key)))?,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "a stored value of {}.{} is not of its kind",
                    c.key, f.key
                )));
            }
        };
        data.insert(f.key.clone(), v);
    }
    Ok(Row {
        id,
        owner_id,
        account_id,
        created_at,
        updated_at,
        data,
    })
}

/// Logs a change's event on the SQLite writer: its seq and the bytes it
/// counts for in the follower's memory.
fn log_on(
    conn: &rusqlite::Connection,
    c: &Collection,
    action: Action,
    record: Row,
    previous: Option<Row>,
) -> Result<(Change, usize), StoreError> {
    let at = crate::values::now();
    let (q, bytes) = event_insert(c, action, &record, previous.as_ref(), at);
    let seq = match writer::query_rows(conn, &q)?
        .first()
        .and_then(|r| r.first())
    {
        Some(rusqlite::types::Value::Integer(seq)) => *seq,
        _ => return Err(StoreError::Corrupt("event insert returned no seq".into())),
    };
    let change = Change {
        seq,
        collection: c.key.clone(),
        action,
        at,
        record,
        previous,
    };
    Ok((change, bytes))
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
        if let Some(readers) = &self.readers {
            return readers
                .query(&q)
                .await?
                .into_iter()
                .map(|values| row_from_lite(c, values))
                .collect();
        }
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
        if let Some(readers) = &self.readers {
            return match readers.query(&q).await?.first().and_then(|r| r.first()) {
                Some(rusqlite::types::Value::Integer(n)) => Ok(*n),
                _ => Err(StoreError::Corrupt("count returned no number".into())),
            };
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
        if let Some(readers) = &self.readers {
            return readers
                .query(&q)
                .await?
                .into_iter()
                .next()
                .map(|values| row_from_lite(c, values))
                .transpose();
        }
        match self.db.query_one(&q).await? {
            Some(r) => Ok(Some(read_row(c, &r)?)),
            None => Ok(None),
        }
    }

    /// Inserts `row` and logs its create event, in one transaction.
    pub async fn insert(&self, c: &Arc<Collection>, row: Row) -> Result<Change, StoreError> {
        check_size(&row, self.max_record_bytes)?;
        let q = insert_row(c, &row)?;
        if let Some(w) = &self.writer {
            let c = c.clone();
            return w
                .write(move |conn| {
                    writer::execute(conn, &q)?;
                    let (change, bytes) = log_on(conn, &c, Action::Create, row, None)?;
                    Ok::<_, StoreError>(Staged {
                        value: change.clone(),
                        logged: Some((change, bytes)),
                    })
                })
                .await;
        }
        let txn = self.begin_write().await?;
        txn.execute(&q).await?;
        self.commit_with_event(txn, c, Action::Create, row, None)
            .await
    }

    /// Updates row `id` of `account_id`: loads it under a write lock, lets
    /// `authorize` veto (access is decided on the row as stored, in the same
    /// transaction), applies `patch` (field key -> JSON value) and logs the event.
    /// `Ok(None)` when there is no such row.
    pub async fn update<E: From<StoreError> + Send + 'static>(
        &self,
        c: &Arc<Collection>,
        scope: &Scope<'_>,
        id: &str,
        patch: Map<String, Json>,
        authorize: impl FnOnce(&Row) -> Result<(), E> + Send + 'static,
    ) -> Result<Option<Change>, E> {
        let limit = self.max_record_bytes;
        if let Some(w) = &self.writer {
            let (c, scope, id) = (c.clone(), OwnedScope::from(scope), id.to_string());
            return w
                .write(move |conn| {
                    let Some(before) = row_on(conn, &c, &scope.as_scope(), &id)? else {
                        return Ok(Staged::nothing());
                    };
                    authorize(&before)?;
                    let (q, after) = update_row(&c, &scope.account_id, &id, patch, &before, limit)?;
                    writer::execute(conn, &q)?;
                    let (change, bytes) = log_on(conn, &c, Action::Update, after, Some(before))?;
                    Ok(Staged::changed(change, bytes))
                })
                .await;
        }
        let txn = self.begin_write().await?;
        let Some(before) = self.locked_row(&txn, c, scope, id).await? else {
            return Ok(None);
        };
        authorize(&before)?;
        // Dropping the transaction rolls back: nothing written, nothing published.
        let (q, after) = update_row(c, scope.account_id, id, patch, &before, limit)?;
        txn.execute(&q).await.map_err(StoreError::from)?;
        Ok(Some(
            self.commit_with_event(txn, c, Action::Update, after, Some(before))
                .await?,
        ))
    }

    /// Deletes row `id` after `authorize` approves it (as in [`Store::update`]).
    pub async fn delete<E: From<StoreError> + Send + 'static>(
        &self,
        c: &Arc<Collection>,
        scope: &Scope<'_>,
        id: &str,
        authorize: impl FnOnce(&Row) -> Result<(), E> + Send + 'static,
    ) -> Result<Option<Change>, E> {
        if let Some(w) = &self.writer {
            let (c, scope, id) = (c.clone(), OwnedScope::from(scope), id.to_string());
            return w
                .write(move |conn| {
                    let Some(before) = row_on(conn, &c, &scope.as_scope(), &id)? else {
                        return Ok(Staged::nothing());
                    };
                    authorize(&before)?;
                    writer::execute(conn, &delete_row(&c, &scope.account_id, &id))?;
                    let (change, bytes) =
                        log_on(conn, &c, Action::Delete, before.clone(), Some(before))?;
                    Ok(Staged::changed(change, bytes))
                })
                .await;
        }
        let txn = self.begin_write().await?;
        let Some(before) = self.locked_row(&txn, c, scope, id).await? else {
            return Ok(None);
        };
        authorize(&before)?;
        txn.execute(&delete_row(c, scope.account_id, id))
            .await
            .map_err(StoreError::from)?;
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
            .limit(1)
            .to_owned();
        if let Some(readers) = &self.readers {
            return Ok(!readers.query(&q).await?.is_empty());
        }
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
