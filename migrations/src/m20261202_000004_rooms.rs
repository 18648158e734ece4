//! Rooms across instances (PostgreSQL): the live instances and their leases,
//! who is in which room on which instance, and the ordered log of room events
//! (joins, leaves, messages) every instance reads to reach its own members.
//! Room events are not history: they are pruned minutes after they are written.
//! On SQLite (one instance) rooms stay in memory and these tables stay empty.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000004_rooms"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("livegate_instances")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    // Set by the instance itself from its own heartbeat, so
                    // that instances with different settings agree on it.
                    .col(
                        ColumnDef::new("expires_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("livegate_room_members")
                    // Peer ids are UUID v7, made as the member joins: their
                    // order is the roster's (order of joining).
                    .col(ColumnDef::new("peer_id").string().not_null().primary_key())
                    .col(ColumnDef::new("account_id").string().not_null())
                    .col(ColumnDef::new("room").string().not_null())
                    .col(ColumnDef::new("instance_id").string().not_null())
                    .col(ColumnDef::new("member").json().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_room_members_room")
                    .table("livegate_room_members")
                    .col("account_id")
                    .col("room")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_room_members_instance")
                    .table("livegate_room_members")
                    .col("instance_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("livegate_room_events")
                    .col(
                        ColumnDef::new("seq")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("account_id").string().not_null())
                    .col(ColumnDef::new("room").string().not_null())
                    .col(ColumnDef::new("kind").string().not_null())
                    .col(ColumnDef::new("payload").json().null())
                    .col(ColumnDef::new("member").json().not_null())
                    .col(ColumnDef::new("at").timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_room_events_room_seq")
                    .table("livegate_room_events")
                    .col("account_id")
                    .col("room")
                    .col("seq")
                    .to_owned(),
            )
            .await
    }
}
