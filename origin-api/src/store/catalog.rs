//! The event catalog, maintained at ingest (in progress).

use protocol::forward::EnrichedEvent;

use super::StoreError;
use crate::ingest::enrich::Derived;

/// Records the new events of a write group (sorted by project) in the catalog, inside the
/// group's transaction.
pub async fn record(
    _tx: &deadpool_postgres::Transaction<'_>,
    _events: &[(i64, &EnrichedEvent, &Derived)],
) -> Result<(), StoreError> {
    Ok(())
}
