//! The database: connecting, the embedded schema, counters, and the SQL both backends share.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Row, Sqlite};
use tokio::sync::Notify;

use crate::error::InboxError;

/// The URL of the embedded default database: a file `chip-inbox.db` in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://chip-inbox.db";

/// Runs `$body` once per backend, with `$pool` bound to that backend's pool and `$db` naming its
/// `sqlx` database type (so one text of SQL serves both, each checked by the compiler).
macro_rules! dispatch {
    ($backend:expr, $pool:ident, $db:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Backend::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// What differs between the backends' SQL.
pub(crate) trait Dialect {
    /// Starts a transaction that writes: SQLite takes the write lock at once (`BEGIN IMMEDIATE`)
    /// so that it waits for other writers instead of failing on upgrade.
    const BEGIN_WRITE: &'static str;
    /// Locks the selected rows, skipping those another transaction holds (PostgreSQL); nothing on
    /// SQLite, where the transaction already holds the database's single write lock.
    const SKIP_LOCKED: &'static str;
    /// Locks the selected rows, waiting for them (PostgreSQL); nothing on SQLite.
    const FOR_UPDATE: &'static str;
    /// Tells the idle workers of every process that a delivery became due, when the transaction
    /// commits (PostgreSQL's `NOTIFY` on the channel bound as `$1`, [`DUE_CHANNEL`]); empty on
    /// SQLite, whose workers in other processes poll.
    const NOTIFY_DUE: &'static str;
}

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const NOTIFY_DUE: &'static str = "";
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const NOTIFY_DUE: &'static str = "SELECT pg_notify($1, '')";
}

/// The PostgreSQL channel on which intake and [`Inbox::retry`] / [`Inbox::replay`] announce
/// deliveries that became due, so that idle workers in other processes start at once.
pub(crate) const DUE_CHANNEL: &str = "chip_inbox_due";

/// A task that ends when this is dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inbox {
    /// On PostgreSQL, listens on [`DUE_CHANNEL`] and wakes this process's idle workers on every
    /// announcement, until the returned guard is dropped or the pool is closed. A lost connection
    /// is made again (announcements made meanwhile are missed: the workers' polling covers them),
    /// after `retry` if that fails. `None` on SQLite.
    pub(crate) fn listen_for_due(&self, retry: Duration) -> Option<AbortOnDrop> {
        let Backend::Postgres(pool) = &self.shared.backend else {
            return None;
        };
        let (pool, shared) = (pool.clone(), Arc::clone(&self.shared));
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                let error = match listen(&pool, &shared).await {
                    Ok(never) => match never {},
                    Err(error) => error,
                };
                if matches!(error, sqlx::Error::PoolClosed) {
                    return;
                }
                tracing::warn!(%error, "inbox: listening for new deliveries failed; polling meanwhile");
                tokio::time::sleep(retry).await;
            }
        })))
    }
}

async fn listen(pool: &PgPool, shared: &Shared) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(DUE_CHANNEL).await?;
    // Whatever was announced before the listening began: have a look now.
    shared.stored.notify_waiters();
    loop {
        listener.recv().await?;
        shared.stored.notify_waiters();
    }
}

/// The connection pool of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Backend {
    /// Completes when the pool is closed ([`Inbox::close`]), at once if it already is.
    pub(crate) fn close_event(&self) -> sqlx::pool::CloseEvent {
        dispatch!(self, pool, Db => pool.close_event())
    }

    /// Whether the pool was closed ([`Inbox::close`]).
    pub(crate) fn is_closed(&self) -> bool {
        dispatch!(self, pool, Db => pool.is_closed())
    }

    /// The most connections the pool opens.
    pub(crate) fn max_connections(&self) -> u32 {
        dispatch!(self, pool, Db => pool.options().get_max_connections())
    }
}

/// Which database an [`Inbox`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// SQLite: one file, one writer at a time (the embedded default).
    Sqlite,
    /// PostgreSQL: several app instances, rows claimed with `FOR UPDATE SKIP LOCKED`.
    Postgres,
}

/// Settings for [`Inbox::connect_with`].
#[derive(Clone, Debug)]
pub struct InboxOptions {
    max_connections: Option<u32>,
    busy_timeout: Duration,
    acquire_timeout: Duration,
    migrate: bool,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            busy_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(30),
            migrate: true,
        }
    }
}

impl InboxOptions {
    /// The pool's size (default: 8 for SQLite, 16 for PostgreSQL). Each running handler in a
    /// transaction holds one connection, the intake's writers one each, a claim one (on
    /// SQLite, transactional handlers take turns, one connection at a time).
    ///
    /// An intake's writer keeps its connection from one commit to the next while deliveries
    /// keep coming, and gives it back after 100 ms with nothing to store: when the pool is no
    /// larger than the number of writers, writers give it back after every commit instead.
    ///
    /// A connection is handed out without a round trip to check it, unless it sat idle in the
    /// pool for a second or more (PostgreSQL): then it is checked first, and replaced if the
    /// server, a proxy or a firewall closed it meanwhile. A write that fails because of its
    /// connection has every pooled connection replaced.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// How long a SQLite statement waits for another process's write lock before failing
    /// (default 30 s).
    #[must_use]
    pub fn sqlite_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long to wait for a pooled connection (default 30 s): for a free one when all are in
    /// use, or for the database to accept a new one while it is down (a PostgreSQL that is
    /// restarting refuses connections; they are tried again until this long has passed). A
    /// receiver answers `503` after this long when the database is down: keep it below the time
    /// CHIP waits for an answer (a few seconds).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether connecting brings the schema up to date (default `true`, what an app wants).
    ///
    /// `false` opens an inbox without changing the database at all, as an operations tool should
    /// (the `chip inbox` commands do): a `sqlite://` file must exist already (nothing is created,
    /// nor its journal mode changed), and the database must hold exactly this version's schema,
    /// else connecting fails with [`InboxError::SchemaTooOld`] (version 0: no inbox there at all)
    /// or [`InboxError::SchemaTooNew`]. So pointing a tool at the wrong database, or at one whose
    /// apps run another version, changes nothing.
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

pub(crate) struct Shared {
    pub(crate) backend: Backend,
    /// Woken when this process stores a new delivery, so idle workers start at once.
    pub(crate) stored: Notify,
    /// Which pooled connections to close instead of using again.
    pub(crate) recycle: Arc<Recycle>,
    /// What the last writes did, for readiness.
    pub(crate) health: crate::health::WriteHealth,
    /// Set once the schema is known to be up to date (at connect, or on first use when the
    /// inbox was opened with [`Inbox::connect_lazy`]).
    pub(crate) schema: tokio::sync::OnceCell<()>,
    /// Whether bringing the schema up to date may change the database ([`InboxOptions::migrate`]).
    pub(crate) migrate: bool,
    /// The SQLite file to create private before SQLite makes it (`None` in memory and on
    /// PostgreSQL).
    private_file: Option<std::path::PathBuf>,
    /// This process's writers to SQLite, in turn (`None` on PostgreSQL).
    sqlite_turns: Option<WriterTurns>,
}

/// SQLite has one writer at a time, and a writer kept waiting by another retries on its own
/// schedule (its busy handler sleeps between tries): one that writes again right after it
/// commits takes the lock back before the others wake, again and again. A worker whose
/// transactional handlers hold the lock for a while thus kept another worker from extending its
/// leases until they expired, and intake behind both. The writers of one process therefore take
/// turns here, first come first served, before they ask SQLite; other processes on the same file
/// still meet SQLite's own waiting.
pub(crate) struct WriterTurns {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// How long to wait for a turn: the busy timeout. A writer that waited that long goes ahead
    /// and meets SQLite's lock (and its busy timeout) as it would without turns, rather than
    /// waiting for ever (a handler holding a turn that writes through the inbox itself).
    patience: Duration,
}

/// A writer's turn; the next writer's comes when it is dropped.
pub(crate) type WriterTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

impl Shared {
    /// Waits for this writer's turn at SQLite (see [`WriterTurns`]); `None` at once on
    /// PostgreSQL, whose writers wait for row locks, not for each other.
    pub(crate) async fn sqlite_turn(&self) -> WriterTurn {
        let turns = self.sqlite_turns.as_ref()?;
        let turn = tokio::time::timeout(turns.patience, Arc::clone(&turns.turn).lock_owned())
            .await
            .ok();
        if turn.is_none() {
            tracing::warn!(
                waited = ?turns.patience,
                "another writer of this process has held SQLite for the whole busy timeout \
                 (a long transactional handler?); going ahead without waiting for it"
            );
        }
        turn
    }
}

/// Marks every pooled connection made before a moment as not to be used again: after a write
/// failed because of the connection or what is under it (a database file opened read-only, a
/// PostgreSQL server that restarted), the pool opens fresh connections instead of handing the
/// broken ones out until they grow old (30 minutes).
pub(crate) struct Recycle {
    /// The pool's clock: connection ages are measured from their creation.
    epoch: std::time::Instant,
    /// Connections made before this many milliseconds after `epoch` are closed when next taken
    /// from the pool.
    made_before_ms: std::sync::atomic::AtomicU64,
}

impl Recycle {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: std::time::Instant::now(),
            made_before_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Every connection made until now is closed when next taken from the pool.
    pub(crate) fn all(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.made_before_ms
            .fetch_max(now.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether every connection made before `taken` (a moment at which one was taken from the
    /// pool) has been marked since: a connection held outside the pool since then must not be
    /// used again.
    pub(crate) fn marked_since(&self, taken: std::time::Instant) -> bool {
        let taken_ms = u64::try_from(taken.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.made_before_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            > taken_ms
    }

    /// Whether a connection of this age may be used.
    fn keeps(&self, age: Duration) -> bool {
        let made = self.epoch.elapsed().saturating_sub(age);
        let made_ms = u64::try_from(made.as_millis()).unwrap_or(u64::MAX);
        made_ms
            >= self
                .made_before_ms
                .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How long a PostgreSQL connection may sit in the pool before it is checked (a round trip)
/// when next taken. A connection in steady use is handed out without one; one that sat idle may
/// have been closed meanwhile by the server (`idle_session_timeout`, a restart), a proxy or a
/// firewall, and is replaced instead of failing the statement it was taken for.
pub(crate) const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool hook run when a connection is taken: closes the connections [`Recycle`] marked,
/// and, when `check_idle`, checks with a round trip those idle for [`CHECK_AFTER_IDLE`] or
/// longer (replacing those that do not answer).
///
/// It replaces sqlx's own check, which costs a round trip on every acquisition: a claim, a
/// done mark or an intake commit each paid one. A connection broken while in use fails its
/// statement either way; the failed write then marks every connection for [`Recycle`], so the
/// next ones are fresh.
fn check_before_use<Db: sqlx::Database>(
    recycle: Arc<Recycle>,
    check_idle: bool,
) -> impl for<'c> Fn(
    &'c mut Db::Connection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'c, Result<bool, sqlx::Error>>
+ Send
+ Sync
+ 'static {
    move |conn, meta| {
        let keep = recycle.keeps(meta.age);
        Box::pin(async move {
            if !keep {
                return Ok(false);
            }
            if check_idle
                && meta.idle_for >= CHECK_AFTER_IDLE
                && let Err(error) = sqlx::Connection::ping(conn).await
            {
                tracing::info!(%error, idle = ?meta.idle_for,
                    "an idle database connection did not answer; opening another");
                return Ok(false);
            }
            Ok(true)
        })
    }
}

/// A handle on the inbox's database: cheap to clone, shared by intakes, workers and the
/// operations calls ([`counts`](Inbox::counts), [`list`](Inbox::list), [`retry`](Inbox::retry)...).
#[derive(Clone)]
pub struct Inbox {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("backend", &self.backend_kind())
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Connects to the database named by `url` and brings its schema up to date.
    ///
    /// `sqlite://PATH` (the file is created if missing; [`DEFAULT_DATABASE_URL`] is
    /// `sqlite://chip-inbox.db`) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    ///
    /// # Errors
    /// [`InboxError::UnsupportedUrl`] for another scheme, [`InboxError::Database`] when the
    /// database cannot be reached or migrated.
    pub async fn connect(url: &str) -> Result<Self, InboxError> {
        Self::connect_with(url, InboxOptions::default()).await
    }

    /// As [`connect`](Self::connect), with settings.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, options: InboxOptions) -> Result<Self, InboxError> {
        let inbox = Self::open(url, &options)?;
        inbox.ensure_schema().await?;
        Ok(inbox)
    }

    /// Opens an inbox without touching the database yet: the pool connects, and the schema is
    /// brought up to date ([`InboxOptions::migrate`]), on first use. Use it for a receiver that
    /// must start (and report not ready, see [`Intake::readiness`](crate::Intake::readiness))
    /// while its database is unreachable or its file system read-only, and start storing as soon
    /// as the database can be written, without a restart. [`connect`](Self::connect) fails at
    /// once instead.
    ///
    /// # Errors
    /// [`InboxError::UnsupportedUrl`] for another scheme, [`InboxError::Database`] when the URL
    /// cannot be read. Nothing else is checked until first use.
    pub fn connect_lazy(url: &str, options: InboxOptions) -> Result<Self, InboxError> {
        Self::open(url, &options)
    }

    /// Builds the pool (which connects on first use) without checking the schema.
    fn open(url: &str, options: &InboxOptions) -> Result<Self, InboxError> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let recycle = Recycle::new();
        let mut private_file = None;
        let mut sqlite_turns = None;
        let backend = match scheme.as_str() {
            "sqlite" => {
                let memory = url.contains(":memory:") || url.contains("mode=memory");
                let parsed = SqliteConnectOptions::from_str(url)?;
                // SQLite never creates the file: `ensure_schema` does, private, before the first
                // connection that needs it (a lazy pool may be asked for one earlier; it then
                // fails until the file exists, rather than making it with the umask's mode).
                let mut connect = parsed
                    .create_if_missing(memory)
                    .synchronous(SqliteSynchronous::Full)
                    .pragma("temp_store", "memory")
                    .busy_timeout(options.busy_timeout);
                if options.migrate {
                    // Set once, kept by the file: an inbox made here is always in WAL mode.
                    connect = connect.journal_mode(SqliteJournalMode::Wal);
                }
                // An in-memory database exists once per connection: keep exactly one.
                let size = if memory {
                    1
                } else {
                    options.max_connections.unwrap_or(8)
                };
                let pool = SqlitePoolOptions::new()
                    .max_connections(size)
                    // Nothing between the process and its file can close a connection.
                    .test_before_acquire(false)
                    // A connection comes back with no transaction open, unless a future that
                    // used it was dropped mid-way (a worker's, dropped by a `select!` whose
                    // other branch won): a `BEGIN IMMEDIATE` acknowledged by the connection's
                    // thread just as the future was dropped, before sqlx made its `Transaction`,
                    // stays open with nobody to end it. The idle connection then held SQLite's
                    // one write lock until the pool closed it, every intake meanwhile failing
                    // with "database is locked"; and sqlx, which counts that transaction as
                    // open, refused every later `begin` on the connection
                    // (`a_worker_dropped_at_any_moment_leaves_nothing_locked` checks both). So
                    // each connection given back ends whatever it still has open: first what
                    // sqlx counts, through sqlx, so that its count comes back to zero too; then
                    // anything begun in plain SQL, which sqlx does not count (with nothing open
                    // SQLite refuses that `ROLLBACK`, the usual case: ignored). A connection
                    // that cannot be brought back is closed. When one was ended, a warning says
                    // so (none in the test suite but the test that drops workers on purpose).
                    // (One message to the connection's thread per release; a drain of 20,000
                    // deliveries showed no difference, 3,890 to 5,178 a second either way.)
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            use sqlx::TransactionManager as _;
                            type Manager = <sqlx::Sqlite as sqlx::Database>::TransactionManager;
                            let mut ended = false;
                            while Manager::get_transaction_depth(conn) > 0 {
                                if Manager::rollback(conn).await.is_err() {
                                    tracing::warn!(
                                        "a SQLite connection came back to the pool inside a \
                                         transaction that could not be rolled back; closed"
                                    );
                                    return Ok(false);
                                }
                                ended = true;
                            }
                            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok() {
                                ended = true;
                            }
                            if ended {
                                tracing::warn!(
                                    "a SQLite connection came back to the pool inside a \
                                     transaction (a future using it was dropped mid-way); \
                                     rolled back, so that it holds no lock"
                                );
                            }
                            Ok(true)
                        })
                    })
                    .acquire_timeout(options.acquire_timeout);
                // The pool connects on first use (the file is made private before that, see
                // `ensure_schema`). An in-memory database lives in its one connection: never
                // closed, whatever its age.
                let pool = if memory {
                    pool.max_lifetime(None).idle_timeout(None)
                } else {
                    private_file = Some(connect.get_filename().to_owned());
                    pool.before_acquire(check_before_use::<Sqlite>(Arc::clone(&recycle), false))
                };
                sqlite_turns = Some(WriterTurns {
                    turn: Arc::new(tokio::sync::Mutex::new(())),
                    patience: options.busy_timeout,
                });
                Backend::Sqlite(pool.connect_lazy_with(connect))
            }
            "postgres" | "postgresql" => {
                let connect = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections.unwrap_or(16))
                    .acquire_timeout(options.acquire_timeout)
                    // Checked only after sitting idle (see `check_before_use`).
                    .test_before_acquire(false)
                    .before_acquire(check_before_use::<Postgres>(Arc::clone(&recycle), true))
                    .connect_lazy_with(connect);
                Backend::Postgres(pool)
            }
            _ => return Err(InboxError::UnsupportedUrl { scheme }),
        };
        Ok(Inbox {
            shared: Arc::new(Shared {
                backend,
                stored: Notify::new(),
                recycle,
                health: crate::health::WriteHealth::default(),
                schema: tokio::sync::OnceCell::new(),
                migrate: options.migrate,
                private_file,
                sqlite_turns,
            }),
        })
    }

    /// Brings the schema up to date (or, when the inbox was opened with `migrate(false)`, checks
    /// that it is exactly this version's) once; later calls return at once. A failure is not
    /// remembered: the next call tries again.
    pub(crate) async fn ensure_schema(&self) -> Result<(), InboxError> {
        if self.shared.schema.initialized() {
            return Ok(());
        }
        // Boxed as `Send`: the migration's future is reached from the intake's spawned writers.
        let init: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), InboxError>> + Send + '_>,
        > = Box::pin(self.bring_schema_up_to_date());
        self.shared
            .schema
            .get_or_try_init(|| init)
            .await
            .map(|_| ())
    }

    async fn bring_schema_up_to_date(&self) -> Result<(), InboxError> {
        if self.shared.migrate {
            if let Some(path) = &self.shared.private_file {
                create_private_file(path)?;
            }
            return self.migrate().await;
        }
        let found = self.schema_version().await?;
        let known = latest_schema_version(self.backend_kind());
        if found < known {
            return Err(InboxError::SchemaTooOld { found, known });
        }
        if found > known {
            return Err(InboxError::SchemaTooNew { found, known });
        }
        Ok(())
    }

    /// The version of the inbox schema in the database: 0 when it holds none (no
    /// `chip_inbox_migrations` table), else the newest migration applied. Reads only.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn schema_version(&self) -> Result<i64, InboxError> {
        let exists_sql = match self.backend_kind() {
            BackendKind::Sqlite => {
                "SELECT COUNT(*) AS n FROM sqlite_master \
                 WHERE type = 'table' AND name = 'chip_inbox_migrations'"
            }
            BackendKind::Postgres => {
                "SELECT COUNT(*) AS n FROM pg_catalog.pg_tables \
                 WHERE tablename = 'chip_inbox_migrations' AND schemaname = ANY (current_schemas(false))"
            }
        };
        dispatch!(&self.shared.backend, pool, Db => {
            let tables: i64 = sqlx::query(exists_sql).fetch_one(pool).await?.try_get("n")?;
            if tables == 0 {
                return Ok(0);
            }
            let version: i64 = sqlx::query(CURRENT_VERSION_SQL)
                .fetch_one(pool)
                .await?
                .try_get("v")?;
            Ok(version)
        })
    }

    /// Which database this inbox runs on.
    pub fn backend_kind(&self) -> BackendKind {
        match self.shared.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQLite pool, when the inbox runs on SQLite: create your own tables in the same file to
    /// commit your effects together with the "done" mark (see [`TxJob`](crate::TxJob)).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.shared.backend {
            Backend::Sqlite(pool) => Some(pool),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, when the inbox runs on PostgreSQL.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.shared.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// Closes the pool: waits for checked-out connections to return.
    pub async fn close(&self) {
        dispatch!(&self.shared.backend, pool, Db => pool.close().await);
    }

    /// Applies the embedded schema migrations that the database lacks. [`connect`](Self::connect)
    /// already does; this is safe to call again and from several processes at once (they take
    /// turns under a lock). The inbox's tables are all named `chip_inbox_*` and its migrations are
    /// tracked in `chip_inbox_migrations`, apart from any `sqlx` migrations of your own.
    ///
    /// # Errors
    /// [`InboxError::Database`], or [`InboxError::SchemaTooNew`] when a newer version of this crate
    /// already migrated the database.
    pub async fn migrate(&self) -> Result<(), InboxError> {
        dispatch!(&self.shared.backend, pool, Db => {
            let migrations = migrations(self.backend_kind());
            let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
            if self.backend_kind() == BackendKind::Postgres {
                // Several processes starting at once take turns.
                sqlx::query("SELECT pg_advisory_xact_lock(7243386901122)")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS chip_inbox_migrations \
                 (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let current: i64 = sqlx::query(CURRENT_VERSION_SQL)
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
            let known = latest_schema_version(self.backend_kind());
            if current > known {
                return Err(InboxError::SchemaTooNew { found: current, known });
            }
            // Collected first: an iterator's closure held across the awaits below would make this
            // future `Send` for one lifetime only.
            let pending: Vec<Migration> = migrations.iter().copied().filter(|m| m.0 > current).collect();
            for (version, description, sql) in pending {
                // Through the connection's `Executor`: `RawSql::execute`'s future is `Send` for
                // one lifetime only, which the intake's spawned writers (which migrate on first
                // use after `connect_lazy`) cannot hold.
                sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(sql)).await?;
                sqlx::query(
                    "INSERT INTO chip_inbox_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(version)
                .bind(description)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tracing::info!(version, description, "chip-gate-inbox schema migrated");
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

/// Creates the SQLite database file at `path` when it does not exist yet, readable and writable
/// by its owner only (0600, whatever the process's umask allows more), before SQLite opens it:
/// it holds customers' names, emails and replayable signatures. SQLite gives the `-wal` and
/// `-shm` files it makes beside it the same permissions. An existing file is left as it is (with
/// a warning when others may read it). Nothing to do on other platforms.
fn create_private_file(path: &std::path::Path) -> Result<(), InboxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if path.as_os_str().is_empty() {
            return Ok(());
        }
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", meta.permissions().mode() & 0o777),
                        "the inbox's database file may be read by other users: chmod 600 it \
                         (and its -wal and -shm files)"
                    );
                }
            }
            Err(source) => {
                return Err(InboxError::CreateFile {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

type Migration = (i64, &'static str, &'static str);

/// The version of the schema applied last (`v`; 0 for none yet).
const CURRENT_VERSION_SQL: &str =
    "SELECT COALESCE(MAX(version), 0) AS v FROM chip_inbox_migrations";

/// The embedded migrations for `kind`, oldest first.
fn migrations(kind: BackendKind) -> &'static [Migration] {
    match kind {
        BackendKind::Sqlite => SQLITE_MIGRATIONS,
        BackendKind::Postgres => POSTGRES_MIGRATIONS,
    }
}

/// The newest schema version this crate knows for `kind`.
fn latest_schema_version(kind: BackendKind) -> i64 {
    migrations(kind).last().map_or(0, |m| m.0)
}

const SQLITE_MIGRATIONS: &[Migration] = &[
    (
        1,
        "deliveries, lanes, counters",
        include_str!("../migrations/sqlite/0001_inbox.sql"),
    ),
    (
        2,
        "injective keys and lanes, lanes by object identity, retention horizon",
        include_str!("../migrations/sqlite/0002_keys_and_horizon.sql"),
    ),
    (
        3,
        "no index of due deliveries: SQLite's claims walk pending deliveries by id",
        include_str!("../migrations/sqlite/0003_no_due_index.sql"),
    ),
    (
        4,
        "pending deliveries by the time they come due: claims step over none waiting for a retry",
        include_str!("../migrations/sqlite/0004_pending_by_due_time.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[Migration] = &[
    (
        1,
        "deliveries, lanes, counters",
        include_str!("../migrations/postgres/0001_inbox.sql"),
    ),
    (
        2,
        "injective keys and lanes, lanes by object identity, retention horizon",
        include_str!("../migrations/postgres/0002_keys_and_horizon.sql"),
    ),
    (
        3,
        "pending deliveries in arrival order, indexed on their own",
        include_str!("../migrations/postgres/0003_pending_index.sql"),
    ),
    (
        4,
        "due deliveries in the order they came due, the order claims walk",
        include_str!("../migrations/postgres/0004_due_order.sql"),
    ),
    (
        5,
        "bodies up to about 8 KB stored as they came, inside their row (not compressed)",
        include_str!("../migrations/postgres/0005_bodies_inline.sql"),
    ),
];

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds, saturating.
pub(crate) fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds as a `SystemTime`.
pub(crate) fn system_time(unix_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0))
}

/// The counters, by column name.
pub(crate) const RECEIVED: &str = "received";
pub(crate) const DUPLICATES: &str = "duplicates";
pub(crate) const STALE: &str = "stale";
pub(crate) const DONE: &str = "done";
pub(crate) const RETRIED: &str = "retried";
pub(crate) const DEAD: &str = "dead";
pub(crate) const EXPIRED: &str = "expired";

/// Adds counts inside the caller's transaction, so that a count commits with the change it
/// counts. One shard for the whole transaction and the names in one order: concurrent
/// transactions never wait for each other's counter rows in a cycle.
macro_rules! add_counts {
    ($conn:expr, $counts:expr) => {{
        let shard = i64::from(fastrand::u32(0..$crate::store::COUNTER_SHARDS));
        let mut counts: Vec<(&'static str, i64)> =
            $counts.into_iter().filter(|count: &(&'static str, i64)| count.1 > 0).collect();
        counts.sort_unstable();
        let mut result: Result<(), sqlx::Error> = Ok(());
        for (name, by) in counts {
            if let Err(error) = sqlx::query(
                "INSERT INTO chip_inbox_counters (name, shard, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value",
            )
            .bind(name)
            .bind(shard)
            .bind(by)
            .execute(&mut *$conn)
            .await
            {
                result = Err(error);
                break;
            }
        }
        result
    }};
}
pub(crate) use add_counts;

/// Counters are spread over this many rows each, so that concurrent transactions on PostgreSQL
/// rarely wait for one another's counter row.
pub(crate) const COUNTER_SHARDS: u32 = 64;
