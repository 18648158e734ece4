//! Collection tables follow the app file. At start-up each declared collection is
//! compared with what `livegate_fields` says its table holds: a new collection gets
//! its table, a new field its column; a removed or retyped field stops start-up with
//! a message that says what to do, and nothing is changed (all checks run before
//! any statement, and the changes run in one transaction). Indexes: `(account_id,
//! created_at)`, `(account_id, id)` (the default list order), `owner_id`, every ref.

use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Index, Query, Table};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};

use super::{Store, StoreError};
use crate::catalog::{Collection, Field, FieldKind};

/// Marker row in `livegate_fields` saying the collection's table exists (a
/// collection may have no declared fields).
const TABLE_MARKER: &str = "";

/// The app file asks for a change that would lose or reinterpret stored data.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the app file no longer matches the database:\n{}", .0.join("\n"))]
    Incompatible(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for ReconcileError {
    fn from(e: sea_orm::DbErr) -> Self {
        ReconcileError::Store(StoreError::Db(e))
    }
}

/// What the stored kind of a field is: the type, and for a ref its target, since
/// pointing a ref elsewhere reinterprets every stored id.
fn stored_kind(f: &Field) -> String {
    match &f.target {
        Some(t) => format!("ref:{t}"),
        None => f.kind.as_str().to_string(),
    }
}

/// A text column. On PostgreSQL it sorts and compares by code point (`COLLATE
/// "C"`), as SQLite does, so ordering and `lt`/`gt` mean the same on both whatever
/// the database's locale.
fn text_column(name: &str, backend: DbBackend) -> ColumnDef {
    let mut def = ColumnDef::new(name.to_string());
    def.text();
    if backend == DbBackend::Postgres {
        def.extra("COLLATE \"C\"");
    }
    def
}

fn column_def(f: &Field, backend: DbBackend) -> ColumnDef {
    let mut def = match f.kind {
        FieldKind::String | FieldKind::Text | FieldKind::Ref => text_column(&f.column, backend),
        _ => ColumnDef::new(f.column.clone()),
    };
    match f.kind {
        FieldKind::String | FieldKind::Text | FieldKind::Ref => &mut def,
        FieldKind::Int => def.big_integer(),
        FieldKind::Float => def.double(),
        FieldKind::Bool => def.boolean(),
        FieldKind::DateTime => def.timestamp_with_time_zone(),
        FieldKind::Json => def.json_binary(),
    };
    def.null();
    def
}

impl Store {
    /// Brings every collection table in line with the catalog (see module docs).
    pub async fn reconcile(&self, app_file: &str) -> Result<(), ReconcileError> {
        let mut plans = Vec::new();
        let mut problems = Vec::new();
        for c in self.catalog.collections.values() {
            let stored = self.stored_fields(&c.key).await?;
            let exists = stored.iter().any(|(name, _)| name == TABLE_MARKER);
            let mut added = Vec::new();
            for f in &c.fields {
                match stored.iter().find(|(name, _)| name == &f.key) {
                    None if exists && f.required && f.default.is_none() && self.has_rows(&c.key).await? => problems.push(format!(
                        "{app_file}: collections.{}.fields.{}: a new required field needs a `default` while table \"{}\" \
                         has rows (they would have no value); add a default, or make it not required.",
                        c.key, f.key, c.key
                    )),
                    None => added.push(f.clone()),
                    Some((_, kind)) if *kind != stored_kind(f) => problems.push(format!(
                        "{app_file}: collections.{}.fields.{}: the field was declared as \"{kind}\" and is now \"{}\"; \
                         livegate does not convert stored data. Keep the old type, or add a new field and migrate the data yourself.",
                        c.key, f.key, stored_kind(f)
                    )),
                    Some(_) => {}
                }
            }
            for (name, _) in stored.iter().filter(|(name, _)| name != TABLE_MARKER) {
                if c.field(name).is_none() {
                    problems.push(format!(
                        "{app_file}: collections.{}.fields.{name}: the field was removed from the app file, but table \"{}\" \
                         still holds its data. livegate never drops data: restore the field, or drop the column yourself and \
                         delete its row from livegate_fields (collection = '{}', field = '{name}').",
                        c.key, c.key, c.key
                    ));
                }
            }
            plans.push((c, exists, added));
        }
        if !problems.is_empty() {
            return Err(ReconcileError::Incompatible(problems));
        }
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await?;
        for (c, exists, added) in plans {
            if !exists {
                create_table(&txn, c, self.backend()).await?;
                record(&txn, &c.key, TABLE_MARKER, "table").await?;
                for f in &c.fields {
                    record(&txn, &c.key, &f.key, &stored_kind(f)).await?;
                }
            } else {
                // Lists default to id order within an account; tables made before
                // this index existed get it here.
                create_index(&txn, &c.key, &["account_id", "id"]).await?;
                for f in added {
                    let mut def = column_def(&f, self.backend());
                    if let Some(default) = &f.default {
                        // Existing rows get the default, so a non-null field reads as such.
                        def.default(super::rows::db_value(
                            f.kind,
                            super::rows::scalar_from_json(f.kind, default).as_ref(),
                        ));
                    }
                    txn.execute(
                        &Table::alter()
                            .table(c.key.clone())
                            .add_column(def)
                            .to_owned(),
                    )
                    .await?;
                    if f.kind == FieldKind::Ref {
                        create_index(&txn, &c.key, &[&f.column]).await?;
                    }
                    record(&txn, &c.key, &f.key, &stored_kind(&f)).await?;
                    tracing::info!(collection = %c.key, field = %f.key, "added column");
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }

    async fn has_rows(&self, table: &str) -> Result<bool, StoreError> {
        let q = Query::select()
            .column("id")
            .from(table.to_string())
            .limit(1)
            .to_owned();
        Ok(self.db.query_one(&q).await?.is_some())
    }

    async fn stored_fields(&self, collection: &str) -> Result<Vec<(String, String)>, StoreError> {
        let q = Query::select()
            .columns(["field", "kind"])
            .from("livegate_fields")
            .and_where(Expr::col("collection").eq(collection.to_string()))
            .to_owned();
        let rows = self.db.query_all(&q).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String>("", "field")?,
                    r.try_get::<String>("", "kind")?,
                ))
            })
            .collect()
    }
}

async fn create_table(
    txn: &impl ConnectionTrait,
    c: &Collection,
    backend: DbBackend,
) -> Result<(), sea_orm::DbErr> {
    let mut t = Table::create();
    t.table(c.key.clone())
        .if_not_exists()
        .col(text_column("id", backend).not_null().primary_key())
        .col(text_column("owner_id", backend).null())
        .col(text_column("account_id", backend).not_null())
        .col(
            ColumnDef::new("created_at")
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new("updated_at")
                .timestamp_with_time_zone()
                .not_null(),
        );
    for f in &c.fields {
        t.col(column_def(f, backend));
    }
    txn.execute(&t).await?;
    create_index(txn, &c.key, &["account_id", "created_at"]).await?;
    create_index(txn, &c.key, &["account_id", "id"]).await?;
    create_index(txn, &c.key, &["owner_id"]).await?;
    for f in c.fields.iter().filter(|f| f.kind == FieldKind::Ref) {
        create_index(txn, &c.key, &[&f.column]).await?;
    }
    tracing::info!(collection = %c.key, "created table");
    Ok(())
}

async fn create_index(
    txn: &impl ConnectionTrait,
    table: &str,
    cols: &[&str],
) -> Result<(), sea_orm::DbErr> {
    let mut idx = Index::create();
    idx.if_not_exists()
        .name(format!("{table}_{}_idx", cols.join("_")))
        .table(table.to_string());
    for col in cols {
        idx.col(col.to_string());
    }
    txn.execute(&idx).await.map(|_| ())
}

async fn record(
    txn: &impl ConnectionTrait,
    collection: &str,
    field: &str,
    kind: &str,
) -> Result<(), sea_orm::DbErr> {
    let q = Query::insert()
        .into_table("livegate_fields")
        .columns(["collection", "field", "kind"])
        .values_panic([collection.into(), field.into(), kind.into()])
        .to_owned();
    txn.execute(&q).await.map(|_| ())
}
