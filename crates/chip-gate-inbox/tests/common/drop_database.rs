//! Dropping a PostgreSQL database made for one test or one benchmark scenario. The inbox's tests,
//! the CLI's (`crates/chip-cli/tests/common`) and the two benchmarks (`relay_bench`,
//! `benches/queues`) share this file, by `#[path]`.

/// Drops the database `name`, waiting out what `WITH (FORCE)` cannot end. `WITH (FORCE)` ends
/// the other sessions on it, but not an autovacuum worker (only a superuser or a member of
/// `pg_signal_backend` may end that one: SQLSTATE 42501), which finishes on its own in a moment
/// (a database that just took thousands of rows often has one): then the plain `DROP`, which
/// stops autovacuum itself, is tried, for about 10 s in all. Returns whether the database is
/// gone (`false`: still in use after that).
///
/// # Errors
/// Any other error `DROP DATABASE` returns.
pub async fn drop_database_patiently(
    conn: &mut sqlx::PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
    for attempt in 0..40 {
        let sql = if attempt % 2 == 0 {
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        } else {
            format!("DROP DATABASE IF EXISTS {name}")
        };
        match sqlx::query(&sql).execute(&mut *conn).await {
            Ok(_) => return Ok(true),
            // Not allowed to end a session on it (autovacuum), or still in use.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("42501" | "55006")) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// Drops a test database once its test passed (see [`drop_database_patiently`]). A database still
/// in use is left (`.ci/run` drops leftovers when it starts) with a line saying so, rather than
/// failing a test that passed; any other error fails the test.
pub async fn drop_test_database(conn: &mut sqlx::PgConnection, name: &str) {
    match drop_database_patiently(conn, name).await {
        Ok(true) => {}
        Ok(false) => eprintln!(
            "test database {name} left in place (still in use); .ci/run drops it next time"
        ),
        Err(error) => panic!("cannot drop the test database {name}: {error}"),
    }
}
