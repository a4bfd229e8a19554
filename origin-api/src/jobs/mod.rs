//! Background jobs, safe with several origin replicas on one PostgreSQL.
//!
//! Each job is a row of `jobs`. A replica takes a due job with `FOR UPDATE SKIP LOCKED`, runs it
//! while holding the row lock, and moves `next_run_at` forward in the same transaction: another
//! replica either skips the locked row or, after the commit, sees that it is not due. A job never
//! runs twice for one due time, and a crashed replica's lock is released with its connection.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::store::StoreError;

/// The jobs this version knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Creates the event partitions of this month and the next three ahead of time.
    CreatePartitions,
    /// Deletes events and sessions older than each project's retention, and old warnings.
    Retention,
    /// Recomputes the daily rollups of the days marked dirty (`store::rollups::run_pending`).
    Rollups,
    /// Recomputes the members of every saved cohort (`store::cohorts::refresh_all`).
    RefreshCohorts,
}

impl Job {
    /// Every job.
    pub const ALL: [Job; 4] = [Job::CreatePartitions, Job::Retention, Job::Rollups, Job::RefreshCohorts];

    /// Its row name in `jobs`.
    pub fn name(self) -> &'static str {
        match self {
            Job::CreatePartitions => "create_partitions",
            Job::Retention => "retention",
            Job::Rollups => "rollups",
            Job::RefreshCohorts => "refresh_cohorts",
        }
    }

    /// How long after a run the job is due again.
    pub fn interval(self) -> chrono::Duration {
        match self {
            Job::CreatePartitions => chrono::Duration::hours(1),
            Job::Retention => chrono::Duration::hours(1),
            // Due again at every tick of the default 60 s scheduler: rollups lag the raw events
            // by about one tick (queries stay exact meanwhile: they read dirty days raw).
            Job::Rollups => chrono::Duration::seconds(5),
            // Behavioural cohorts move with time ("in the last 30 days") and with new events.
            Job::RefreshCohorts => chrono::Duration::minutes(10),
        }
    }
}

/// The months a partition job must cover at `now`: this one and the next three.
pub fn partition_months(now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    (0..4).filter_map(|i| now.checked_add_months(chrono::Months::new(i))).collect()
}

async fn run_job(
    pool: &Pool,
    tx: &deadpool_postgres::Transaction<'_>,
    job: Job,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match job {
        // One transaction per cohort, each cohort row locked (FOR UPDATE SKIP LOCKED).
        Job::RefreshCohorts => {
            let cohorts = crate::store::cohorts::refresh_all(pool).await?;
            tracing::debug!(cohorts, "cohorts refreshed");
        }
        // Its own transactions, in chunks (the job row only keeps replicas from running it at once).
        Job::Rollups => {
            let marks = crate::store::rollups::run_pending(pool).await?;
            if marks > 0 {
                tracing::info!(marks, "rollups recomputed dirty days");
            }
        }
        Job::CreatePartitions => {
            for month in partition_months(now) {
                tx.execute("SELECT nexus_ensure_event_partition($1)", &[&month]).await?;
            }
        }
        Job::Retention => {
            // Rows, not partitions: partitions are shared by all projects, retentions differ.
            let events = tx
                .execute(
                    r#"WITH gone AS (
                         DELETE FROM events e USING projects p
                         WHERE e.project_id = p.project_id AND p.retention_days IS NOT NULL
                           AND e."timestamp" < $1::timestamptz - make_interval(days => p.retention_days)
                         RETURNING e.project_id, e.event_id, e."timestamp"),
                       dirty AS (INSERT INTO rollup_dirty (project_id, utc_day)
                         SELECT DISTINCT project_id, ("timestamp" AT TIME ZONE 'UTC')::date FROM gone)
                       DELETE FROM event_ids i USING gone WHERE i.project_id = gone.project_id AND i.event_id = gone.event_id"#,
                    &[&now],
                )
                .await?;
            tx.execute(
                "DELETE FROM sessions s USING projects p WHERE s.project_id = p.project_id AND p.retention_days IS NOT NULL
                   AND s.ended_at < $1::timestamptz - make_interval(days => p.retention_days)",
                &[&now],
            )
            .await?;
            tx.execute(
                "DELETE FROM ingestion_warnings WHERE day < ($1::timestamptz - interval '90 days')::date",
                &[&now],
            )
            .await?;
            // Copies of the mapping older than MAX_AGE reload whole; a day leaves a wide margin.
            tx.execute("DELETE FROM person_map_log WHERE at < $1::timestamptz - interval '1 day'", &[&now]).await?;
            if events > 0 {
                tracing::info!(events, "retention deleted expired events");
            }
        }
    }
    Ok(())
}

/// Runs every due job that no other replica is running; returns the jobs this call ran.
pub async fn run_due(pool: &Pool, runner: &str) -> Result<Vec<Job>, StoreError> {
    let mut ran = Vec::new();
    for job in Job::ALL {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx
            .query_opt(
                "SELECT 1 FROM jobs WHERE name = $1 AND next_run_at <= now() FOR UPDATE SKIP LOCKED",
                &[&job.name()],
            )
            .await?
            .is_some();
        if !due {
            continue;
        }
        run_job(pool, &tx, job, Utc::now()).await?;
        let next = Utc::now() + job.interval();
        tx.execute(
            "UPDATE jobs SET next_run_at = $2, last_run_at = now(), last_runner = $3, runs = runs + 1 WHERE name = $1",
            &[&job.name(), &next, &runner],
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("nexus_origin_jobs_run_total", "job" => job.name()).increment(1);
        ran.push(job);
    }
    Ok(ran)
}

/// Runs [`run_due`] every `every` until the process stops. Errors are logged and retried on the
/// next tick: a database outage must not stop the scheduler.
pub async fn scheduler(pool: Pool, runner: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match run_due(&pool, &runner).await {
            Ok(ran) if !ran.is_empty() => tracing::info!(?ran, "background jobs ran"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background jobs failed; retrying on the next tick"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn months_ahead() {
        let cases = [
            ("2026-12-31T23:00:00Z", ["2026-12", "2027-01", "2027-02", "2027-03"]),
            ("2026-01-31T00:00:00Z", ["2026-01", "2026-02", "2026-03", "2026-04"]),
        ];
        for (now, expected) in cases {
            let got: Vec<String> =
                partition_months(now.parse().unwrap()).iter().map(|t| t.format("%Y-%m").to_string()).collect();
            assert_eq!(got, expected, "{now}");
        }
    }
}
