//! Storage: the connection pool, migrations and every SQL statement of the origin.

pub mod catalog;
pub mod cohorts;
pub mod embedded;
pub mod events;
pub mod idmap;
pub mod persons;
pub mod projects;
pub mod rollups;
pub mod sequences;
pub mod sessions;
pub mod warnings;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

mod migrations {
    refinery::embed_migrations!("../migrations");
}

/// Storage errors. Callers branch on the predicates, not on driver variants.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string does not parse.
    #[error("invalid database url: {0}")]
    Config(#[source] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The pool could not be built.
    #[error("pool setup failed: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// The write of a group of requests failed (every request of the group gets it).
    #[error(transparent)]
    Group(std::sync::Arc<StoreError>),
    /// Stored data could not be decoded (a rollup set, say).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The ingest writer is not running (the process is stopping).
    #[error("the ingest writer stopped")]
    WriterGone,
}

impl StoreError {
    /// True when the database is down, unreachable or overloaded: the caller should answer 503
    /// and the sender retry, rather than treat it as a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::WriterGone => true,
            StoreError::Group(e) => e.is_unavailable(),
            StoreError::Db(e) => {
                e.is_closed()
                    || e.as_db_error().is_none()
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        // 57P: operator intervention (shutdown), 53: insufficient resources,
                        // 08: connection exception, 57014: statement timeout.
                        c.starts_with("57P") || c.starts_with("53") || c.starts_with("08") || c == "57014"
                    })
            }
            _ => false,
        }
    }
}

/// Builds the pool for a connection string.
pub fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let pg_config: tokio_postgres::Config = url.parse().map_err(StoreError::Config)?;
    let mgr = Manager::from_config(pg_config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

/// Applies the migrations in `migrations/` that are not applied yet.
pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let report = migrations::migrations::runner().run_async(&mut **client).await?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
    }
    Ok(())
}

/// True when every embedded migration has been applied (for `/ready`).
pub async fn migrations_current(pool: &Pool) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let latest = migrations::migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0);
    let row = client.query_opt("SELECT max(version) FROM refinery_schema_history", &[]).await?;
    let applied: Option<i32> = row.and_then(|r| r.get(0));
    Ok(applied.is_some_and(|v| i64::from(v) >= i64::from(latest)))
}

/// Creates database `name` on the server of `admin_url` when it does not exist.
pub async fn ensure_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let (client, conn) = tokio_postgres::connect(admin_url, NoTls).await?;
    let handle = tokio::spawn(conn);
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is ours (a constant or a test's
        // generated name), quoted anyway.
        client.batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""))).await?;
    }
    drop(client);
    let _ = handle.await;
    Ok(())
}
