//! Sessions (refresh-token families) and their refresh tokens, stored as hashes.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A session is one sign-in: the family of every refresh token rotated from
        // it. Revoking the session (sign-out, detected reuse) ends them all.
        manager
            .create_table(
                Table::create()
                    .table("livegate_sessions")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("user_id").string().not_null())
                    .col(
                        ColumnDef::new("created_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new("revoked_at")
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("livegate_refresh_tokens")
                    .col(
                        ColumnDef::new("token_hash")
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new("session_id").string().not_null())
                    .col(
                        ColumnDef::new("expires_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new("created_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new("used_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("livegate_refresh_tokens_session")
                    .table("livegate_refresh_tokens")
                    .col("session_id")
                    .to_owned(),
            )
            .await
    }
}
