//! The oldest pending delivery of a trigger, found by an index: without it,
//! telling a trigger's queue age read every pending row, on every turn of the
//! trigger, so a queue that fell behind fell further behind.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000006_delivery_queue"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("livegate_deliveries_pending")
                    .table("livegate_deliveries")
                    .col("trigger")
                    .col("status")
                    .col("seq")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("livegate_deliveries_pending")
                    .table("livegate_deliveries")
                    .to_owned(),
            )
            .await
    }
}
