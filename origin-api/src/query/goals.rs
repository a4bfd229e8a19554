//! Goals: saved definitions (an event name with property conditions, or a page-path pattern)
//! and `POST /v1/query/goals`, the conversions, converting persons and conversion rate of each
//! goal per interval, with a breakdown.
//!
//! A goal compiles to one boolean SQL expression per event (bound parameters only: the path
//! pattern becomes a bound `LIKE` pattern, the conditions go through the filter compiler). All
//! goals of a query are counted in one pass over the range's events: `GROUPING SETS` gives the
//! per-bucket cells and the whole-range totals (distinct persons cannot be summed over buckets).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::filter::{begin_read, query_rows, Scope, SqlBuilder, MAX_RESULT_ROWS};
use super::model::{from_value, parse_filter, Common, Filter, QueryError};
use super::time::{Bucket, Interval};
use super::trends::{RangeOut, SeriesKey};

/// Most saved goals per project.
pub const MAX_SAVED_GOALS: i64 = 100;

/// Most goals in one query.
pub const MAX_QUERY_GOALS: usize = 10;

/// Longest goal name, in characters.
pub const MAX_GOAL_NAME_LEN: usize = 100;

/// Longest page-path pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// A goal definition as sent (saved with `POST /v1/goals`, or inline in a query).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    page_path: Option<String>,
    #[serde(default)]
    filters: Option<Value>,
}

/// What a goal matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Events with this name.
    Event(String),
    /// Page views whose path matches the glob (`*` is any run of characters, `/` included);
    /// `like` is the same pattern for SQL `LIKE`.
    PagePath {
        /// The glob as sent.
        pattern: String,
        /// The `LIKE` pattern.
        like: String,
    },
}

/// A validated goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// Saved goal id; `None` for an inline definition.
    pub id: Option<i64>,
    /// Name (inline goals without one are named after their target).
    pub name: String,
    /// What it matches.
    pub target: Target,
    /// Conditions the matching event must also meet.
    pub filter: Option<Filter>,
    /// The definition as stored and answered: `{"event", "filters"}` or `{"page_path", "filters"}`.
    pub definition: Value,
}

/// A page-path glob as a `LIKE` pattern: `*` becomes `%`; `%`, `_` and the escape character
/// `\` are escaped, so they match themselves.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn at(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Validates a definition; `prefix` is where it sits in the request (`""`, `goals[1]`), and
/// `require_name` is true for a goal being saved.
pub fn parse_definition(v: &Value, prefix: &str, require_name: bool) -> Result<Goal, QueryError> {
    if !v.is_object() {
        return Err(QueryError::invalid(prefix, "a goal is an object with event or page_path"));
    }
    let d: DefinitionIn = from_value(v.clone(), prefix)?;
    let name = match d.name {
        Some(n) => {
            let n = n.trim().to_owned();
            if n.is_empty() || n.chars().count() > MAX_GOAL_NAME_LEN || n.chars().any(char::is_control) {
                return Err(QueryError::invalid(
                    at(prefix, "name"),
                    format!("name is 1 to {MAX_GOAL_NAME_LEN} characters, without control characters"),
                ));
            }
            Some(n)
        }
        None if require_name => return Err(QueryError::invalid(at(prefix, "name"), "name is required")),
        None => None,
    };
    let target = match (d.event, d.page_path) {
        (Some(_), Some(_)) => {
            return Err(QueryError::invalid(at(prefix, "page_path"), "a goal has either event or page_path, not both"))
        }
        (None, None) => return Err(QueryError::invalid(at(prefix, "event"), "a goal needs event or page_path")),
        (Some(e), None) => {
            if e.is_empty() || e.len() > protocol::limits::MAX_NAME_LEN {
                return Err(QueryError::invalid(
                    at(prefix, "event"),
                    format!("event is 1 to {} bytes", protocol::limits::MAX_NAME_LEN),
                ));
            }
            Target::Event(e)
        }
        (None, Some(p)) => {
            if !p.starts_with('/') || p.len() > MAX_PATTERN_LEN {
                return Err(QueryError::invalid(
                    at(prefix, "page_path"),
                    format!("page_path is a path pattern starting with / (at most {MAX_PATTERN_LEN} bytes), such as /blog/*"),
                ));
            }
            Target::PagePath { like: glob_to_like(&p), pattern: p }
        }
    };
    let filter = d.filters.as_ref().map(|f| parse_filter(f, &at(prefix, "filters"))).transpose()?;
    let mut definition = match &target {
        Target::Event(e) => json!({ "event": e }),
        Target::PagePath { pattern, .. } => json!({ "page_path": pattern }),
    };
    if let Some(f) = d.filters {
        definition["filters"] = f;
    }
    let name = name.unwrap_or_else(|| match &target {
        Target::Event(e) => e.clone(),
        Target::PagePath { pattern, .. } => format!("page {pattern}"),
    });
    Ok(Goal { id: None, name, target, filter, definition })
}

impl Goal {
    /// The goal as one boolean SQL expression over `events e` (never NULL).
    fn sql(&self, b: &mut SqlBuilder) -> Result<String, QueryError> {
        let mut parts = vec![match &self.target {
            Target::Event(name) => format!("e.name = {}::text", b.bind(name.clone())),
            Target::PagePath { like, .. } => {
                format!("(e.event_type = 'page' AND e.path LIKE {}::text)", b.bind(like.clone()))
            }
        }];
        if let Some(f) = &self.filter {
            parts.push(b.filter_sql(f, Scope::Events)?);
        }
        Ok(format!("coalesce(({}), false)", parts.join(" AND ")))
    }
}

/// A saved goal, as answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavedGoal {
    /// Goal id.
    pub id: i64,
    /// Name, unique in the project.
    pub name: String,
    /// `{"event", "filters"}` or `{"page_path", "filters"}`.
    pub definition: Value,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
}

/// Saves a goal (the body of `POST /v1/goals`).
pub async fn create(pool: &Pool, project_id: i64, body: &Value) -> Result<SavedGoal, QueryError> {
    let goal = parse_definition(body, "", true)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Serialises the saves of one project, so the count check cannot be raced past.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('nexus_goals'), ($1::int8 % 2147483647)::int4)", &[&project_id])
        .await?;
    let count: i64 = tx.query_one("SELECT count(*) FROM goals WHERE project_id = $1", &[&project_id]).await?.get(0);
    if count >= MAX_SAVED_GOALS {
        return Err(QueryError::invalid(
            "",
            format!("a project has at most {MAX_SAVED_GOALS} goals; delete one first"),
        ));
    }
    let row = tx
        .query_opt(
            "INSERT INTO goals (project_id, name, definition) VALUES ($1, $2, $3) \
             ON CONFLICT (project_id, name) DO NOTHING RETURNING goal_id, created_at",
            &[&project_id, &goal.name, &goal.definition],
        )
        .await?;
    let Some(row) = row else {
        return Err(QueryError::invalid("name", "a goal with this name exists"));
    };
    tx.commit().await?;
    Ok(SavedGoal { id: row.get(0), name: goal.name, definition: goal.definition, created_at: row.get(1) })
}

/// The saved goals of a project, by id.
pub async fn list(pool: &Pool, project_id: i64) -> Result<Vec<SavedGoal>, QueryError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT goal_id, name, definition, created_at FROM goals WHERE project_id = $1 ORDER BY goal_id",
            &[&project_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SavedGoal { id: r.get(0), name: r.get(1), definition: r.get(2), created_at: r.get(3) })
        .collect())
}

/// Deletes a saved goal; false when the project has no such goal.
pub async fn delete(pool: &Pool, project_id: i64, goal_id: i64) -> Result<bool, QueryError> {
    let client = pool.get().await?;
    let n =
        client.execute("DELETE FROM goals WHERE project_id = $1 AND goal_id = $2", &[&project_id, &goal_id]).await?;
    Ok(n > 0)
}

/// The goals part of a query request (next to the common keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalsQuery {
    /// Saved goal ids and inline definitions; every saved goal of the project when absent.
    #[serde(default)]
    pub goals: Option<Vec<Value>>,
}

/// The goals a query asks for, validated (saved ones loaded from the project).
async fn resolve_goals(pool: &Pool, project_id: i64, q: &GoalsQuery) -> Result<Vec<Goal>, QueryError> {
    let saved = list(pool, project_id).await?;
    let load = |s: &SavedGoal| -> Result<Goal, QueryError> {
        let mut def = s.definition.clone();
        def["name"] = Value::from(s.name.clone());
        let mut g = parse_definition(&def, &format!("goals[id {}]", s.id), true)?;
        g.id = Some(s.id);
        Ok(g)
    };
    let goals = match &q.goals {
        None => {
            if saved.len() > MAX_QUERY_GOALS {
                return Err(QueryError::invalid(
                    "goals",
                    format!("the project has more than {MAX_QUERY_GOALS} goals; list the ones to query"),
                ));
            }
            saved.iter().map(load).collect::<Result<Vec<_>, _>>()?
        }
        Some(items) => {
            if items.is_empty() || items.len() > MAX_QUERY_GOALS {
                return Err(QueryError::invalid("goals", format!("goals is a list of 1 to {MAX_QUERY_GOALS} goals")));
            }
            let by_id: HashMap<i64, &SavedGoal> = saved.iter().map(|s| (s.id, s)).collect();
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let path = format!("goals[{i}]");
                    match item {
                        Value::Number(n) => match n.as_i64().and_then(|id| by_id.get(&id)) {
                            Some(s) => load(s),
                            None => Err(QueryError::invalid(path, "no saved goal with this id in the project")),
                        },
                        Value::Object(_) => parse_definition(item, &path, false),
                        _ => Err(QueryError::invalid(path, "a goal is a saved goal id or a definition object")),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(goals)
}

/// Totals of a series over the whole range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Events that matched the goal.
    pub conversions: i64,
    /// Distinct persons with at least one conversion.
    pub converting_persons: i64,
    /// Distinct persons with any event (after the filters).
    pub unique_persons: i64,
    /// `converting_persons / unique_persons` (0 without persons).
    pub conversion_rate: f64,
}

/// One series of a goal: a value per bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoalSeries {
    /// The breakdown group; absent without a breakdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<SeriesKey>,
    /// Conversions (events) per bucket.
    pub conversions: Vec<i64>,
    /// Converting persons per bucket.
    pub converting_persons: Vec<i64>,
    /// Unique persons per bucket.
    pub unique_persons: Vec<i64>,
    /// Conversion rate per bucket.
    pub conversion_rate: Vec<f64>,
    /// The whole range.
    pub totals: Totals,
}

/// One goal's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoalResult {
    /// Saved goal id; absent for an inline definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Name.
    pub name: String,
    /// Its definition.
    pub definition: Value,
    /// One series per breakdown group (one without a breakdown).
    pub series: Vec<GoalSeries>,
}

/// The answer of `POST /v1/query/goals`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoalsResponse {
    /// Zone of the buckets.
    pub timezone: String,
    /// Bucket width.
    pub interval: Interval,
    /// The range.
    pub date_range: RangeOut,
    /// The buckets.
    pub buckets: Vec<Bucket>,
    /// The goals, in the order asked.
    pub goals: Vec<GoalResult>,
}

/// One aggregated row: bucket (`None` for the whole-range total), group, unique persons, and
/// per goal (conversions, converting persons).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 0-based bucket; `None` for the total.
    pub bucket: Option<usize>,
    /// Breakdown group.
    pub key: SeriesKey,
    /// Distinct persons.
    pub uniques: i64,
    /// Per goal: (conversions, converting persons).
    pub goals: Vec<(i64, i64)>,
}

fn rate(converting: i64, uniques: i64) -> f64 {
    if uniques == 0 {
        0.0
    } else {
        converting as f64 / uniques as f64
    }
}

/// Lays cells out per goal, one series per key (in `keys` order), `n_buckets` values each.
pub fn assemble(
    keys: &[SeriesKey],
    with_breakdown: bool,
    n_goals: usize,
    n_buckets: usize,
    cells: &[Cell],
) -> Vec<Vec<GoalSeries>> {
    (0..n_goals)
        .map(|g| {
            keys.iter()
                .map(|k| {
                    let mut s = GoalSeries {
                        breakdown: with_breakdown.then(|| k.clone()),
                        conversions: vec![0; n_buckets],
                        converting_persons: vec![0; n_buckets],
                        unique_persons: vec![0; n_buckets],
                        conversion_rate: vec![0.0; n_buckets],
                        totals: Totals {
                            conversions: 0,
                            converting_persons: 0,
                            unique_persons: 0,
                            conversion_rate: 0.0,
                        },
                    };
                    for c in cells.iter().filter(|c| c.key == *k) {
                        let (conv, persons) = c.goals.get(g).copied().unwrap_or((0, 0));
                        match c.bucket {
                            Some(i) if i < n_buckets => {
                                s.conversions[i] = conv;
                                s.converting_persons[i] = persons;
                                s.unique_persons[i] = c.uniques;
                                s.conversion_rate[i] = rate(persons, c.uniques);
                            }
                            Some(_) => {}
                            None => {
                                s.totals = Totals {
                                    conversions: conv,
                                    converting_persons: persons,
                                    unique_persons: c.uniques,
                                    conversion_rate: rate(persons, c.uniques),
                                }
                            }
                        }
                    }
                    s
                })
                .collect()
        })
        .collect()
}

/// `SELECT ... FROM events e ... WHERE ...` with one row per event: `b` (bucket), `pk`
/// (person), `v` (breakdown value), `in_top`, `g0`.. (goal matched).
fn rows_sql(
    b: &mut SqlBuilder,
    project_id: i64,
    common: &Common,
    starts: &[DateTime<Utc>],
    goals: &[Goal],
    top: Option<&[Option<String>]>,
) -> Result<String, QueryError> {
    let mut conds = vec![
        format!("e.project_id = {}::bigint", b.bind(project_id)),
        format!("e.\"timestamp\" >= {}::timestamptz", b.bind(common.range.from)),
        format!("e.\"timestamp\" < {}::timestamptz", b.bind(common.range.to)),
    ];
    if !common.include_bots {
        conds.push("NOT e.is_bot".to_owned());
    }
    if let Some(f) = &common.filter {
        conds.push(b.filter_sql(f, Scope::Events)?);
    }
    let mut cols = vec![
        format!("width_bucket(e.\"timestamp\", {}::timestamptz[]) AS b", b.bind(starts.to_vec())),
        format!("{} AS pk", b.person_key(Scope::Events)),
    ];
    match &common.breakdown {
        Some(bd) => {
            let v = format!("({})::text", b.field_sql(&bd.field, Scope::Events, "breakdown.field")?);
            cols.push(format!("{v} AS v"));
            match top {
                Some(top) => {
                    let named: Vec<String> = top.iter().flatten().cloned().collect();
                    let has_null = top.iter().any(Option::is_none);
                    cols.push(format!(
                        "(coalesce({v} = ANY({}::text[]), false) OR ({v} IS NULL AND {}::bool)) AS in_top",
                        b.bind(named),
                        b.bind(has_null)
                    ));
                }
                None => cols.push("true AS in_top".to_owned()),
            }
        }
        None => cols.push("NULL::text AS v, true AS in_top".to_owned()),
    }
    for (i, g) in goals.iter().enumerate() {
        cols.push(format!("{} AS g{i}", g.sql(b)?));
    }
    Ok(format!("SELECT {} FROM events e{} WHERE {}", cols.join(", "), b.joins(Scope::Events), conds.join(" AND ")))
}

/// Runs a goals query for a project.
pub async fn run(pool: &Pool, project_id: i64, common: &Common, q: &GoalsQuery) -> Result<GoalsResponse, QueryError> {
    if common.previous.is_some() {
        return Err(QueryError::invalid("compare", "goals do not compare periods; query each period"));
    }
    let goals = resolve_goals(pool, project_id, q).await?;
    let buckets = common.buckets(&common.range)?;
    let starts: Vec<DateTime<Utc>> = buckets.iter().map(|b| b.start).collect();
    if let Some(bd) = &common.breakdown {
        let groups = usize::try_from(bd.limit).unwrap_or(usize::MAX).saturating_add(1);
        if (buckets.len() + 1).saturating_mul(groups) > MAX_RESULT_ROWS {
            return Err(QueryError::invalid(
                "breakdown.limit",
                format!("buckets x (limit + 1) exceeds {MAX_RESULT_ROWS}; lower the limit or widen the interval"),
            ));
        }
    }
    let mut result = GoalsResponse {
        timezone: common.timezone.clone(),
        interval: common.interval,
        date_range: range_out(common),
        buckets,
        goals: Vec::new(),
    };
    if goals.is_empty() {
        return Ok(result);
    }
    let mut client = pool.get().await?;
    let tx = begin_read(&mut client).await?;
    // The breakdown's groups: the values with the most converting persons (any goal), then the
    // most persons, then bytewise.
    let top = match &common.breakdown {
        Some(bd) => {
            let mut b = SqlBuilder::new();
            let rows = rows_sql(&mut b, project_id, common, &starts, &goals, None)?;
            let any: Vec<String> = (0..goals.len()).map(|i| format!("g{i}")).collect();
            let sql = format!(
                "SELECT v FROM (SELECT v, row_number() OVER (ORDER BY c DESC, u DESC, v COLLATE \"C\" ASC NULLS LAST) AS r \
                 FROM (SELECT v, count(DISTINCT pk) FILTER (WHERE {any}) AS c, count(DISTINCT pk) AS u \
                 FROM ({rows}) x GROUP BY v) t) ranked WHERE r <= {limit} ORDER BY r",
                any = any.join(" OR "),
                limit = bd.limit
            );
            let ranked = query_rows(&tx, &sql, &b).await?;
            Some(ranked.iter().map(|r| r.try_get::<_, Option<String>>(0)).collect::<Result<Vec<_>, _>>()?)
        }
        None => None,
    };
    let mut b = SqlBuilder::new();
    let rows = rows_sql(&mut b, project_id, common, &starts, &goals, top.as_deref())?;
    let per_goal: Vec<String> = (0..goals.len())
        .map(|i| format!("count(*) FILTER (WHERE g{i}), count(DISTINCT pk) FILTER (WHERE g{i})"))
        .collect();
    let sql = format!(
        "SELECT GROUPING(b) = 1, b, in_top, v, count(DISTINCT pk), {per_goal} \
         FROM (SELECT b, pk, in_top, CASE WHEN in_top THEN v END AS v, {gs} FROM ({rows}) x) y \
         GROUP BY GROUPING SETS ((b, in_top, v), (in_top, v))",
        per_goal = per_goal.join(", "),
        gs = (0..goals.len()).map(|i| format!("g{i}")).collect::<Vec<_>>().join(", "),
    );
    let found = query_rows(&tx, &sql, &b).await?;
    tx.commit().await?;
    let mut cells = Vec::with_capacity(found.len());
    for r in &found {
        let total: bool = r.try_get(0)?;
        let bucket: Option<i32> = r.try_get(1)?;
        let mut per = Vec::with_capacity(goals.len());
        for i in 0..goals.len() {
            per.push((r.try_get::<_, i64>(5 + 2 * i)?, r.try_get::<_, i64>(6 + 2 * i)?));
        }
        cells.push(Cell {
            // width_bucket is 1-based within the range.
            bucket: if total { None } else { bucket.and_then(|b| usize::try_from(b - 1).ok()) },
            key: SeriesKey { value: r.try_get(3)?, other: !r.try_get::<_, bool>(2)? },
            uniques: r.try_get(4)?,
            goals: per,
        });
    }
    let keys: Vec<SeriesKey> = match &top {
        None => vec![SeriesKey { value: None, other: false }],
        Some(top) => {
            let mut keys: Vec<SeriesKey> = top.iter().map(|v| SeriesKey { value: v.clone(), other: false }).collect();
            if cells.iter().any(|c| c.key.other) {
                keys.push(SeriesKey { value: None, other: true });
            }
            keys
        }
    };
    let series = assemble(&keys, top.is_some(), goals.len(), result.buckets.len(), &cells);
    result.goals = goals
        .into_iter()
        .zip(series)
        .map(|(g, series)| GoalResult { id: g.id, name: g.name, definition: g.definition, series })
        .collect();
    Ok(result)
}

fn range_out(common: &Common) -> RangeOut {
    let f = |t: DateTime<Utc>| t.with_timezone(&common.tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    RangeOut { from: f(common.range.from), to: f(common.range.to) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_escaped_like_patterns() {
        let check = |glob: &str, like: &str| assert_eq!(glob_to_like(glob), like, "{glob}");
        check("/blog/*", "/blog/%");
        check("/pricing", "/pricing");
        check("/*/settings", "/%/settings");
        check("/100%_off", "/100\\%\\_off");
        check("/a\\b*", "/a\\\\b%");
        check("/**", "/%%");
    }

    fn field_of(v: Value, require_name: bool) -> Result<Target, String> {
        parse_definition(&v, "goals[0]", require_name).map(|g| g.target).map_err(|e| match e {
            QueryError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        })
    }

    #[test]
    fn definitions_validate_and_name_the_field_at_fault() {
        let check = |v: Value, expected: Result<Target, &str>| {
            assert_eq!(field_of(v.clone(), false), expected.map_err(str::to_owned), "{v}");
        };
        check(json!({"event": "signup"}), Ok(Target::Event("signup".into())));
        check(
            json!({"page_path": "/blog/*"}),
            Ok(Target::PagePath { pattern: "/blog/*".into(), like: "/blog/%".into() }),
        );
        check(
            json!({"event": "signup", "filters": {"field": "event.properties.plan", "op": "eq", "value": "pro"}}),
            Ok(Target::Event("signup".into())),
        );
        check(json!({}), Err("goals[0].event"));
        check(json!({"event": "a", "page_path": "/"}), Err("goals[0].page_path"));
        check(json!({"page_path": "blog/*"}), Err("goals[0].page_path"));
        check(json!({"event": ""}), Err("goals[0].event"));
        check(json!({"event": 5}), Err("goals[0].event"));
        check(json!({"event": "a", "step": 1}), Err("goals[0].step"));
        check(json!({"event": "a", "name": ""}), Err("goals[0].name"));
        check(
            json!({"event": "a", "filters": {"field": "event.nope", "op": "eq", "value": 1}}),
            Err("goals[0].filters.field"),
        );
        check(
            json!({"event": "a", "filters": {"field": "event.path", "op": "like", "value": 1}}),
            Err("goals[0].filters.op"),
        );
        check(json!("signup"), Err("goals[0]"));
        assert_eq!(field_of(json!({"event": "a"}), true), Err("goals[0].name".to_owned()));
    }

    #[test]
    fn definitions_are_stored_normalised_and_inline_goals_named_after_their_target() {
        let g = parse_definition(&json!({"page_path": "/blog/*"}), "", false).unwrap();
        assert_eq!((g.name.as_str(), &g.definition), ("page /blog/*", &json!({"page_path": "/blog/*"})));
        let f = json!({"field": "event.properties.plan", "op": "eq", "value": "pro"});
        let g = parse_definition(&json!({"name": " Pro signup ", "event": "signup", "filters": f}), "", true).unwrap();
        assert_eq!((g.name.as_str(), &g.definition), ("Pro signup", &json!({"event": "signup", "filters": f})));
    }

    #[test]
    fn cells_are_laid_out_per_goal_with_rates_and_totals() {
        let k = |v: &str| SeriesKey { value: Some(v.into()), other: false };
        let other = SeriesKey { value: None, other: true };
        let cells = vec![
            Cell { bucket: Some(1), key: k("de"), uniques: 4, goals: vec![(3, 2), (0, 0)] },
            Cell { bucket: Some(0), key: other.clone(), uniques: 5, goals: vec![(1, 1), (2, 1)] },
            Cell { bucket: None, key: k("de"), uniques: 4, goals: vec![(3, 2), (0, 0)] },
            Cell { bucket: Some(9), key: k("de"), uniques: 1, goals: vec![(1, 1), (1, 1)] },
        ];
        let keys = [k("fr"), k("de"), other];
        let out = assemble(&keys, true, 2, 2, &cells);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0][0].conversions, vec![0, 0]);
        assert_eq!(out[0][0].totals.conversion_rate, 0.0);
        assert_eq!(out[0][1].conversions, vec![0, 3]);
        assert_eq!(out[0][1].converting_persons, vec![0, 2]);
        assert_eq!(out[0][1].unique_persons, vec![0, 4]);
        assert_eq!(out[0][1].conversion_rate, vec![0.0, 0.5]);
        assert_eq!(
            out[0][1].totals,
            Totals { conversions: 3, converting_persons: 2, unique_persons: 4, conversion_rate: 0.5 }
        );
        assert_eq!(out[1][2].conversions, vec![2, 0]);
        assert_eq!(out[1][2].conversion_rate, vec![0.2, 0.0]);
        assert_eq!(out[1][2].breakdown, Some(SeriesKey { value: None, other: true }));
        let plain = assemble(&[SeriesKey { value: None, other: false }], false, 1, 1, &[]);
        assert_eq!(plain[0][0].breakdown, None);
    }
}
