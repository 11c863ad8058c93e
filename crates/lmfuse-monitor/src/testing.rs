//! Helpers for tests (feature `test-support`): scratch PostgreSQL databases.

use crate::store::Database;

/// The variable naming the PostgreSQL server tests use: a URL whose user may create databases
/// (`scripts/start-postgres.sh` prints one).
pub const POSTGRES_VAR: &str = "LMFUSE_TEST_POSTGRES";

/// The URL of the tests' PostgreSQL server. `None`, with a message, when `LMFUSE_TEST_POSTGRES`
/// is unset; a panic instead when `LMFUSE_REQUIRE_ASSETS=1` (CI).
pub fn postgres_server() -> Option<String> {
    let url = std::env::var(POSTGRES_VAR).ok();
    if url.is_none() {
        assert!(
            std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() != Ok("1"),
            "{POSTGRES_VAR} is unset and LMFUSE_REQUIRE_ASSETS=1: start a server with \
             `export {POSTGRES_VAR}=$(bash scripts/start-postgres.sh)`"
        );
        eprintln!("skipped: {POSTGRES_VAR} is unset (see scripts/start-postgres.sh)");
    }
    url
}

/// A new, empty database for the test `name` on the server `server` (made again when it is
/// there from an earlier run). Panics when the server refuses.
pub fn scratch_postgres(server: &str, name: &str) -> Database {
    let database = database_name(name);
    let mut client = postgres::Client::connect(server, postgres::NoTls)
        .unwrap_or_else(|e| panic!("{POSTGRES_VAR}: cannot connect: {e}"));
    // Two calls: PostgreSQL runs the statements of one call in one transaction, and neither
    // may run in one.
    for statement in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        client
            .batch_execute(&statement)
            .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
    }
    Database::Postgres(with_database(server, &database))
}

/// `lmfuse_test_` + the start of `name` + a hash of all of it: a PostgreSQL identifier (at most
/// 63 bytes) of its own for each test.
fn database_name(name: &str) -> String {
    let hash = lmfuse_core::fnv1a(name.bytes());
    let start: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '_',
        })
        .take(32)
        .collect();
    format!("lmfuse_test_{start}_{hash:016x}")
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}"));
    format!("{scheme}://{authority}/{name}{}", query.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u:p@h:5/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "x"),
            "postgres://u@h/x"
        );
    }

    #[test]
    fn names_are_short_identifiers_of_their_own() {
        let long = "a_very_long_test_name_that_goes_past_what_postgres_allows::sqlite";
        let a = super::database_name(long);
        let b = super::database_name(&long.replace("sqlite", "postgres"));
        assert!(a.len() <= 63 && a != b, "{a} {b}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
