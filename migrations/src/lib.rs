//! System tables of livegate, as versioned migrations: accounts, users, the event log
//! and the record of declared fields that collection-table reconciliation compares
//! against. Collection tables themselves are not migrations: they follow the app
//! file and are reconciled at start-up (see `livegate::store::tables`).

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m20261122_000001_system_tables;
mod m20261122_000002_sessions;
mod m20261122_000003_meta;
mod m20261202_000004_rooms;
mod m20261207_000005_triggers;
mod m20261208_000006_delivery_queue;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_system_tables::Migration),
            Box::new(m20261122_000002_sessions::Migration),
            Box::new(m20261122_000003_meta::Migration),
            Box::new(m20261202_000004_rooms::Migration),
            Box::new(m20261207_000005_triggers::Migration),
            Box::new(m20261208_000006_delivery_queue::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "livegate_migrations".into()
    }
}
