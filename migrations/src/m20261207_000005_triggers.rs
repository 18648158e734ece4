//! Webhook triggers: each trigger's progress through the event log, and one row
//! per delivery (an event a trigger matched), which carries the body it sends, so
//! that pruning the log never loses a delivery still to be made. Times are Unix
//! milliseconds: compared in SQL the same way on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_triggers"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("livegate_trigger_progress")
                    .col(ColumnDef::new("trigger").string().not_null().primary_key())
                    // The newest event seq the trigger has looked at.
                    .col(ColumnDef::new("seq").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("livegate_deliveries")
                    // UUID v7: ids sort by creation.
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("trigger").string().not_null())
                    .col(ColumnDef::new("seq").big_integer().not_null())
                    .col(ColumnDef::new("account_id").string().not_null())
                    .col(ColumnDef::new("collection").string().not_null())
                    .col(ColumnDef::new("action").string().not_null())
                    .col(ColumnDef::new("body").text().not_null())
                    // PENDING, DELIVERED or FAILED.
                    .col(ColumnDef::new("status").string().not_null())
                    .col(ColumnDef::new("attempts").integer().not_null())
                    .col(ColumnDef::new("next_attempt_ms").big_integer().not_null())
                    // Set while an instance makes an attempt: nobody else takes
                    // the delivery until then (an instance that died mid-attempt
                    // leaves it to the next one after this).
                    .col(ColumnDef::new("leased_until_ms").big_integer().null())
                    // Which claim holds the lease: an attempt writes its outcome
                    // only while its claim still holds the delivery.
                    .col(ColumnDef::new("lease_id").string().null())
                    .col(ColumnDef::new("last_status").integer().null())
                    .col(ColumnDef::new("last_error").text().null())
                    .col(ColumnDef::new("created_ms").big_integer().not_null())
                    .col(ColumnDef::new("updated_ms").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_deliveries_event")
                    .table("livegate_deliveries")
                    .col("trigger")
                    .col("seq")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_deliveries_due")
                    .table("livegate_deliveries")
                    .col("trigger")
                    .col("status")
                    .col("next_attempt_ms")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_deliveries_account")
                    .table("livegate_deliveries")
                    .col("account_id")
                    .col("id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("livegate_deliveries").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("livegate_trigger_progress").to_owned())
            .await
    }
}
