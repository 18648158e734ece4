//! Accounts (tenants), users, the event log and the declared-fields record.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_system_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("livegate_accounts")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("slug").string().not_null().unique_key())
                    .col(
                        ColumnDef::new("created_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("livegate_users")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("account_id").string().not_null())
                    .col(ColumnDef::new("email").string().not_null().unique_key())
                    .col(ColumnDef::new("password_hash").string().null())
                    .col(ColumnDef::new("role").string().not_null())
                    .col(
                        ColumnDef::new("created_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_users_account_id")
                    .table("livegate_users")
                    .col("account_id")
                    .to_owned(),
            )
            .await?;
        // The event log: one row per committed write, written in the write's own
        // transaction; `seq` is the resume cursor.
        manager
            .create_table(
                Table::create()
                    .table("livegate_events")
                    .col(
                        ColumnDef::new("seq")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("account_id").string().not_null())
                    .col(ColumnDef::new("collection").string().not_null())
                    .col(ColumnDef::new("action").string().not_null())
                    .col(ColumnDef::new("row_id").string().not_null())
                    .col(ColumnDef::new("owner_id").string().null())
                    .col(ColumnDef::new("at").timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new("record").json().not_null())
                    .col(ColumnDef::new("previous").json().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_events_account_seq")
                    .table("livegate_events")
                    .col("account_id")
                    .col("seq")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_events_at")
                    .table("livegate_events")
                    .col("at")
                    .to_owned(),
            )
            .await?;
        // What each collection's table was last reconciled to: a removed or retyped
        // field is detected here, dialect-neutrally, without reading database catalogs.
        manager
            .create_table(
                Table::create()
                    .table("livegate_fields")
                    .col(ColumnDef::new("collection").string().not_null())
                    .col(ColumnDef::new("field").string().not_null())
                    .col(ColumnDef::new("kind").string().not_null())
                    .primary_key(Index::create().col("collection").col("field"))
                    .to_owned(),
            )
            .await
    }
}
