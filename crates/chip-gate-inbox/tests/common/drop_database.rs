//! Dropping a PostgreSQL test database once its test passed. The inbox's tests and the CLI's
//! (`crates/chip-cli/tests/common`, by `#[path]`) share this file.

/// Drops a test database once its test passed. `WITH (FORCE)` ends the other sessions on it,
/// but not an autovacuum worker (only a superuser or a member of `pg_signal_backend` may end
/// that one: SQLSTATE 42501), which finishes on its own in a moment: then the plain `DROP`, which
/// stops autovacuum itself, is tried, a few times. A database still there after that is left
/// (`.ci/run` drops leftovers when it starts) with a line saying so, rather than failing a test
/// that passed.
pub async fn drop_test_database(conn: &mut sqlx::PgConnection, name: &str) {
    for attempt in 0..40 {
        let sql = if attempt % 2 == 0 {
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        } else {
            format!("DROP DATABASE IF EXISTS {name}")
        };
        match sqlx::query(&sql).execute(&mut *conn).await {
            Ok(_) => return,
            // Not allowed to end a session on it (autovacuum), or still in use.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("42501" | "55006")) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(error) => panic!("cannot drop the test database {name}: {error}"),
        }
    }
    eprintln!("test database {name} left in place (still in use); .ci/run drops it next time");
}
