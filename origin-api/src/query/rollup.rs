//! Answering trends and top queries from the daily rollups, exactly: the days still marked dirty
//! are read from the raw events, every other day from the rollup rows, in one statement and
//! one snapshot, so the answer is always the raw answer.
//!
//! A query qualifies ([`table_for`]) when its buckets are whole local days of the project's
//! zone (interval day, week or month over a range of whole days), its event metrics are `count`
//! and `unique_persons`, and every field it filters or splits by is a dimension of the rollup
//! table it would read: R1 (`rollup_daily_counts`) for counts, R2 (`rollup_daily_persons`) when
//! unique persons are asked. Anything else runs on the raw events as before.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::filter::SqlBuilder;
use super::model::{Common, Field, QueryError};
use super::time::{day_start, local_date, Interval, Range};
use super::trends::Metric;

/// Event columns R1 keeps (as in `EVENT_COLUMNS`).
pub const COUNT_DIMS: &[&str] =
    &["name", "event_type", "path", "country", "channel", "device_type", "browser", "os", "utm_source", "is_bot"];

/// Event columns R2 keeps.
pub const PERSON_DIMS: &[&str] = &["distinct_id", "country", "is_bot"];

/// The rollup table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// R1: events per day and dimensions.
    Counts,
    /// R2: events per day and distinct id (with country and bot flag).
    Persons,
}

impl Table {
    fn sql(self) -> &'static str {
        match self {
            Table::Counts => "rollup_daily_counts",
            Table::Persons => "rollup_daily_persons",
        }
    }

    fn dims(self) -> &'static [&'static str] {
        match self {
            Table::Counts => COUNT_DIMS,
            Table::Persons => PERSON_DIMS,
        }
    }
}

/// Which rollup table can answer the event metrics of a query, if any. `dimension` is the field
/// a `top` query ranks (trends pass their breakdown through `common`).
pub fn table_for(common: &Common, metrics: &[Metric], dimension: Option<&Field>) -> Option<Table> {
    if !whole_days(common) {
        return None;
    }
    let events: Vec<&Metric> = metrics.iter().filter(|m| m.scope() == super::filter::Scope::Events).collect();
    if events.is_empty() || !events.iter().all(|m| matches!(m, Metric::Count | Metric::UniquePersons)) {
        return None;
    }
    let table = if events.contains(&&Metric::UniquePersons) { Table::Persons } else { Table::Counts };
    let mut fields: Vec<&Field> = common.filter.iter().flat_map(|f| f.conditions()).map(|c| &c.field).collect();
    fields.extend(common.breakdown.as_ref().map(|b| &b.field));
    fields.extend(dimension);
    fields.iter().all(|f| matches!(f, Field::Event(col, _) if table.dims().contains(col))).then_some(table)
}

/// Whether a query's periods are whole local days and its buckets days, weeks or months: what
/// every daily rollup needs.
pub fn whole_days(common: &Common) -> bool {
    let whole = |r: &Range| r.days.is_some();
    whole(&common.range)
        && common.previous.as_ref().is_none_or(whole)
        && matches!(common.interval, Interval::Day | Interval::Week | Interval::Month)
}

/// How one query reads the rollups: the table, the zone, and the local days that must be read
/// raw (dirty).
#[derive(Debug, Clone)]
pub struct Plan {
    /// The rollup table.
    pub table: Table,
    /// The project's zone (equal to the query's).
    pub tz: Tz,
    /// Local days marked dirty, sorted.
    pub dirty: Vec<NaiveDate>,
}

/// Finds the plan inside the query's read transaction, or `None` when the query's zone is not
/// the project's (rollup days are the project's days). Must be the transaction's first
/// statement: it makes the transaction REPEATABLE READ, so the dirty marks and the rollup rows
/// are read from one snapshot (the job changes both in one transaction).
pub async fn plan(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    common: &Common,
    table: Table,
) -> Result<Option<Plan>, QueryError> {
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
    let Some(row) = tx.query_opt("SELECT timezone FROM projects WHERE project_id = $1", &[&project_id]).await? else {
        return Ok(None);
    };
    let zone: String = row.try_get(0)?;
    let Ok(tz) = zone.parse::<Tz>() else { return Ok(None) };
    if tz != common.tz {
        return Ok(None);
    }
    let from = common.previous.map_or(common.range.from, |p| p.from.min(common.range.from));
    let to = common.previous.map_or(common.range.to, |p| p.to.max(common.range.to));
    let rows = tx
        .query(
            "SELECT utc_day FROM rollup_dirty WHERE project_id = $1 AND utc_day BETWEEN $2 AND $3",
            &[&project_id, &(from.date_naive() - Duration::days(1)), &(to.date_naive() + Duration::days(1))],
        )
        .await?;
    let mut dirty = BTreeSet::new();
    for r in rows {
        let utc_day: NaiveDate = r.try_get(0)?;
        dirty.extend(crate::store::rollups::local_days(&tz, utc_day));
    }
    Ok(Some(Plan { table, tz, dirty: dirty.into_iter().collect() }))
}

impl Plan {
    /// The per-row source of a trends statement: rollup rows of the clean days of `range` and raw
    /// events of its dirty days, both as `e` with the same columns, plus `b` (bucket) and `w` (how
    /// many events the row stands for). `inner` are the statement's other per-row columns and
    /// `conds` its conditions (bots, filters), compiled against `e`.
    // The pieces of the statement trends.rs compiled, passed as they are: a struct for them
    // would only rename the arguments.
    #[allow(clippy::too_many_arguments)]
    pub fn source(
        &self,
        b: &mut SqlBuilder,
        project_id: i64,
        range: &Range,
        starts: Option<&[DateTime<Utc>]>,
        inner: &[String],
        conds: &[String],
        joins: &str,
    ) -> String {
        let (first, end) = range.days.unwrap_or((local_date(&self.tz, range.from), local_date(&self.tz, range.to)));
        let dirty: Vec<NaiveDate> = self.dirty.iter().copied().filter(|d| *d >= first && *d < end).collect();
        let raw_from: Vec<DateTime<Utc>> = dirty.iter().map(|d| day_start(&self.tz, *d)).collect();
        let raw_to: Vec<DateTime<Utc>> = dirty.iter().map(|d| day_start(&self.tz, *d + Duration::days(1))).collect();
        let p = b.bind(project_id);
        let (bucket_rollup, bucket_raw) = match starts {
            Some(s) => {
                // A bucket starts at a local midnight (or at the range's first day), so each day
                // falls in the bucket whose start date is the last one not after it.
                let dates: Vec<NaiveDate> = s.iter().map(|t| local_date(&self.tz, *t)).collect();
                (
                    format!("width_bucket(e.day, {}::date[])", b.bind(dates)),
                    format!("width_bucket(e.\"timestamp\", {}::timestamptz[])", b.bind(s.to_vec())),
                )
            }
            None => ("1".to_owned(), "1".to_owned()),
        };
        let inner = inner.join(", ");
        let extra: String = conds.iter().map(|c| format!(" AND {c}")).collect();
        format!(
            "SELECT {bucket_rollup} AS b, e.events AS w, {inner} FROM {table} e{joins} \
             WHERE e.project_id = {p}::bigint AND e.day >= {first}::date AND e.day < {end}::date \
             AND NOT (e.day = ANY({dirty}::date[])){extra} \
             UNION ALL \
             SELECT {bucket_raw} AS b, 1::int8 AS w, {inner} \
             FROM unnest({raw_from}::timestamptz[], {raw_to}::timestamptz[]) AS dd(s, t) \
             JOIN events e ON e.project_id = {p}::bigint AND e.\"timestamp\" >= dd.s AND e.\"timestamp\" < dd.t{joins} \
             WHERE true{extra}",
            table = self.table.sql(),
            first = b.bind(first),
            end = b.bind(end),
            dirty = b.bind(dirty),
            raw_from = b.bind(raw_from),
            raw_to = b.bind(raw_to),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::model::parse_query;

    fn check(body: serde_json::Value, metrics: &[Metric], dimension: Option<&str>, expected: Option<Table>) {
        let now = "2026-12-01T12:00:00Z".parse().unwrap();
        let (common, _): (Common, serde_json::Map<String, serde_json::Value>) =
            parse_query(body.clone(), "Europe/Berlin", now).unwrap();
        let dim = dimension.map(|d| Field::parse(d).unwrap());
        assert_eq!(table_for(&common, metrics, dim.as_ref()), expected, "{body} {metrics:?}");
    }

    #[test]
    fn which_queries_rollups_answer() {
        use Metric::*;
        let c = Some(Table::Counts);
        let p = Some(Table::Persons);
        let eq = |f: &str| json!({"field": f, "op": "eq", "value": "x"});
        check(json!({"date_range": "last_30_days"}), &[Count], None, c);
        check(json!({"date_range": "last_30_days"}), &[UniquePersons], None, p);
        check(json!({"date_range": "last_30_days", "interval": "week"}), &[Count, UniquePersons], None, p);
        check(
            json!({"date_range": "last_30_days", "interval": "month", "compare": "previous_period"}),
            &[Count],
            None,
            c,
        );
        check(json!({"date_range": "last_30_days", "interval": "hour"}), &[Count], None, None);
        check(json!({"date_range": "last_24_hours"}), &[Count], None, None);
        check(
            json!({"date_range": {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}}),
            &[Count],
            None,
            None,
        );
        check(json!({"date_range": "last_7_days", "filters": eq("event.path")}), &[Count], None, c);
        check(json!({"date_range": "last_7_days", "filters": eq("event.path")}), &[UniquePersons], None, None);
        check(json!({"date_range": "last_7_days", "filters": {"not": eq("event.country")}}), &[UniquePersons], None, p);
        check(json!({"date_range": "last_7_days", "filters": eq("event.host")}), &[Count], None, None);
        check(json!({"date_range": "last_7_days", "filters": eq("event.properties.plan")}), &[Count], None, None);
        check(json!({"date_range": "last_7_days", "filters": eq("person.properties.plan")}), &[Count], None, None);
        check(json!({"date_range": "last_7_days", "filters": eq("session.channel")}), &[Count], None, None);
        check(json!({"date_range": "last_7_days", "breakdown": {"field": "event.country"}}), &[UniquePersons], None, p);
        check(json!({"date_range": "last_7_days", "breakdown": {"field": "event.browser"}}), &[Count], None, c);
        check(json!({"date_range": "last_7_days"}), &[Count], Some("event.path"), c);
        check(json!({"date_range": "last_7_days"}), &[UniquePersons, Count], Some("event.path"), None);
        check(json!({"date_range": "last_7_days"}), &[Count, Visits], None, c);
        check(json!({"date_range": "last_7_days"}), &[Visits], None, None);
        check(json!({"date_range": "last_7_days"}), &[UniqueSessions], None, None);
    }
}
