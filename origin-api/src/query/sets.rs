//! Answering trends and top queries of one event selector and at most one dimension from the
//! rollup sets (V15): events counts summed, unique persons counted over the union of the days'
//! distinct-id sets, mapped to persons by the in-memory mapping (`store::idmap`). Days marked
//! dirty are read from the raw events in the same snapshot, so the answer is the raw answer.
//!
//! A query qualifies ([`fit`]) when the daily rollups could answer it (whole local days, day,
//! week or month buckets), bots are left out, its metrics are `count` and `unique_persons`, its
//! filter is absent or one `eq` on the event name or type, and it splits (breakdown or top
//! dimension) by at most one of [`SET_DIMS`].

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use roaring::RoaringBitmap;
use serde_json::Value;

use super::filter::{query_rows, SqlBuilder};
use super::model::{Common, Condition, Field, Filter, Op, Operand, QueryError};
use super::rollup::Plan;
use super::time::{day_start, local_date, Range};
use super::trends::Metric;
use crate::store::idmap::{IdMap, Overlay};
pub use crate::store::rollups::SET_DIMS;

/// What a qualifying query reads: the selector and the dimension of the rollup-set rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// `''` every event, `t:<type>`, `n:<name>` (as stored).
    sel: String,
    /// The selector's condition on the raw events (column, value).
    sel_raw: Option<(&'static str, String)>,
    /// The dimension's column, if the query splits.
    dim: Option<&'static str>,
}

impl Shape {
    /// Whether unique persons are counted (then the mapping is needed).
    pub fn needs_persons(metrics: &[Metric]) -> bool {
        metrics.contains(&Metric::UniquePersons)
    }
}

/// Whether the rollup sets answer a query (see the module doc); `dimension` is the field a top
/// query ranks.
pub fn fit(common: &Common, metrics: &[Metric], dimension: Option<&Field>) -> Option<Shape> {
    if common.include_bots || metrics.is_empty() {
        return None;
    }
    if !metrics.iter().all(|m| matches!(m, Metric::Count | Metric::UniquePersons)) {
        return None;
    }
    if !super::rollup::whole_days(common) {
        return None;
    }
    let (sel, sel_raw) = match &common.filter {
        None => (String::new(), None),
        Some(Filter::Leaf(Condition { field: Field::Event(col, _), op: Op::Eq, value: Operand::Text(v), .. })) => {
            match *col {
                "name" => (format!("n:{v}"), Some(("name", v.clone()))),
                "event_type" => (format!("t:{v}"), Some(("event_type", v.clone()))),
                _ => return None,
            }
        }
        Some(_) => return None,
    };
    let split = match (common.breakdown.as_ref().map(|b| &b.field), dimension) {
        (Some(_), Some(_)) => return None,
        (Some(f), None) | (None, Some(f)) => Some(f),
        (None, None) => None,
    };
    let dim = match split {
        None => None,
        Some(Field::Event(col, _)) => Some(*SET_DIMS.iter().find(|d| *d == col)?),
        Some(_) => return None,
    };
    Some(Shape { sel, sel_raw, dim })
}

/// One answered cell: bucket, group (`other` for every value outside the top ones) and a value
/// per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct SetCell {
    /// 0-based bucket.
    pub bucket: usize,
    /// The dimension's value (`None` unset, or "other").
    pub value: Option<String>,
    /// The group of every value outside the top ones.
    pub other: bool,
    /// One per metric of the query.
    pub values: Vec<Value>,
}

/// Persons of one cell: a distinct-id set from the rollups and the persons of raw days.
#[derive(Default)]
struct Acc {
    events: i64,
    dids: RoaringBitmap,
    persons: Vec<u32>,
}

/// The cells of one period: per bucket (`starts`, or one bucket) and per value of the dimension
/// (every value apart when `top` is `None`; else the top values apart and the rest as "other").
// The parts of a query trends.rs already holds, passed as they are.
#[allow(clippy::too_many_arguments)]
pub async fn cells(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    plan: &Plan,
    shape: &Shape,
    range: &Range,
    starts: Option<&[DateTime<Utc>]>,
    metrics: &[Metric],
    top: Option<&[Option<String>]>,
    map: Option<&IdMap>,
) -> Result<Vec<SetCell>, QueryError> {
    let persons = map.filter(|_| Shape::needs_persons(metrics));
    let (first, end) = range.days.unwrap_or((local_date(&plan.tz, range.from), local_date(&plan.tz, range.to)));
    let dirty: Vec<NaiveDate> = plan.dirty.iter().copied().filter(|d| *d >= first && *d < end).collect();
    let dates: Option<Vec<NaiveDate>> = starts.map(|s| s.iter().map(|t| local_date(&plan.tz, *t)).collect());
    // A bucket starts at a local midnight (or the range's first day): a day is in the bucket
    // whose start date is the last one not after it.
    let bucket_of = |d: NaiveDate| dates.as_ref().map_or(0, |ds| ds.partition_point(|s| *s <= d).saturating_sub(1));
    let group_of = |v: Option<String>| -> (Option<String>, bool) {
        match top {
            None => (v, false),
            Some(t) if t.contains(&v) => (v, false),
            Some(_) => (None, true),
        }
    };
    let mut acc: HashMap<(usize, Option<String>, bool), Acc> = HashMap::new();

    // Clean days from the rollup sets.
    let dim = shape.dim.unwrap_or("");
    let rows = tx
        .query(
            &format!(
                "SELECT day, value, events, {} FROM rollup_daily_sets WHERE project_id = $1 AND sel = $2 \
                 AND dim = $3 AND day >= $4 AND day < $5 AND NOT (day = ANY($6))",
                if persons.is_some() { "dids" } else { "NULL::bytea" }
            ),
            &[&project_id, &shape.sel, &dim, &first, &end, &dirty],
        )
        .await?;
    for r in &rows {
        let day: NaiveDate = r.try_get(0)?;
        let (value, other) = group_of(r.try_get(1)?);
        let a = acc.entry((bucket_of(day), value, other)).or_default();
        a.events += r.try_get::<_, i64>(2)?;
        if let Some(bytes) = r.try_get::<_, Option<&[u8]>>(3)? {
            let set = RoaringBitmap::deserialize_unchecked_from(bytes)
                .map_err(|e| crate::store::StoreError::Corrupt(format!("rollup set: {e}")))?;
            a.dids |= set;
        }
    }

    // Dirty days from the raw events.
    if !dirty.is_empty() {
        let mut b = SqlBuilder::new();
        let p = b.bind(project_id);
        let froms: Vec<DateTime<Utc>> = dirty.iter().map(|d| day_start(&plan.tz, *d)).collect();
        let tos: Vec<DateTime<Utc>> = dirty.iter().map(|d| day_start(&plan.tz, *d + Duration::days(1))).collect();
        let value = shape.dim.map_or("NULL::text".to_owned(), |d| format!("e.{d}"));
        let sel = match &shape.sel_raw {
            Some((col, v)) => format!(" AND e.{col} = {}", b.bind(v.clone())),
            None => String::new(),
        };
        let (who, group) = match persons {
            Some(_) => (", pd.person_id, s.num, e.distinct_id", "1, 2, 3, 4, 5"),
            None => (", NULL::uuid, NULL::int4, NULL::text", "1, 2"),
        };
        let joins = match persons {
            Some(_) => {
                " LEFT JOIN person_distinct_ids pd ON pd.project_id = e.project_id AND pd.distinct_id = e.distinct_id \
                 LEFT JOIN sequence_distinct_ids s ON s.project_id = e.project_id AND s.distinct_id = e.distinct_id"
            }
            None => "",
        };
        let sql = format!(
            "SELECT dd.i::int4, {value}{who}, count(*) \
             FROM unnest({f}::timestamptz[], {t}::timestamptz[]) WITH ORDINALITY AS dd(s, t, i) \
             JOIN events e ON e.project_id = {p}::bigint AND e.\"timestamp\" >= dd.s AND e.\"timestamp\" < dd.t{joins} \
             WHERE NOT e.is_bot{sel} GROUP BY {group}",
            f = b.bind(froms),
            t = b.bind(tos),
        );
        let raw = query_rows(tx, &sql, &b).await?;
        let mut overlay = persons.map(Overlay::new);
        for r in &raw {
            let i: i32 = r.try_get(0)?;
            let day = dirty[usize::try_from(i - 1).unwrap_or(0)];
            let (value, other) = group_of(r.try_get(1)?);
            let a = acc.entry((bucket_of(day), value, other)).or_default();
            a.events += r.try_get::<_, i64>(5)?;
            if let Some(o) = overlay.as_mut() {
                let did: Option<&str> = r.try_get(4)?;
                a.persons.push(o.person(r.try_get(2)?, r.try_get(3)?, did.unwrap_or_default()));
            }
        }
        if let Some(o) = overlay {
            // Persons numbered here are counted below with the mapping's.
            return Ok(finish(acc, metrics, persons, o.n_persons()));
        }
    }
    let n = persons.map_or(0, IdMap::n_persons);
    Ok(finish(acc, metrics, persons, n))
}

/// Turns the accumulated cells into values: counts as they are, unique persons as the distinct
/// persons of the cell's distinct ids and raw persons.
fn finish(
    acc: HashMap<(usize, Option<String>, bool), Acc>,
    metrics: &[Metric],
    map: Option<&IdMap>,
    n_persons: u32,
) -> Vec<SetCell> {
    // A stamp per person number: counting a cell's distinct persons costs no clearing.
    let mut seen: Vec<u32> = if map.is_some() { vec![0; n_persons as usize] } else { Vec::new() };
    let mut stamp = 0u32;
    acc.into_iter()
        .map(|((bucket, value, other), a)| {
            let uniques = map.map_or(0, |m| {
                stamp += 1;
                let mut n = 0u64;
                let persons = a.dids.iter().map(|d| m.person_of(d)).chain(a.persons.iter().copied());
                for p in persons {
                    if let Some(s) = seen.get_mut(p as usize) {
                        if *s != stamp {
                            *s = stamp;
                            n += 1;
                        }
                    }
                }
                n
            });
            let values = metrics
                .iter()
                .map(|m| match m {
                    Metric::UniquePersons => Value::from(uniques),
                    _ => Value::from(a.events),
                })
                .collect();
            SetCell { bucket, value, other, values }
        })
        .collect()
}

/// The top `limit` values by the first metric over `range` (ties by value, bytewise; unset
/// last), as the raw statement ranks them.
pub fn rank(cells: &[SetCell], limit: u32) -> Vec<Option<String>> {
    let mut all: Vec<(&Value, &Option<String>)> = cells.iter().map(|c| (&c.values[0], &c.value)).collect();
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    all.sort_by(|a, b| {
        number(b.0).cmp(&number(a.0)).then_with(|| match (a.1, b.1) {
            (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
    });
    all.into_iter().take(limit as usize).map(|(_, v)| v.clone()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::model::parse_query;

    fn check(body: Value, metrics: &[Metric], dimension: Option<&str>, expected: Option<(&str, &str)>) {
        let now = "2026-12-01T12:00:00Z".parse().unwrap();
        let (common, _): (Common, serde_json::Map<String, Value>) = parse_query(body.clone(), "UTC", now).unwrap();
        let dim = dimension.map(|d| Field::parse(d).unwrap());
        let got = fit(&common, metrics, dim.as_ref()).map(|s| (s.sel, s.dim.unwrap_or("")));
        assert_eq!(got, expected.map(|(a, b)| (a.to_owned(), b)), "{body} {metrics:?} {dimension:?}");
    }

    #[test]
    fn which_queries_the_sets_answer() {
        use Metric::*;
        let eq = |f: &str, v: &str| json!({"field": f, "op": "eq", "value": v});
        let d30 = json!("last_30_days");
        check(json!({"date_range": d30}), &[UniquePersons], None, Some(("", "")));
        check(json!({"date_range": d30}), &[Count, UniquePersons], None, Some(("", "")));
        check(json!({"date_range": d30, "interval": "week"}), &[UniquePersons], None, Some(("", "")));
        check(
            json!({"date_range": d30, "filters": eq("event.type", "page")}),
            &[UniquePersons, Count],
            Some("event.path"),
            Some(("t:page", "path")),
        );
        check(
            json!({"date_range": d30, "filters": eq("event.name", "signed_up")}),
            &[Count],
            None,
            Some(("n:signed_up", "")),
        );
        check(
            json!({"date_range": d30, "breakdown": {"field": "event.country"}}),
            &[Count],
            None,
            Some(("", "country")),
        );
        check(
            json!({"date_range": d30, "breakdown": {"field": "event.referrer_domain"}}),
            &[UniquePersons],
            None,
            Some(("", "referrer_domain")),
        );
        check(json!({"date_range": d30, "include_bots": true}), &[Count], None, None);
        check(json!({"date_range": d30, "interval": "hour"}), &[Count], None, None);
        check(json!({"date_range": "last_24_hours"}), &[Count], None, None);
        check(json!({"date_range": d30}), &[UniqueSessions], None, None);
        check(json!({"date_range": d30}), &[Count, Visits], None, None);
        check(json!({"date_range": d30, "filters": eq("event.country", "DE")}), &[Count], None, None);
        check(
            json!({"date_range": d30, "filters": {"field": "event.name", "op": "neq", "value": "x"}}),
            &[Count],
            None,
            None,
        );
        check(
            json!({"date_range": d30, "filters": {"and": [eq("event.name", "x"), eq("event.type", "track")]}}),
            &[Count],
            None,
            None,
        );
        check(json!({"date_range": d30, "breakdown": {"field": "event.host"}}), &[Count], None, None);
        check(json!({"date_range": d30, "breakdown": {"field": "event.properties.plan"}}), &[Count], None, None);
        check(json!({"date_range": d30, "breakdown": {"field": "session.channel"}}), &[Count], None, None);
    }

    fn cell(value: Option<&str>, n: u64) -> SetCell {
        SetCell { bucket: 0, value: value.map(str::to_owned), other: false, values: vec![Value::from(n)] }
    }

    #[test]
    fn ranking_is_the_raw_statements() {
        let cells = [cell(Some("b"), 5), cell(None, 9), cell(Some("a"), 5), cell(Some("c"), 7), cell(Some("Z"), 5)];
        let s = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(rank(&cells, 10), s(&[None, Some("c"), Some("Z"), Some("a"), Some("b")]));
        assert_eq!(rank(&cells, 2), s(&[None, Some("c")]));
    }
}
