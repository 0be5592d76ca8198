//! Test helpers shared by every Leadflow crate: a fresh database per test on SQLite or
//! PostgreSQL, and a macro that runs one test body on both.
//!
//! PostgreSQL tests read the server URL from `LEADFLOW_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`) and create a database of their own on it.
//! Without the variable they are skipped, unless `CI` is set: in CI a missing PostgreSQL fails.

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement};

/// The environment variable naming the PostgreSQL server tests create databases on.
pub const POSTGRES_URL_VAR: &str = "LEADFLOW_TEST_POSTGRES_URL";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a fresh temporary folder.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A database made for one test.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL, for the service's configuration.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    dir: Option<PathBuf>,
    /// The PostgreSQL server's URL and the database's name, to drop it at the end.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database on `backend`, or `None` when PostgreSQL is not configured outside CI.
    ///
    /// # Panics
    /// When PostgreSQL is asked for in CI without `LEADFLOW_TEST_POSTGRES_URL`, or the server
    /// refuses: a test that cannot get its database must fail, not pass silently.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite("service")),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite database file named `name`.db in its own temporary folder.
    pub fn sqlite(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("leadflow-test-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Self {
            url,
            backend: Backend::Sqlite,
            dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` outside CI without a configured server.
    pub async fn postgres() -> Option<Self> {
        let Some(server) = postgres_server_url() else {
            eprintln!("skipping: {POSTGRES_URL_VAR} is not set");
            return None;
        };
        let name = format!("leadflow_test_{}", uuid::Uuid::new_v4().simple());
        #[allow(clippy::expect_used)]
        let admin = Database::connect(&server)
            .await
            .expect("connect to the postgresql server of LEADFLOW_TEST_POSTGRES_URL");
        #[allow(clippy::expect_used)]
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(base, _)| base)
            .to_owned();
        Some(Self {
            url: format!("{base}/{name}"),
            backend: Backend::Postgres,
            dir: None,
            postgres: Some((server, name)),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((server, name)) = self.postgres.take() {
            drop_postgres_database(server, name);
        }
    }
}

/// Drops a test's PostgreSQL database (closing any connection still open to it), so the shared
/// server does not collect one per test run. On a thread with a runtime of its own: `Drop`
/// cannot await, and the test's runtime may be shutting down. A database that cannot be dropped
/// is left behind; the test's result stands.
fn drop_postgres_database(server: String, name: String) {
    let dropping = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            if let Ok(admin) = Database::connect(&server).await {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
            }
        });
    });
    let _ = dropping.join();
}

/// The PostgreSQL server URL for tests.
///
/// # Panics
/// In CI (`CI` set) when the variable is missing.
pub fn postgres_server_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{POSTGRES_URL_VAR} must be set in CI: postgresql tests may not be skipped")
        }
        _ => None,
    }
}

/// The SQL text SQLite keeps for the table or index `name` (its `CREATE` statement), for tests
/// that check a schema's shape (`WITHOUT ROWID`, an index's columns).
///
/// # Panics
/// When the schema cannot be read or holds no such table or index: the test must fail.
pub async fn sqlite_schema_sql(conn: &impl ConnectionTrait, name: &str) -> String {
    #[allow(clippy::expect_used)]
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE name = ?",
            [name.into()],
        ))
        .await
        .expect("read the sqlite schema")
        .unwrap_or_else(|| panic!("no table or index {name}"));
    #[allow(clippy::expect_used)]
    row.try_get_by_index(0).expect("its sql")
}

/// Runs `reads` while a transaction the test keeps open holds one of `writer`'s connections
/// (on SQLite its only one), and returns what they read: reads served beside the writer answer
/// at once, reads that queue for it never would.
///
/// # Panics
/// When the transaction cannot begin or end, or `reads` have not answered within 20 s.
pub async fn beside_a_held_writer<T>(
    writer: &sea_orm::DatabaseConnection,
    reads: impl std::future::Future<Output = T>,
) -> T {
    use sea_orm::TransactionTrait;

    let held = writer.begin().await.expect("hold the writer");
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), reads)
        .await
        .expect("reads do not wait for the writer connection");
    held.rollback().await.expect("release the writer");
    read
}

/// How many applied message ids the service store at `url` remembers: its `inbox` rows.
///
/// # Panics
/// When the store cannot be opened or has no inbox: the test must fail.
pub async fn inbox_size(url: &str) -> i64 {
    #[allow(clippy::expect_used)]
    let conn = Database::connect(url)
        .await
        .expect("open the service's store");
    #[allow(clippy::expect_used)]
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT count(*) AS n FROM inbox",
        ))
        .await
        .expect("count the inbox")
        .expect("a count");
    let _ = conn.close().await;
    #[allow(clippy::expect_used)]
    row.try_get("", "n").expect("a number")
}

/// Runs an async test body `fn(TestDb)` on SQLite and on PostgreSQL, as two tests named
/// `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(db) = $crate::TestDb::new($crate::Backend::Sqlite).await {
                        super::$body(db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::TestDb::new($crate::Backend::Postgres).await {
                        super::$body(db).await;
                    }
                }
            }
        )+
    };
}

/// The message ids a fake receiver of outbox deliveries has applied, deduplicating as the
/// services' inboxes do: each id once, the consecutive events of one delivery sharing an id (a
/// bundle) together.
#[derive(Debug, Default)]
pub struct FakeInbox {
    seen: std::collections::HashSet<String>,
}

impl FakeInbox {
    /// Which events of one delivery, given their message ids in order, to apply.
    pub fn admit<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let mut open: Option<&str> = None;
        ids.into_iter()
            .map(|id| {
                let admitted = open == Some(id) || self.seen.insert(id.to_owned());
                open = admitted.then_some(id);
                admitted
            })
            .collect()
    }
}
