//! Trends: metrics per interval (with empty buckets as zero), split by a breakdown (top N plus
//! "other"), compared with the previous period; and `top`, the same machinery over one bucket.
//!
//! Event metrics read `events` (bucketed by event time), session metrics read `sessions`
//! (bucketed by session start). Buckets are computed in Rust ([`super::time::buckets`]) and
//! passed as an array of start instants: `width_bucket` puts each row in its bucket, so the SQL
//! and the documented time rules cannot disagree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::filter::{begin_read, query_rows, Scope, SqlBuilder};
use super::model::{Breakdown, Common, Field, PropertyKey, QueryError};
use super::rollup::Plan;
use super::time::{Bucket, Interval, Range};

/// Most metrics in one query.
pub const MAX_METRICS: usize = 10;

/// Most rows of a `top` answer.
pub const MAX_TOP_LIMIT: u32 = 1000;

/// An aggregate of a numeric event property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Sum (0 when no event has the property).
    Sum,
    /// Mean.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Median (linear interpolation, `percentile_cont`).
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
}

impl Agg {
    fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "p50" => Agg::P50,
            "p90" => Agg::P90,
            "p99" => Agg::P99,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::P50 => "p50",
            Agg::P90 => "p90",
            Agg::P99 => "p99",
        }
    }

    fn sql(self, col: &str) -> String {
        match self {
            Agg::Sum => format!("coalesce(sum({col}), 0)::float8"),
            Agg::Avg => format!("avg({col})::float8"),
            Agg::Min => format!("min({col})::float8"),
            Agg::Max => format!("max({col})::float8"),
            Agg::P50 => format!("percentile_cont(0.5) WITHIN GROUP (ORDER BY {col})"),
            Agg::P90 => format!("percentile_cont(0.9) WITHIN GROUP (ORDER BY {col})"),
            Agg::P99 => format!("percentile_cont(0.99) WITHIN GROUP (ORDER BY {col})"),
        }
    }
}

/// A metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// Events.
    Count,
    /// Distinct persons (a distinct id without a person counts as its own person).
    UniquePersons,
    /// Distinct session ids (events without a session are not counted).
    UniqueSessions,
    /// An aggregate of a numeric event property (events where it is not a JSON number are skipped).
    Property(Agg, PropertyKey),
    /// Sessions started.
    Visits,
    /// Share of sessions that bounced (0 to 1).
    BounceRate,
    /// Mean session duration, seconds.
    AvgDuration,
    /// Mean page views per session.
    PagesPerSession,
}

impl Metric {
    const NAMES: &'static str = "count, unique_persons, unique_sessions, visits, bounce_rate, avg_duration, \
         pages_per_session, or {\"op\": \"sum|avg|min|max|p50|p90|p99\", \"field\": \"event.properties.<key>\"}";

    /// The metric's key in answers: `count`, `sum(event.properties.amount)`.
    pub fn name(&self) -> String {
        match self {
            Metric::Count => "count".into(),
            Metric::UniquePersons => "unique_persons".into(),
            Metric::UniqueSessions => "unique_sessions".into(),
            Metric::Property(a, k) => format!("{}(event.properties.{})", a.name(), k.as_str()),
            Metric::Visits => "visits".into(),
            Metric::BounceRate => "bounce_rate".into(),
            Metric::AvgDuration => "avg_duration".into(),
            Metric::PagesPerSession => "pages_per_session".into(),
        }
    }

    /// Which table the metric reads.
    pub fn scope(&self) -> Scope {
        match self {
            Metric::Count | Metric::UniquePersons | Metric::UniqueSessions | Metric::Property(..) => Scope::Events,
            _ => Scope::Sessions,
        }
    }

    /// The value of an empty bucket.
    fn empty(&self) -> Value {
        match self {
            Metric::Count | Metric::UniquePersons | Metric::UniqueSessions | Metric::Visits => Value::from(0),
            Metric::Property(Agg::Sum, _) => Value::from(0.0),
            _ => Value::Null,
        }
    }

    /// Parses `"count"` or `{"op": "p90", "field": "event.properties.load_ms"}`.
    pub fn parse(v: &Value, path: &str) -> Result<Metric, QueryError> {
        let unknown = || QueryError::invalid(path, format!("unknown metric; metrics are {}", Metric::NAMES));
        match v {
            Value::String(s) => Ok(match s.as_str() {
                "count" => Metric::Count,
                "unique_persons" => Metric::UniquePersons,
                "unique_sessions" => Metric::UniqueSessions,
                "visits" => Metric::Visits,
                "bounce_rate" => Metric::BounceRate,
                "avg_duration" => Metric::AvgDuration,
                "pages_per_session" => Metric::PagesPerSession,
                _ => return Err(unknown()),
            }),
            Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "op" | "field")) {
                    return Err(QueryError::invalid(
                        format!("{path}.{k}"),
                        format!("unknown field {k:?}; a metric has op and field"),
                    ));
                }
                let op = o.get("op").and_then(Value::as_str).and_then(Agg::parse).ok_or_else(|| {
                    QueryError::invalid(format!("{path}.op"), "op is one of sum, avg, min, max, p50, p90, p99")
                })?;
                let fpath = format!("{path}.field");
                let field = o
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| QueryError::invalid(&fpath, "field is required"))?;
                match Field::parse(field).map_err(|m| QueryError::invalid(&fpath, m))? {
                    Field::EventProperty(k) => Ok(Metric::Property(op, k)),
                    _ => Err(QueryError::invalid(&fpath, "aggregates take an event property: event.properties.<key>")),
                }
            }
            _ => Err(unknown()),
        }
    }
}

fn parse_metrics(v: Option<&Vec<Value>>, default: Vec<Metric>) -> Result<Vec<Metric>, QueryError> {
    let Some(list) = v else { return Ok(default) };
    if list.is_empty() || list.len() > MAX_METRICS {
        return Err(QueryError::invalid("metrics", format!("metrics is a list of 1 to {MAX_METRICS} metrics")));
    }
    let metrics = list
        .iter()
        .enumerate()
        .map(|(i, m)| Metric::parse(m, &format!("metrics[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, m) in metrics.iter().enumerate() {
        if metrics[..i].contains(m) {
            return Err(QueryError::invalid(format!("metrics[{i}]"), "metric listed twice"));
        }
    }
    Ok(metrics)
}

/// The trends part of a request (next to the common keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendsQuery {
    /// Metrics; `["count"]` when absent.
    #[serde(default)]
    pub metrics: Option<Vec<Value>>,
    /// `false` reads the raw events even when the rollups could answer (same answer; for
    /// checks and comparisons). Rollups are used when absent.
    #[serde(default)]
    pub use_rollups: Option<bool>,
}

/// The `top` part of a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// The field whose values are ranked (`event.path`, `session.entry_path`, `event.country`, ...).
    pub dimension: String,
    /// Metrics; the first ranks the rows. `["visits"]` for session fields, else
    /// `["unique_persons", "count"]`.
    #[serde(default)]
    pub metrics: Option<Vec<Value>>,
    /// Rows to return; 10 when absent.
    #[serde(default)]
    pub limit: Option<u32>,
    /// As [`TrendsQuery::use_rollups`].
    #[serde(default)]
    pub use_rollups: Option<bool>,
}

/// A date range as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeOut {
    /// Start (inclusive), in the query's zone.
    pub from: String,
    /// End (exclusive), in the query's zone.
    pub to: String,
}

fn range_out(r: &Range, common: &Common) -> RangeOut {
    let f = |t: DateTime<Utc>| t.with_timezone(&common.tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    RangeOut { from: f(r.from), to: f(r.to) }
}

/// Which breakdown group a series is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesKey {
    /// The field's value (text), `null` when unset; `null` for "other".
    pub value: Option<String>,
    /// True for the group of every value outside the top N.
    pub other: bool,
}

/// One series: a value per bucket for each metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The breakdown group; absent without a breakdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<SeriesKey>,
    /// Metric name -> one value per bucket.
    pub metrics: BTreeMap<String, Vec<Value>>,
}

/// A period's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// The period.
    pub date_range: RangeOut,
    /// Its buckets.
    pub buckets: Vec<Bucket>,
    /// Its series (the same groups in the same order in both periods).
    pub series: Vec<Series>,
}

/// The answer of `POST /v1/query/trends`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendsResponse {
    /// Zone of the buckets.
    pub timezone: String,
    /// Bucket width.
    pub interval: Interval,
    /// Metric names, in the order asked.
    pub metrics: Vec<String>,
    /// The period asked for.
    #[serde(flatten)]
    pub current: Period,
    /// The previous period, when `compare` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Period>,
}

/// One row of a `top` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    /// The dimension's value; `null` when unset.
    pub value: Option<String>,
    /// Metric name -> value over the whole range.
    pub metrics: BTreeMap<String, Value>,
}

/// The answer of `POST /v1/query/top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopResponse {
    /// Zone of the range.
    pub timezone: String,
    /// The range.
    pub date_range: RangeOut,
    /// The dimension.
    pub dimension: String,
    /// Metric names, in the order asked.
    pub metrics: Vec<String>,
    /// The top values, best first by the first metric.
    pub rows: Vec<TopRow>,
    /// Every other value together; absent when the top rows are all there is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<BTreeMap<String, Value>>,
}

/// One aggregated row: bucket index, group, and a value per metric of the query (`None` for
/// the metrics another statement answers: event and session metrics of a group merge).
struct Cell {
    bucket: usize,
    key: SeriesKey,
    values: Vec<Option<Value>>,
}

impl From<super::sets::SetCell> for Cell {
    fn from(c: super::sets::SetCell) -> Cell {
        Cell {
            bucket: c.bucket,
            key: SeriesKey { value: c.value, other: c.other },
            values: c.values.into_iter().map(Some).collect(),
        }
    }
}

/// The read transaction of a trends or top query, with its rollup plan, and, when the rollup
/// sets answer it, their shape and the person mapping as of the transaction's snapshot.
struct SetsRead<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    plan: Option<Plan>,
    shape: Option<super::sets::Shape>,
    map: Option<std::sync::Arc<crate::store::idmap::IdMap>>,
}

/// What [`super::sets::cells`] needs besides the period.
#[derive(Clone, Copy)]
struct Sets<'a> {
    plan: &'a Plan,
    shape: &'a super::sets::Shape,
    map: Option<&'a crate::store::idmap::IdMap>,
}

impl Sets<'_> {
    async fn cells(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        project_id: i64,
        range: &Range,
        starts: Option<&[DateTime<Utc>]>,
        metrics: &[Metric],
        top: Option<&[Option<String>]>,
    ) -> Result<Vec<super::sets::SetCell>, QueryError> {
        super::sets::cells(tx, project_id, self.plan, self.shape, range, starts, metrics, top, self.map).await
    }
}

impl<'c> SetsRead<'c> {
    /// Starts the read transaction. With unique persons from the sets, the project's mapping copy
    /// is locked before the snapshot is taken and brought to it (`store::idmap`).
    async fn begin(
        client: &'c mut deadpool_postgres::Client,
        project_id: i64,
        common: &Common,
        table: Option<super::rollup::Table>,
        shape: Option<&super::sets::Shape>,
        metrics: &[Metric],
    ) -> Result<SetsRead<'c>, QueryError> {
        let slot = match shape {
            Some(_) if super::sets::Shape::needs_persons(metrics) => {
                Some(crate::store::idmap::copy_of(client, project_id).await?)
            }
            _ => None,
        };
        let mut guard = match &slot {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let tx = begin_read(client).await?;
        // The plan (dirty days, zone) serves the sets too; its table only the SQL path.
        let plan = match table.or(shape.map(|_| super::rollup::Table::Counts)) {
            Some(t) => super::rollup::plan(&tx, project_id, common, t).await?,
            None => None,
        };
        let map = match (guard.as_mut(), &plan) {
            (Some(g), Some(_)) => Some(crate::store::idmap::refresh(&tx, project_id, g).await?),
            _ => None,
        };
        drop(guard);
        let shape = shape.filter(|_| plan.is_some()).cloned();
        Ok(SetsRead { tx, plan, shape, map })
    }

    /// The sets, when they answer this query.
    fn sets(&self) -> Option<Sets<'_>> {
        Some(Sets { plan: self.plan.as_ref()?, shape: self.shape.as_ref()?, map: self.map.as_deref() })
    }
}

/// The breakdown of one statement: the field, the top values to keep apart (`None`: keep every
/// value apart, to rank them), and the JSON path to blame for a field the scope cannot read.
#[derive(Clone, Copy)]
struct Split<'a> {
    breakdown: &'a Breakdown,
    top: Option<&'a [Option<String>]>,
    path: &'a str,
}

/// Builds `SELECT ... FROM (per-row inputs) x GROUP BY ...` for metrics of one scope.
/// Columns: `b` (1-based bucket, or 1 without buckets), `in_top`, `v`, then one per metric.
/// With a rollup plan, event rows come from the rollups and the dirty days' raw events
/// ([`super::rollup::Plan::source`]), each standing for `w` events.
// One argument per part of the query; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
fn statement(
    project_id: i64,
    common: &Common,
    range: &Range,
    starts: Option<&[DateTime<Utc>]>,
    metrics: &[&Metric],
    scope: Scope,
    split: Option<Split<'_>>,
    plan: Option<&Plan>,
) -> Result<(String, SqlBuilder), QueryError> {
    let mut b = SqlBuilder::new();
    let (alias, time_col) = match scope {
        Scope::Events => ("e", "e.\"timestamp\""),
        Scope::Sessions => ("s", "s.started_at"),
    };
    let plan = plan.filter(|_| scope == Scope::Events);
    let mut conds = Vec::new();
    if !common.include_bots {
        conds.push(match scope {
            Scope::Events => "NOT e.is_bot".to_owned(),
            // A session is a bot's when any of its events is flagged.
            Scope::Sessions => "NOT EXISTS (SELECT 1 FROM events bot WHERE bot.project_id = s.project_id \
                 AND bot.session_id = s.session_id AND bot.is_bot \
                 AND bot.\"timestamp\" >= s.started_at AND bot.\"timestamp\" <= s.ended_at)"
                .to_owned(),
        });
    }
    if let Some(f) = &common.filter {
        conds.push(b.filter_sql(f, scope)?);
    }
    let mut inner = Vec::new();
    match split {
        Some(sp) => {
            let v = format!("({})::text", b.field_sql(&sp.breakdown.field, scope, sp.path)?);
            inner.push(format!("{v} AS v"));
            match sp.top {
                Some(top) => {
                    let named: Vec<String> = top.iter().flatten().cloned().collect();
                    let has_null = top.iter().any(Option::is_none);
                    inner.push(format!(
                        "(coalesce({v} = ANY({}::text[]), false) OR ({v} IS NULL AND {}::bool)) AS in_top",
                        b.bind(named),
                        b.bind(has_null)
                    ));
                }
                None => inner.push("true AS in_top".to_owned()),
            }
        }
        None => inner.push("NULL::text AS v, true AS in_top".to_owned()),
    }
    let mut aggs = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let agg = match m {
            Metric::Count if plan.is_some() => "sum(w)::int8".to_owned(),
            Metric::Count | Metric::Visits => "count(*)".to_owned(),
            Metric::UniquePersons => {
                inner.push(format!("{} AS m{i}", b.person_key(scope)));
                format!("count(DISTINCT m{i})")
            }
            Metric::UniqueSessions => {
                inner.push(format!("e.session_id AS m{i}"));
                format!("count(DISTINCT m{i})")
            }
            Metric::Property(agg, key) => {
                inner.push(format!("{} AS m{i}", b.number_sql(&Field::EventProperty(key.clone()), scope, "metrics")?));
                agg.sql(&format!("m{i}"))
            }
            Metric::BounceRate => {
                inner.push(format!("(CASE WHEN s.is_bounce THEN 1.0 ELSE 0.0 END)::float8 AS m{i}"));
                format!("avg(m{i})")
            }
            Metric::AvgDuration => {
                inner.push(format!("s.duration_secs::float8 AS m{i}"));
                format!("avg(m{i})")
            }
            Metric::PagesPerSession => {
                inner.push(format!("s.pageviews::float8 AS m{i}"));
                format!("avg(m{i})")
            }
        };
        aggs.push(format!("{agg} AS a{i}"));
    }
    let from = match scope {
        Scope::Events => "events e",
        Scope::Sessions => "sessions s",
    };
    let joins = b.joins(scope);
    let rows = match plan {
        Some(plan) => plan.source(&mut b, project_id, range, starts, &inner, &conds, &joins),
        None => {
            let mut all = vec![
                format!("{alias}.project_id = {}::bigint", b.bind(project_id)),
                format!("{time_col} >= {}::timestamptz", b.bind(range.from)),
                format!("{time_col} < {}::timestamptz", b.bind(range.to)),
            ];
            all.extend(conds);
            let bucket = match starts {
                Some(s) => format!("width_bucket({time_col}, {}::timestamptz[]) AS b", b.bind(s.to_vec())),
                None => "1 AS b".to_owned(),
            };
            format!(
                "SELECT {bucket}, {inner} FROM {from}{joins} WHERE {conds}",
                inner = inner.join(", "),
                conds = all.join(" AND ")
            )
        }
    };
    let sql = format!(
        "SELECT b, in_top, CASE WHEN in_top THEN v END AS v, {aggs} FROM ({rows}) x GROUP BY 1, 2, 3",
        aggs = aggs.join(", "),
    );
    Ok((sql, b))
}

fn read_values(row: &tokio_postgres::Row, metrics: &[&Metric], offset: usize) -> Result<Vec<Value>, QueryError> {
    metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(match m {
                Metric::Count | Metric::Visits | Metric::UniquePersons | Metric::UniqueSessions => {
                    Value::from(row.try_get::<_, i64>(offset + i)?)
                }
                _ => row.try_get::<_, Option<f64>>(offset + i)?.map(Value::from).unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// Runs a statement and reads its cells.
async fn cells(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    b: &SqlBuilder,
    metrics: &[&Metric],
) -> Result<Vec<Cell>, QueryError> {
    let rows = query_rows(tx, sql, b).await?;
    rows.iter()
        .map(|r| {
            let bucket: i32 = r.try_get(0)?;
            let in_top: bool = r.try_get(1)?;
            let value: Option<String> = r.try_get(2)?;
            Ok(Cell {
                bucket: usize::try_from(bucket.max(1) - 1).unwrap_or(0),
                key: SeriesKey { value, other: !in_top },
                values: read_values(r, metrics, 3)?.into_iter().map(Some).collect(),
            })
        })
        .collect()
}

/// The top `limit` values of the breakdown by `metric` over `range` (ties by value, bytewise;
/// unset last).
async fn top_values(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    common: &Common,
    range: &Range,
    metric: &Metric,
    split: Split<'_>,
    plan: Option<&Plan>,
) -> Result<Vec<Option<String>>, QueryError> {
    let (inner, b) = statement(project_id, common, range, None, &[metric], metric.scope(), Some(split), plan)?;
    let ranked = format!(
        "SELECT v FROM (SELECT g.v, row_number() OVER (ORDER BY g.a0 DESC NULLS LAST, g.v COLLATE \"C\" ASC NULLS LAST) AS r \
         FROM ({inner}) g) t WHERE r <= {} ORDER BY r",
        split.breakdown.limit
    );
    let rows = query_rows(tx, &ranked, &b).await?;
    rows.iter().map(|r| r.try_get::<_, Option<String>>(0).map_err(QueryError::from)).collect()
}

/// Every cell of one period: each scope's metrics in one statement, values placed at the
/// metric's position in `metrics`.
// As `statement`, whose arguments it passes on.
#[allow(clippy::too_many_arguments)]
async fn period_cells(
    tx: &deadpool_postgres::Transaction<'_>,
    project_id: i64,
    common: &Common,
    range: &Range,
    starts: Option<&[DateTime<Utc>]>,
    metrics: &[Metric],
    split: Option<Split<'_>>,
    plan: Option<&Plan>,
) -> Result<Vec<Cell>, QueryError> {
    let mut out = Vec::new();
    for scope in [Scope::Events, Scope::Sessions] {
        let positions: Vec<usize> = (0..metrics.len()).filter(|&i| metrics[i].scope() == scope).collect();
        if positions.is_empty() {
            continue;
        }
        let scoped: Vec<&Metric> = positions.iter().map(|&i| &metrics[i]).collect();
        let (sql, b) = statement(project_id, common, range, starts, &scoped, scope, split, plan)?;
        for c in cells(tx, &sql, &b, &scoped).await? {
            let mut values: Vec<Option<Value>> = vec![None; metrics.len()];
            for (v, &i) in c.values.into_iter().zip(&positions) {
                values[i] = v;
            }
            out.push(Cell { bucket: c.bucket, key: c.key, values });
        }
    }
    Ok(out)
}

/// Lays cells out as series over `n_buckets` buckets, groups in `keys` order.
fn series(
    keys: &[SeriesKey],
    with_breakdown: bool,
    metrics: &[Metric],
    n_buckets: usize,
    cells: Vec<Cell>,
) -> Vec<Series> {
    let mut grids: Vec<Vec<Vec<Value>>> =
        keys.iter().map(|_| metrics.iter().map(|m| vec![m.empty(); n_buckets]).collect()).collect();
    for c in cells {
        let Some(k) = keys.iter().position(|k| *k == c.key) else { continue };
        if c.bucket >= n_buckets {
            continue;
        }
        for (mi, v) in c.values.into_iter().enumerate() {
            if let Some(v) = v {
                grids[k][mi][c.bucket] = v;
            }
        }
    }
    keys.iter()
        .zip(grids)
        .map(|(k, grid)| Series {
            breakdown: with_breakdown.then(|| k.clone()),
            metrics: metrics.iter().map(Metric::name).zip(grid).collect(),
        })
        .collect()
}

/// The groups of a breakdown: the top values in rank order, then "other" when any cell of
/// either period falls outside them.
fn group_keys(top: Option<&[Option<String>]>, cells: &[&[Cell]]) -> Vec<SeriesKey> {
    match top {
        None => vec![SeriesKey { value: None, other: false }],
        Some(top) => {
            let mut keys: Vec<SeriesKey> = top.iter().map(|v| SeriesKey { value: v.clone(), other: false }).collect();
            if cells.iter().any(|cs| cs.iter().any(|c| c.key.other)) {
                keys.push(SeriesKey { value: None, other: true });
            }
            keys
        }
    }
}

/// Runs a trends query for a project.
pub async fn trends(
    pool: &Pool,
    project_id: i64,
    common: &Common,
    q: &TrendsQuery,
) -> Result<TrendsResponse, QueryError> {
    let metrics = parse_metrics(q.metrics.as_ref(), vec![Metric::Count])?;
    let buckets = common.buckets(&common.range)?;
    let previous = common.previous.map(|p| common.buckets(&p).map(|b| (p, b))).transpose()?;
    if let Some(bd) = &common.breakdown {
        let groups = usize::try_from(bd.limit).unwrap_or(usize::MAX).saturating_add(1);
        if buckets.len().saturating_mul(groups) > super::filter::MAX_RESULT_ROWS {
            return Err(QueryError::invalid(
                "breakdown.limit",
                format!(
                    "buckets x (limit + 1) exceeds {}; lower the limit or widen the interval",
                    super::filter::MAX_RESULT_ROWS
                ),
            ));
        }
    }
    let rollups = q.use_rollups.unwrap_or(true);
    let table = if rollups { super::rollup::table_for(common, &metrics, None) } else { None };
    let shape = if rollups { super::sets::fit(common, &metrics, None) } else { None };
    let mut client = pool.get().await?;
    let read = SetsRead::begin(&mut client, project_id, common, table, shape.as_ref(), &metrics).await?;
    let (tx, plan) = (&read.tx, read.plan.as_ref());
    let sets = read.sets();
    let top = match &common.breakdown {
        Some(bd) => Some(match sets {
            Some(sets) => {
                let all = sets.cells(tx, project_id, &common.range, None, &metrics[..1], None).await?;
                super::sets::rank(&all, bd.limit)
            }
            None => {
                let split = Split { breakdown: bd, top: None, path: "breakdown.field" };
                top_values(tx, project_id, common, &common.range, &metrics[0], split, plan).await?
            }
        }),
        None => None,
    };
    let split =
        common.breakdown.as_ref().map(|bd| Split { breakdown: bd, top: top.as_deref(), path: "breakdown.field" });
    let starts: Vec<DateTime<Utc>> = buckets.iter().map(|b| b.start).collect();
    let current = match sets {
        Some(sets) => sets
            .cells(tx, project_id, &common.range, Some(&starts), &metrics, top.as_deref())
            .await?
            .into_iter()
            .map(Cell::from)
            .collect(),
        None => period_cells(tx, project_id, common, &common.range, Some(&starts), &metrics, split, plan).await?,
    };
    let before = match &previous {
        Some((range, pb)) => {
            let starts: Vec<DateTime<Utc>> = pb.iter().map(|b| b.start).collect();
            Some(match sets {
                Some(sets) => sets
                    .cells(tx, project_id, range, Some(&starts), &metrics, top.as_deref())
                    .await?
                    .into_iter()
                    .map(Cell::from)
                    .collect(),
                None => period_cells(tx, project_id, common, range, Some(&starts), &metrics, split, plan).await?,
            })
        }
        None => None,
    };
    read.tx.commit().await?;
    let all: Vec<&[Cell]> = std::iter::once(current.as_slice()).chain(before.as_deref()).collect();
    let keys = group_keys(top.as_deref(), &all);
    let with_bd = common.breakdown.is_some();
    let compare = match (previous, before) {
        (Some((range, pb)), Some(cells)) => Some(Period {
            date_range: range_out(&range, common),
            series: series(&keys, with_bd, &metrics, pb.len(), cells),
            buckets: pb,
        }),
        _ => None,
    };
    Ok(TrendsResponse {
        timezone: common.timezone.clone(),
        interval: common.interval,
        metrics: metrics.iter().map(Metric::name).collect(),
        current: Period {
            date_range: range_out(&common.range, common),
            series: series(&keys, with_bd, &metrics, buckets.len(), current),
            buckets,
        },
        compare,
    })
}

/// Runs a top query (top pages, entry pages, sources, countries, ...) for a project.
pub async fn top(pool: &Pool, project_id: i64, common: &Common, q: &TopQuery) -> Result<TopResponse, QueryError> {
    if common.breakdown.is_some() {
        return Err(QueryError::invalid("breakdown", "top ranks the values of dimension; breakdown does not apply"));
    }
    if common.previous.is_some() {
        return Err(QueryError::invalid("compare", "top does not compare periods; use trends with a breakdown"));
    }
    let field = Field::parse(&q.dimension).map_err(|m| QueryError::invalid("dimension", m))?;
    let limit = q.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_TOP_LIMIT {
        return Err(QueryError::invalid("limit", format!("limit is 1 to {MAX_TOP_LIMIT}")));
    }
    let default = if field.is_session() { vec![Metric::Visits] } else { vec![Metric::UniquePersons, Metric::Count] };
    let metrics = parse_metrics(q.metrics.as_ref(), default)?;
    let rollups = q.use_rollups.unwrap_or(true);
    let table = if rollups { super::rollup::table_for(common, &metrics, Some(&field)) } else { None };
    let shape = if rollups { super::sets::fit(common, &metrics, Some(&field)) } else { None };
    let bd = Breakdown { field, limit };
    let mut client = pool.get().await?;
    let read = SetsRead::begin(&mut client, project_id, common, table, shape.as_ref(), &metrics).await?;
    let (tx, plan) = (&read.tx, read.plan.as_ref());
    let (top, cells) = match read.sets() {
        Some(sets) => {
            // Every value apart once, then the top ones kept and the rest summed up as "other"
            // (its unique persons are those of the union, so it is counted again, not summed).
            let all = sets.cells(tx, project_id, &common.range, None, &metrics, None).await?;
            let top = super::sets::rank(&all, limit);
            let cells = if all.len() > top.len() {
                sets.cells(tx, project_id, &common.range, None, &metrics, Some(&top)).await?
            } else {
                all
            };
            (top, cells.into_iter().map(Cell::from).collect())
        }
        None => {
            let ranking = Split { breakdown: &bd, top: None, path: "dimension" };
            let top = top_values(tx, project_id, common, &common.range, &metrics[0], ranking, plan).await?;
            let split = Split { breakdown: &bd, top: Some(&top), path: "dimension" };
            let cells = period_cells(tx, project_id, common, &common.range, None, &metrics, Some(split), plan).await?;
            (top, cells)
        }
    };
    read.tx.commit().await?;
    let keys = group_keys(Some(&top), &[&cells]);
    let mut rows = Vec::new();
    let mut other = None;
    for s in series(&keys, true, &metrics, 1, cells) {
        let totals: BTreeMap<String, Value> =
            s.metrics.into_iter().map(|(k, v)| (k, v.into_iter().next().unwrap_or(Value::Null))).collect();
        match s.breakdown {
            Some(SeriesKey { other: true, .. }) => other = Some(totals),
            Some(SeriesKey { value, .. }) => rows.push(TopRow { value, metrics: totals }),
            None => {}
        }
    }
    Ok(TopResponse {
        timezone: common.timezone.clone(),
        date_range: range_out(&common.range, common),
        dimension: q.dimension.clone(),
        metrics: metrics.iter().map(Metric::name).collect(),
        rows,
        other,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(v: Value, expected: Result<&str, &str>) {
        let got = Metric::parse(&v, "metrics[0]").map(|m| m.name()).map_err(|e| match e {
            QueryError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        });
        assert_eq!(got, expected.map(str::to_owned).map_err(str::to_owned), "{v}");
    }

    #[test]
    fn metrics_parse() {
        check(json!("count"), Ok("count"));
        check(json!("unique_persons"), Ok("unique_persons"));
        check(json!("bounce_rate"), Ok("bounce_rate"));
        check(json!({"op": "p90", "field": "event.properties.load_ms"}), Ok("p90(event.properties.load_ms)"));
        check(json!("countt"), Err("metrics[0]"));
        check(json!({"op": "median", "field": "event.properties.x"}), Err("metrics[0].op"));
        check(json!({"op": "sum", "field": "event.path"}), Err("metrics[0].field"));
        check(json!({"op": "sum", "field": "event.properties.x'"}), Err("metrics[0].field"));
        check(json!({"op": "sum", "field": "event.properties.x", "as": "y"}), Err("metrics[0].as"));
        assert!(parse_metrics(Some(&vec![json!("count"), json!("count")]), vec![]).is_err());
        assert!(parse_metrics(Some(&vec![]), vec![]).is_err());
    }

    #[test]
    fn series_fill_empty_buckets_and_keep_group_order() {
        let metrics = vec![Metric::Count, Metric::Visits];
        let k = |v: &str| SeriesKey { value: Some(v.into()), other: false };
        let other = SeriesKey { value: None, other: true };
        let cells = vec![
            Cell { bucket: 2, key: k("b"), values: vec![Some(json!(5)), None] },
            Cell { bucket: 2, key: k("b"), values: vec![None, Some(json!(2))] },
            Cell { bucket: 0, key: other.clone(), values: vec![Some(json!(1)), None] },
        ];
        let top = [Some("a".to_owned()), Some("b".to_owned())];
        let keys = group_keys(Some(&top), &[&cells]);
        assert_eq!(keys, vec![k("a"), k("b"), other]);
        let s = series(&keys, true, &metrics, 3, cells);
        assert_eq!(s[0].metrics["count"], vec![json!(0), json!(0), json!(0)]);
        assert_eq!(s[1].metrics["count"], vec![json!(0), json!(0), json!(5)]);
        assert_eq!(s[1].metrics["visits"], vec![json!(0), json!(0), json!(2)]);
        assert_eq!(s[2].metrics["count"], vec![json!(1), json!(0), json!(0)]);
    }
}
