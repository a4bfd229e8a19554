//! Per-person event sequences, rebuilt per UTC day by the rollup job (in progress).

use chrono::NaiveDate;

use super::StoreError;

/// Rebuilds the sequences of `utc_day` of a project from the raw events (called by the rollup
/// job for every dirty day, inside its transaction).
pub async fn rebuild_day(
    _tx: &deadpool_postgres::Transaction<'_>,
    _project_id: i64,
    _utc_day: NaiveDate,
) -> Result<(), StoreError> {
    Ok(())
}
