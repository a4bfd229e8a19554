//! Projects and API keys: creation, lookup by key hash, revocation.

use deadpool_postgres::Pool;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StoreError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (public by design: it is in every web page).
    Write,
    /// Query (secret).
    Read,
    /// Manage the project (secret).
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Scope::Write => "nx_w_",
            Scope::Read => "nx_r_",
            Scope::Admin => "nx_a_",
        }
    }
}

/// A key resolved from its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// Project of the key.
    pub project_id: i64,
    /// Its scope.
    pub scope: &'static str,
    /// True when revoked.
    pub revoked: bool,
    /// The project's allowed browser origins.
    pub allowed_origins: Vec<String>,
    /// The project's timezone.
    pub timezone: String,
}

/// A new project with its keys in clear: shown once, never stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NewProject {
    /// The project id.
    pub project_id: i64,
    /// The project name.
    pub name: String,
    /// Write key (public).
    pub write_key: String,
    /// Read key (secret).
    pub read_key: String,
    /// Admin key (secret).
    pub admin_key: String,
}

/// sha256 of a key, as stored.
pub fn key_hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new random key: prefix + 128 bits, hex.
fn new_key(scope: Scope) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{}{}", scope.prefix(), hex::encode(bytes))
}

/// Creates a project with one key of each scope.
pub async fn create_project(
    pool: &Pool,
    name: &str,
    timezone: &str,
    allowed_origins: &[String],
) -> Result<NewProject, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO projects (name, timezone, allowed_origins) VALUES ($1, $2, $3) RETURNING project_id",
            &[&name, &timezone, &allowed_origins],
        )
        .await?;
    let project_id: i64 = row.get(0);
    let mut keys = Vec::new();
    for scope in [Scope::Write, Scope::Read, Scope::Admin] {
        let key = new_key(scope);
        tx.execute(
            "INSERT INTO api_keys (project_id, scope, prefix, key_hash) VALUES ($1, $2, $3, $4)",
            &[&project_id, &scope.as_str(), &&key[..12], &key_hash(&key)],
        )
        .await?;
        keys.push(key);
    }
    tx.commit().await?;
    let [write_key, read_key, admin_key]: [String; 3] =
        keys.try_into().unwrap_or_else(|_| unreachable!("three scopes, three keys"));
    Ok(NewProject { project_id, name: name.to_owned(), write_key, read_key, admin_key })
}

/// Resolves a key by its hash; `None` when unknown.
pub async fn resolve_key(pool: &Pool, key: &str) -> Result<Option<ResolvedKey>, StoreError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT k.project_id, k.scope, k.revoked_at IS NOT NULL, p.allowed_origins, p.timezone
             FROM api_keys k JOIN projects p USING (project_id) WHERE k.key_hash = $1",
        )
        .await?;
    let row = client.query_opt(&stmt, &[&key_hash(key)]).await?;
    Ok(row.map(|r| {
        let scope: String = r.get(1);
        ResolvedKey {
            project_id: r.get(0),
            scope: match scope.as_str() {
                "write" => "write",
                "read" => "read",
                _ => "admin",
            },
            revoked: r.get(2),
            allowed_origins: r.get(3),
            timezone: r.get(4),
        }
    }))
}

/// How long the ingest path trusts a key it looked up: a revocation (or a change of the
/// project's allowed origins) made through another origin process takes effect within this
/// time. The edge caches keys for 60 s, so the origin's few seconds add nothing a user notices.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Most keys the cache holds; a flood of distinct valid keys clears it rather than growing it.
const KEY_CACHE_MAX: usize = 10_000;

/// A cached key: when it was read, and what it resolved to.
type CachedKey = (std::time::Instant, ResolvedKey);

/// Known keys by hash with the time they were read. Unknown keys are not cached, so a new key
/// works at once (an unknown key costs a lookup each time, as before).
static KEY_CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedKey>>> =
    std::sync::LazyLock::new(Default::default);

/// Revocations made by this process, so that a lookup racing one is not cached.
static REVOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`resolve_key`] for the ingest path, which asks once per request: a known key is read from
/// the database at most once per [`KEY_CACHE_TTL`] (that lookup was one statement and round
/// trip per 100-event request, ~3% of the ingest's CPU). [`revoke_key`] evicts at once.
pub async fn resolve_key_cached(
    pool: &Pool,
    key: &str,
    now: std::time::Instant,
) -> Result<Option<ResolvedKey>, StoreError> {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some((at, k)) = KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
        if now.saturating_duration_since(*at) < KEY_CACHE_TTL {
            return Ok(Some(k.clone()));
        }
    }
    let revocations = REVOCATIONS.load(std::sync::atomic::Ordering::SeqCst);
    let resolved = resolve_key(pool, key).await?;
    if let Some(k) = &resolved {
        let mut cache = KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        // A revocation since the read may have been missed by it: not cached, or the stale
        // answer would outlive the eviction.
        if REVOCATIONS.load(std::sync::atomic::Ordering::SeqCst) != revocations {
            return Ok(resolved);
        }
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (now, k.clone()));
    }
    Ok(resolved)
}

/// Revokes a key; true when it existed and was active. This process stops accepting it as soon
/// as this returns.
pub async fn revoke_key(pool: &Pool, key: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client
        .execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL", &[&key_hash(key)])
        .await?;
    let mut cache = KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    REVOCATIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    cache.remove(&<[u8; 32]>::from(Sha256::digest(key.as_bytes())));
    Ok(n == 1)
}

/// Number of projects (the demo project is created when there is none).
pub async fn count_projects(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT count(*) FROM projects", &[]).await?.get(0))
}
