//! A small key/value table for server bookkeeping (e.g. how far the event log has
//! been pruned, which decides when a resume cursor has expired).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_meta"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("livegate_meta")
                    .col(ColumnDef::new("key").string().not_null().primary_key())
                    .col(ColumnDef::new("value").big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}
