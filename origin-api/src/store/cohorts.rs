//! Saved cohorts and their materialised members (`cohorts`, `cohort_members`).
//!
//! Membership is computed by one statement per cohort ([`crate::query::cohorts::membership_sql`])
//! and replaces the cohort's members in the same transaction, with the cohort's row locked
//! (`FOR UPDATE SKIP LOCKED`): two replicas never refresh one cohort at once, and a query always
//! sees a complete set, the old or the new.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::Value;

use super::StoreError;
use crate::query::cohorts::{membership_sql, parse_rule, Rule};
use crate::query::model::QueryError;

/// A saved cohort, as answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// Its id, the value of `person.cohort` in queries.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// `static` or `behavioural`.
    pub kind: String,
    /// The rule, as sent.
    pub definition: Value,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
    /// When its members were last computed.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// How many persons it held then.
    pub members: i64,
}

const COLUMNS: &str = "cohort_id, name, kind, definition, created_at, refreshed_at, members";

fn cohort_of(r: &tokio_postgres::Row) -> Result<Cohort, StoreError> {
    Ok(Cohort {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        kind: r.try_get(2)?,
        definition: r.try_get(3)?,
        created_at: r.try_get(4)?,
        refreshed_at: r.try_get(5)?,
        members: r.try_get(6)?,
    })
}

/// Why a refresh could not compute a cohort.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The stored definition no longer validates (a rule this version refuses).
    #[error("cohort {0} has an invalid definition: {1}")]
    Definition(i64, QueryError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for RefreshError {
    fn from(e: tokio_postgres::Error) -> Self {
        RefreshError::Store(StoreError::Db(e))
    }
}

/// Saves a validated cohort and computes its members before answering.
pub async fn create(
    pool: &Pool,
    project_id: i64,
    name: &str,
    definition: &Value,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<Cohort, RefreshError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "INSERT INTO cohorts (project_id, name, kind, definition) VALUES ($1, $2, $3, $4) RETURNING cohort_id",
            &[&project_id, &name, &rule.kind().as_str(), definition],
        )
        .await?;
    let id: i64 = row.try_get(0)?;
    replace_members(&tx, project_id, id, rule, now).await?;
    let cohort = tx
        .query_one(
            &format!("SELECT {COLUMNS} FROM cohorts WHERE project_id = $1 AND cohort_id = $2"),
            &[&project_id, &id],
        )
        .await?;
    let cohort = cohort_of(&cohort)?;
    tx.commit().await?;
    Ok(cohort)
}

/// The project's cohorts, oldest first.
pub async fn list(pool: &Pool, project_id: i64) -> Result<Vec<Cohort>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM cohorts WHERE project_id = $1 ORDER BY cohort_id"), &[&project_id])
        .await?;
    rows.iter().map(cohort_of).collect()
}

/// One cohort of the project; `None` when the project has no such cohort.
pub async fn get(pool: &Pool, project_id: i64, id: i64) -> Result<Option<Cohort>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM cohorts WHERE project_id = $1 AND cohort_id = $2"),
            &[&project_id, &id],
        )
        .await?;
    row.as_ref().map(cohort_of).transpose()
}

/// Deletes a cohort and its members; false when the project has no such cohort.
pub async fn delete(pool: &Pool, project_id: i64, id: i64) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client.execute("DELETE FROM cohorts WHERE project_id = $1 AND cohort_id = $2", &[&project_id, &id]).await?;
    Ok(n > 0)
}

/// Computes the members of one cohort at `now` and replaces the stored set; answers their number.
async fn replace_members(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    cohort_id: i64,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<i64, RefreshError> {
    let (members, mut b) = membership_sql(rule, project_id, now).map_err(|e| RefreshError::Definition(cohort_id, e))?;
    let pid = b.bind(project_id);
    let cid = b.bind(cohort_id);
    tx.execute("DELETE FROM cohort_members WHERE project_id = $1 AND cohort_id = $2", &[&project_id, &cohort_id])
        .await?;
    let n = tx
        .execute(
            &format!(
                "INSERT INTO cohort_members (project_id, cohort_id, person_key) \
                 SELECT {pid}::bigint, {cid}::bigint, m.k FROM ({members}) m ON CONFLICT DO NOTHING"
            ),
            &b.params(),
        )
        .await?;
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    tx.execute(
        "UPDATE cohorts SET refreshed_at = $3, members = $4 WHERE project_id = $1 AND cohort_id = $2",
        &[&project_id, &cohort_id, &now, &n],
    )
    .await?;
    Ok(n)
}

/// Refreshes one cohort in `tx` when no one else holds it; answers whether it did.
async fn refresh_locked(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    cohort_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, RefreshError> {
    let row = tx
        .query_opt(
            "SELECT definition FROM cohorts WHERE project_id = $1 AND cohort_id = $2 FOR UPDATE SKIP LOCKED",
            &[&project_id, &cohort_id],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let definition: Value = row.try_get(0)?;
    let rule = parse_rule(&definition, "definition").map_err(|e| RefreshError::Definition(cohort_id, e))?;
    replace_members(tx, project_id, cohort_id, &rule, now).await?;
    Ok(true)
}

/// Refreshes every cohort of every project, each in its own transaction (cohorts another
/// replica is refreshing are skipped); answers how many this call refreshed. A cohort whose
/// stored definition fails is logged and skipped: one bad cohort must not stop the others.
pub async fn refresh_all(pool: &Pool) -> Result<usize, StoreError> {
    let mut client = pool.get().await?;
    let mut done = 0;
    let rows = client.query("SELECT project_id, cohort_id FROM cohorts ORDER BY project_id, cohort_id", &[]).await?;
    let ids =
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<Vec<(i64, i64)>, StoreError>>()?;
    for (project_id, cohort_id) in ids {
        let tx = client.transaction().await?;
        match refresh_locked(&tx, project_id, cohort_id, Utc::now()).await {
            Ok(refreshed) => {
                tx.commit().await?;
                done += usize::from(refreshed);
            }
            Err(RefreshError::Definition(id, e)) => tracing::warn!(cohort = id, error = %e, "cohort not refreshed"),
            Err(RefreshError::Store(e)) => return Err(e),
        }
    }
    Ok(done)
}

/// Refreshes one cohort of a project now; false when the project has no such cohort (or another
/// replica is refreshing it at this moment).
pub async fn refresh_one(pool: &Pool, project_id: i64, cohort_id: i64) -> Result<bool, RefreshError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await?;
    let done = refresh_locked(&tx, project_id, cohort_id, Utc::now()).await?;
    tx.commit().await?;
    Ok(done)
}
