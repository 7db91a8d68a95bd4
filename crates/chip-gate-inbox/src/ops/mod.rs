//! The SQL of claiming, finishing and operating, written once as functions generic over the
//! `sqlx` database and compiled for each backend.
//!
//! Every operation is an associated function of [`Sql<DB>`](Sql); [`sqlite`] and [`postgres`]
//! name its two instances, so callers write `ops::sqlite::claim(..)` and
//! `ops::postgres::claim(..)`. What differs between the backends' SQL is [`Dialect`] (locking
//! clauses, how a writing transaction begins, the due announcement); what differs between their
//! drivers beyond `sqlx`'s traits is [`Driver`]. One job per file:
//!
//! - `claim`: handing the oldest due delivery of each free lane to a worker;
//! - `finish`: recording handlers' outcomes under the lane lease;
//! - `lease`: extending leases and handing them back unstarted;
//! - `retention`: removing finished deliveries and the horizon that guards against their copies;
//! - `stats`: counters and gauges;
//! - `operator`: listing, reading and requeueing deliveries;
//! - `rows`: reading deliveries out of result rows.
//!
//! Each file's `impl` block states the same bounds (see [`Sql`]): Rust does not let a trait carry
//! them for its users, so they are repeated rather than hidden in a macro.

mod claim;
mod finish;
mod lease;
mod operator;
mod retention;
mod rows;
mod stats;

use std::marker::PhantomData;

use crate::store::Dialect;

pub(crate) use claim::{ClaimRules, Claimed};
pub(crate) use finish::Finish;

/// A claim on one delivery: the lane lease that lets this worker, and no other, hand it over.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) delivery_id: i64,
    pub(crate) lane: String,
    pub(crate) token: String,
    pub(crate) updated_on: Option<i64>,
    pub(crate) attempts: i64,
}

/// A database the inbox's SQL runs on: its [`Dialect`], and what `sqlx`'s `Database` trait leaves
/// to each driver.
pub(crate) trait Driver: sqlx::Database + Dialect {
    /// The claim's candidates query (see `claim.rs`): `$1` now, `$2` how many rows at most.
    const CANDIDATES: &'static str;

    /// A scalar subquery: the `received_at` of the oldest pending delivery (the lowest id).
    const OLDEST_PENDING: &'static str;

    /// A subquery: the strings of the JSON array bound as `$1`, one row each (one statement for
    /// any number of values).
    const JSON_STRINGS: &'static str;

    /// How many rows a statement changed (each driver's `QueryResult` says so in its own method).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Driver for sqlx::Sqlite {
    const CANDIDATES: &'static str = claim::CANDIDATES_JOINED;
    const OLDEST_PENDING: &'static str = stats::OLDEST_PENDING_SQLITE;
    const JSON_STRINGS: &'static str = "SELECT value FROM json_each($1)";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Driver for sqlx::Postgres {
    const CANDIDATES: &'static str = claim::CANDIDATES_WALKED;
    const OLDEST_PENDING: &'static str = stats::OLDEST_PENDING_POSTGRES;
    const JSON_STRINGS: &'static str = "SELECT jsonb_array_elements_text($1::jsonb)";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The inbox's SQL on the database `DB`, one associated function per operation.
///
/// Every `impl` block (one per file) is bounded alike: `DB` is a [`Driver`] whose connections
/// execute queries, whose arguments bind, and whose rows are read by column name, with the types
/// the inbox's tables use (`BIGINT` as `i64`, `TEXT` as `String` and `&str`, nullable ones as
/// `Option`, the body's `BLOB`/`BYTEA` as `Vec<u8>`).
pub(crate) struct Sql<DB>(PhantomData<DB>);

/// The operations on SQLite: `ops::sqlite::claim(..)` and so on.
#[allow(
    non_camel_case_types,
    reason = "named like the module it replaced, for its callers"
)]
pub(crate) type sqlite = Sql<sqlx::Sqlite>;

/// The operations on PostgreSQL: `ops::postgres::claim(..)` and so on.
#[allow(
    non_camel_case_types,
    reason = "named like the module it replaced, for its callers"
)]
pub(crate) type postgres = Sql<sqlx::Postgres>;
