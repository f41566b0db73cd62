//! The versioned schemas of both backends, embedded in the binary
//! (`migrations/sqlite`, `migrations/postgres`), applied on open. On
//! PostgreSQL the migrator holds an advisory lock while it runs, so replicas
//! starting together migrate once; on SQLite the file has one writer.

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "store owned order",
        include_str!("migrations/sqlite/0002_store_owned_order.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "store owned order",
        include_str!("migrations/postgres/0002_store_owned_order.sql"),
    ),
];

fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// SQLite's migrations.
pub(crate) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// PostgreSQL's migrations.
pub(crate) fn postgres() -> Migrator {
    migrator(POSTGRES)
}

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    SQLITE.len() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_versions() {
        let versions = |l: &[(i64, &str, &str)]| l.iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(versions(super::SQLITE), versions(super::POSTGRES));
        assert_eq!(
            versions(super::SQLITE),
            (1..=super::latest_version()).collect::<Vec<_>>()
        );
    }
}
