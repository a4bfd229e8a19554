//! The JSON query model shared by every kind of query (date range, timezone, interval, filters,
//! breakdown, comparison, bots), its validation, and the typed errors that name the field at fault.
//!
//! A request body is one JSON object: the common keys ([`COMMON_KEYS`]) are read here, the rest
//! by the kind (trends, funnels, ...) with its own `deny_unknown_fields` struct, through
//! [`parse_query`]. Every error carries the JSON path of the value at fault
//! (`filters.and[1].field`), answered as a 400 `invalid_query` with `details.field`.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::time::{self, Interval, Range, RangeSpec, Relative};
use crate::store::StoreError;

/// Keys of the request object read by [`CommonQuery`]; every other key belongs to the kind.
pub const COMMON_KEYS: &[&str] =
    &["date_range", "timezone", "interval", "filters", "breakdown", "compare", "include_bots"];

/// Most values a breakdown may keep apart (the rest are summed up as "other").
pub const MAX_BREAKDOWN_LIMIT: u32 = 100;

/// Default number of breakdown values.
pub const DEFAULT_BREAKDOWN_LIMIT: u32 = 10;

/// Longest property key accepted (as the protocol's own limit).
pub const MAX_PROPERTY_KEY_LEN: usize = protocol::limits::MAX_PROPERTY_KEY_LEN;

/// Most conditions in one filter tree, and how deep it may nest.
pub const MAX_FILTER_CONDITIONS: usize = 64;
/// See [`MAX_FILTER_CONDITIONS`].
pub const MAX_FILTER_DEPTH: usize = 6;

/// Longest string value in a filter (a regex included).
pub const MAX_FILTER_VALUE_LEN: usize = 1024;

/// Errors of a query: a bad request (400 naming the field), or a failure while running it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is invalid; `field` is the JSON path of the value at fault (empty for the body).
    #[error("{field}: {message}")]
    Invalid {
        /// JSON path, e.g. `filters.and[1].field`.
        field: String,
        /// What is wrong, lowercase.
        message: String,
    },
    /// The query ran longer than the statement timeout.
    #[error("the query took too long")]
    Timeout,
    /// The answer would be larger than the result size limit.
    #[error("the result is larger than {0} rows")]
    TooLarge(usize),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueryError {
    /// An invalid request at `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        QueryError::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        // 57014: canceled by statement_timeout.
        if e.code().is_some_and(|c| c.code() == "57014") {
            QueryError::Timeout
        } else {
            QueryError::Store(StoreError::Db(e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        QueryError::Store(StoreError::Pool(e))
    }
}

/// The common part of every query, as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonQuery {
    /// `"last_7_days"` or `{"from": "2026-03-01", "to": "2026-03-31"}` (dates inclusive) or
    /// `{"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T12:00:00Z"}` (instants, `to` exclusive).
    pub date_range: Value,
    /// IANA zone; the project's when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Bucket width; `day` when absent.
    #[serde(default)]
    pub interval: Option<Interval>,
    /// Filter tree: `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` or a condition
    /// `{"field", "op", "value"}`.
    #[serde(default)]
    pub filters: Option<Value>,
    /// Split every series by the values of one field.
    #[serde(default)]
    pub breakdown: Option<BreakdownQuery>,
    /// Also answer the same query for an earlier period.
    #[serde(default)]
    pub compare: Option<Compare>,
    /// Count events flagged as bots (left out by default).
    #[serde(default)]
    pub include_bots: bool,
}

/// `breakdown` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakdownQuery {
    /// Any filterable field.
    pub field: String,
    /// Top values kept apart; the rest are one "other" group.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Which earlier period to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The period of the same length just before (calendar days for ranges of whole days).
    PreviousPeriod,
}

/// The type of a column, which decides the operators it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Text.
    Text,
    /// A number (integer or float column).
    Number,
    /// A boolean.
    Bool,
}

/// Event columns a query may address as `event.<name>`: (name, SQL column, type). The SQL
/// column is always taken from this table, never from the request.
pub const EVENT_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("name", "name", ColumnType::Text),
    ("type", "event_type", ColumnType::Text),
    ("distinct_id", "distinct_id", ColumnType::Text),
    ("session_id", "session_id", ColumnType::Text),
    ("url", "url", ColumnType::Text),
    ("path", "path", ColumnType::Text),
    ("title", "title", ColumnType::Text),
    ("host", "host", ColumnType::Text),
    ("referrer", "referrer", ColumnType::Text),
    ("referrer_domain", "referrer_domain", ColumnType::Text),
    ("channel", "channel", ColumnType::Text),
    ("utm_source", "utm_source", ColumnType::Text),
    ("utm_medium", "utm_medium", ColumnType::Text),
    ("utm_campaign", "utm_campaign", ColumnType::Text),
    ("utm_term", "utm_term", ColumnType::Text),
    ("utm_content", "utm_content", ColumnType::Text),
    ("country", "country", ColumnType::Text),
    ("region", "region", ColumnType::Text),
    ("city", "city", ColumnType::Text),
    ("continent", "continent", ColumnType::Text),
    ("browser", "browser", ColumnType::Text),
    ("os", "os", ColumnType::Text),
    ("device_type", "device_type", ColumnType::Text),
    ("is_bot", "is_bot", ColumnType::Bool),
];

/// Session columns a query may address as `session.<name>`, as [`EVENT_COLUMNS`].
pub const SESSION_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("entry_path", "entry_path", ColumnType::Text),
    ("exit_path", "exit_path", ColumnType::Text),
    ("referrer", "referrer", ColumnType::Text),
    ("referrer_domain", "referrer_domain", ColumnType::Text),
    ("channel", "channel", ColumnType::Text),
    ("utm_source", "utm_source", ColumnType::Text),
    ("utm_medium", "utm_medium", ColumnType::Text),
    ("utm_campaign", "utm_campaign", ColumnType::Text),
    ("utm_term", "utm_term", ColumnType::Text),
    ("utm_content", "utm_content", ColumnType::Text),
    ("country", "country", ColumnType::Text),
    ("browser", "browser", ColumnType::Text),
    ("os", "os", ColumnType::Text),
    ("device_type", "device_type", ColumnType::Text),
    ("duration_secs", "duration_secs", ColumnType::Number),
    ("pageviews", "pageviews", ColumnType::Number),
    ("events", "events", ColumnType::Number),
    ("is_bounce", "is_bounce", ColumnType::Bool),
];

/// A property key that passed validation: 1 to [`MAX_PROPERTY_KEY_LEN`] characters of
/// `A-Z a-z 0-9 _ - $ . :` and space. Keys are always bound as parameters; the charset keeps
/// them readable in URLs and logs and refuses anything that looks like an injection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropertyKey(String);

impl PropertyKey {
    /// Validates a key.
    pub fn parse(s: &str) -> Result<PropertyKey, String> {
        if s.is_empty() {
            return Err("property key is empty".into());
        }
        if s.len() > MAX_PROPERTY_KEY_LEN {
            return Err(format!("property key is longer than {MAX_PROPERTY_KEY_LEN} bytes"));
        }
        if let Some(c) =
            s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | '.' | ':' | ' ')))
        {
            return Err(format!("property key contains {c:?}; allowed are letters, digits and _ - $ . : space"));
        }
        Ok(PropertyKey(s.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A field a filter, breakdown or metric can address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A typed column of `events`: (SQL column, type).
    Event(&'static str, ColumnType),
    /// `events.properties -> key`.
    EventProperty(PropertyKey),
    /// `persons.properties -> key` of the event's person.
    PersonProperty(PropertyKey),
    /// A column of the event's session (`sessions`): (SQL column, type).
    Session(&'static str, ColumnType),
    /// `person.cohort`: the saved cohorts the event's person is a member of (`cohort_members`).
    /// A filter takes `eq` / `neq` and a cohort id; a breakdown gives one group per cohort.
    Cohort,
}

impl Field {
    /// Parses `event.name`, `event.properties.plan`, `person.properties.email`, `session.channel`.
    pub fn parse(s: &str) -> Result<Field, String> {
        let column = |table: &[(&str, &'static str, ColumnType)], name: &str, scope: &str| {
            table.iter().find(|(n, _, _)| *n == name).map(|(_, col, ty)| (*col, *ty)).ok_or_else(|| {
                let known: Vec<&str> = table.iter().map(|(n, _, _)| *n).collect();
                format!("unknown field {s:?}; {scope} fields are {}", known.join(", "))
            })
        };
        if let Some(key) = s.strip_prefix("event.properties.") {
            return PropertyKey::parse(key).map(Field::EventProperty);
        }
        if let Some(key) = s.strip_prefix("person.properties.") {
            return PropertyKey::parse(key).map(Field::PersonProperty);
        }
        if let Some(name) = s.strip_prefix("event.") {
            return column(EVENT_COLUMNS, name, "event").map(|(c, t)| Field::Event(c, t));
        }
        if let Some(name) = s.strip_prefix("session.") {
            return column(SESSION_COLUMNS, name, "session").map(|(c, t)| Field::Session(c, t));
        }
        if s == "person.cohort" {
            return Ok(Field::Cohort);
        }
        Err(format!(
            "unknown field {s:?}; fields start with event., event.properties., person.properties. or session., \
             or are person.cohort"
        ))
    }

    /// The type of the value: properties are read as text (numbers compare as numbers with gt/lt).
    pub fn column_type(&self) -> ColumnType {
        match self {
            Field::Event(_, t) | Field::Session(_, t) => *t,
            Field::EventProperty(_) | Field::PersonProperty(_) => ColumnType::Text,
            // A cohort id.
            Field::Cohort => ColumnType::Number,
        }
    }

    /// True for a property (JSON) field.
    pub fn is_property(&self) -> bool {
        matches!(self, Field::EventProperty(_) | Field::PersonProperty(_))
    }

    /// True for a `session.*` field.
    pub fn is_session(&self) -> bool {
        matches!(self, Field::Session(..))
    }
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (text form), or equal to one of a list.
    Eq,
    /// Not equal (or unset), or none of a list.
    Neq,
    /// Contains the substring (case-sensitive).
    Contains,
    /// Does not contain the substring (or unset).
    NotContains,
    /// Matches the POSIX regular expression.
    Regex,
    /// Greater than a number.
    Gt,
    /// Less than a number.
    Lt,
    /// Present and not null.
    IsSet,
    /// Absent or null.
    IsNotSet,
}

impl Op {
    const NAMES: &'static str = "eq, neq, contains, not_contains, regex, gt, lt, is_set, is_not_set";

    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "contains" => Op::Contains,
            "not_contains" => Op::NotContains,
            "regex" => Op::Regex,
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "is_set" => Op::IsSet,
            "is_not_set" => Op::IsNotSet,
            _ => return None,
        })
    }
}

/// The value a condition compares with, checked against its operator and field.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `is_set` / `is_not_set`.
    None,
    /// Text (`eq`, `neq`, `contains`, `not_contains`, `regex`); numbers and booleans sent for
    /// `eq`/`neq` on a text field are compared in their JSON text form (`5`, `true`).
    Text(String),
    /// Any of (`eq`) or none of (`neq`) these texts.
    TextList(Vec<String>),
    /// A number (`gt`, `lt`, and `eq`/`neq` on a number column).
    Number(f64),
    /// A boolean (`eq`/`neq` on a boolean column).
    Bool(bool),
}

/// One condition: `{"field", "op", "value"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The field.
    pub field: Field,
    /// The operator.
    pub op: Op,
    /// The checked value.
    pub value: Operand,
    /// JSON path of the condition, for errors found later (a field a kind cannot use).
    pub path: String,
}

/// A validated filter tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every child holds.
    And(Vec<Filter>),
    /// At least one child holds.
    Or(Vec<Filter>),
    /// The child does not hold.
    Not(Box<Filter>),
    /// A condition.
    Leaf(Condition),
}

impl Filter {
    /// Every condition of the tree, depth first.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut out = Vec::new();
        fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a Condition>) {
            match f {
                Filter::And(c) | Filter::Or(c) => c.iter().for_each(|x| walk(x, out)),
                Filter::Not(x) => walk(x, out),
                Filter::Leaf(c) => out.push(c),
            }
        }
        walk(self, &mut out);
        out
    }
}

/// Parses and validates a filter tree; `path` is where it sits in the request (`filters`).
pub fn parse_filter(v: &Value, path: &str) -> Result<Filter, QueryError> {
    let mut count = 0;
    parse_node(v, path, 0, &mut count)
}

fn parse_node(v: &Value, path: &str, depth: usize, count: &mut usize) -> Result<Filter, QueryError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(QueryError::invalid(path, format!("filters nest deeper than {MAX_FILTER_DEPTH} levels")));
    }
    let obj = v.as_object().ok_or_else(|| {
        QueryError::invalid(
            path,
            "a filter is an object: {\"and\": [...]}, {\"or\": [...]}, {\"not\": {...}} or a condition",
        )
    })?;
    for group in ["and", "or"] {
        if let Some(children) = obj.get(group) {
            let gpath = format!("{path}.{group}");
            if let Some(k) = obj.keys().find(|k| *k != group) {
                return Err(QueryError::invalid(
                    format!("{path}.{k}"),
                    format!("unknown field {k:?} next to {group:?}"),
                ));
            }
            let list = children
                .as_array()
                .ok_or_else(|| QueryError::invalid(&gpath, format!("{group} takes a list of filters")))?;
            if list.is_empty() {
                return Err(QueryError::invalid(&gpath, format!("{group} takes at least one filter")));
            }
            let parsed = list
                .iter()
                .enumerate()
                .map(|(i, c)| parse_node(c, &format!("{gpath}[{i}]"), depth + 1, count))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if group == "and" { Filter::And(parsed) } else { Filter::Or(parsed) });
        }
    }
    if let Some(child) = obj.get("not") {
        if let Some(k) = obj.keys().find(|k| *k != "not") {
            return Err(QueryError::invalid(format!("{path}.{k}"), format!("unknown field {k:?} next to \"not\"")));
        }
        return Ok(Filter::Not(Box::new(parse_node(child, &format!("{path}.not"), depth + 1, count)?)));
    }
    *count += 1;
    if *count > MAX_FILTER_CONDITIONS {
        return Err(QueryError::invalid(path, format!("more than {MAX_FILTER_CONDITIONS} conditions")));
    }
    parse_condition(obj, path).map(Filter::Leaf)
}

fn parse_condition(obj: &Map<String, Value>, path: &str) -> Result<Condition, QueryError> {
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "field" | "op" | "value")) {
        return Err(QueryError::invalid(
            format!("{path}.{k}"),
            format!("unknown field {k:?}; a condition has field, op and value"),
        ));
    }
    let fpath = format!("{path}.field");
    let field = match obj.get("field") {
        Some(Value::String(s)) => Field::parse(s).map_err(|m| QueryError::invalid(&fpath, m))?,
        Some(_) => return Err(QueryError::invalid(&fpath, "field must be a string such as \"event.name\"")),
        None => return Err(QueryError::invalid(&fpath, "field is required")),
    };
    let opath = format!("{path}.op");
    let op = match obj.get("op") {
        Some(Value::String(s)) => Op::parse(s)
            .ok_or_else(|| QueryError::invalid(&opath, format!("unknown op {s:?}; ops are {}", Op::NAMES)))?,
        Some(_) => return Err(QueryError::invalid(&opath, format!("op must be one of {}", Op::NAMES))),
        None => return Err(QueryError::invalid(&opath, "op is required")),
    };
    let vpath = format!("{path}.value");
    if field == Field::Cohort {
        // Membership is a yes/no per cohort: only eq/neq with one cohort id make sense.
        if !matches!(op, Op::Eq | Op::Neq) {
            return Err(QueryError::invalid(&opath, "person.cohort takes eq or neq"));
        }
        let id = obj.get("value").and_then(Value::as_i64).filter(|id| *id > 0);
        let id =
            id.ok_or_else(|| QueryError::invalid(&vpath, "person.cohort needs a cohort id (a positive integer)"))?;
        // Exact as f64 far beyond any identity value a cohort will get.
        return Ok(Condition { field, op, value: Operand::Number(id as f64), path: path.to_owned() });
    }
    let value = operand(&field, op, obj.get("value"), &vpath)?;
    Ok(Condition { field, op, value, path: path.to_owned() })
}

fn text_of(v: &Value, path: &str) -> Result<String, QueryError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err(QueryError::invalid(path, "value must be a string, a number or a boolean")),
    };
    if s.len() > MAX_FILTER_VALUE_LEN {
        return Err(QueryError::invalid(path, format!("value is longer than {MAX_FILTER_VALUE_LEN} bytes")));
    }
    Ok(s)
}

fn operand(field: &Field, op: Op, v: Option<&Value>, path: &str) -> Result<Operand, QueryError> {
    let ty = field.column_type();
    let need = |what: &str| QueryError::invalid(path, format!("{op:?} needs {what}").to_lowercase());
    match op {
        Op::IsSet | Op::IsNotSet => match v {
            None | Some(Value::Null) => Ok(Operand::None),
            Some(_) => Err(QueryError::invalid(path, "is_set and is_not_set take no value")),
        },
        Op::Gt | Op::Lt => {
            if ty != ColumnType::Number && !field.is_property() {
                return Err(QueryError::invalid(path, "gt and lt need a number column or a property"));
            }
            v.and_then(Value::as_f64).map(Operand::Number).ok_or_else(|| need("a number value"))
        }
        Op::Contains | Op::NotContains | Op::Regex => {
            if ty != ColumnType::Text {
                return Err(QueryError::invalid(path, "contains, not_contains and regex need a text field"));
            }
            let s = match v {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(need("a non-empty string value")),
            };
            if s.len() > MAX_FILTER_VALUE_LEN {
                return Err(QueryError::invalid(path, format!("value is longer than {MAX_FILTER_VALUE_LEN} bytes")));
            }
            if op == Op::Regex {
                // PostgreSQL's regex dialect differs in details; this check refuses what is
                // broken in both, and PostgreSQL's own error is mapped to a 400 as well.
                regex::Regex::new(&s)
                    .map_err(|_| QueryError::invalid(path, "value is not a valid regular expression"))?;
            }
            Ok(Operand::Text(s))
        }
        Op::Eq | Op::Neq => match (ty, v) {
            (_, None | Some(Value::Null)) => Err(need("a value (use is_set / is_not_set for presence)")),
            (ColumnType::Number, Some(x)) => x.as_f64().map(Operand::Number).ok_or_else(|| need("a number value")),
            (ColumnType::Bool, Some(x)) => x.as_bool().map(Operand::Bool).ok_or_else(|| need("a boolean value")),
            (ColumnType::Text, Some(Value::Array(items))) => {
                if items.is_empty() || items.len() > 100 {
                    return Err(QueryError::invalid(path, "a list of values has 1 to 100 items"));
                }
                let list = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| text_of(x, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Operand::TextList(list))
            }
            (ColumnType::Text, Some(x)) => text_of(x, path).map(Operand::Text),
        },
    }
}

/// A validated breakdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// The field whose values split the series.
    pub field: Field,
    /// Top values kept apart.
    pub limit: u32,
}

/// The validated common part of a query, resolved against `now` and the zone.
#[derive(Debug, Clone)]
pub struct Common {
    /// The zone of the buckets.
    pub tz: Tz,
    /// The zone's name.
    pub timezone: String,
    /// The range asked for.
    pub range: Range,
    /// The comparison period, when asked for.
    pub previous: Option<Range>,
    /// Bucket width.
    pub interval: Interval,
    /// The filter tree, if any.
    pub filter: Option<Filter>,
    /// The breakdown, if any.
    pub breakdown: Option<Breakdown>,
    /// Count bot events too.
    pub include_bots: bool,
}

impl Common {
    /// The buckets of `range` at this query's interval and zone.
    pub fn buckets(&self, range: &Range) -> Result<Vec<time::Bucket>, QueryError> {
        time::buckets(range, self.interval, &self.tz).map_err(|e| QueryError::invalid("interval", e.to_string()))
    }
}

/// Parses a zone name.
pub fn parse_tz(name: &str, path: &str) -> Result<Tz, QueryError> {
    name.parse::<Tz>().map_err(|_| {
        QueryError::invalid(path, format!("unknown timezone {name:?}; use an IANA name such as Europe/Berlin"))
    })
}

fn parse_date_range(v: &Value) -> Result<RangeSpec, QueryError> {
    const P: &str = "date_range";
    match v {
        Value::String(s) => {
            serde_json::from_value::<Relative>(Value::String(s.clone())).map(RangeSpec::Relative).map_err(|_| {
                QueryError::invalid(P, format!("unknown relative range {s:?}; use one of {}", Relative::NAMES))
            })
        }
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "from" | "to")) {
                return Err(QueryError::invalid(
                    format!("{P}.{k}"),
                    format!("unknown field {k:?}; a range has from and to"),
                ));
            }
            let get = |k: &str| -> Result<&str, QueryError> {
                o.get(k).and_then(Value::as_str).ok_or_else(|| {
                    QueryError::invalid(format!("{P}.{k}"), format!("{k} is required, a date or an RFC 3339 time"))
                })
            };
            let (from, to) = (get("from")?, get("to")?);
            let date = |s: &str| s.parse::<NaiveDate>().ok();
            let instant = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc));
            match (date(from), date(to), instant(from), instant(to)) {
                (Some(f), Some(t), _, _) => Ok(RangeSpec::Dates { from: f, to: t }),
                (_, _, Some(f), Some(t)) => Ok(RangeSpec::Instants { from: f, to: t }),
                (None, _, None, _) => {
                    Err(QueryError::invalid(format!("{P}.from"), "from is neither a date nor an RFC 3339 time"))
                }
                (_, None, _, None) => {
                    Err(QueryError::invalid(format!("{P}.to"), "to is neither a date nor an RFC 3339 time"))
                }
                _ => Err(QueryError::invalid(format!("{P}.to"), "from and to must both be dates or both be times")),
            }
        }
        _ => Err(QueryError::invalid(P, "date_range is a relative range name or {\"from\", \"to\"}")),
    }
}

/// Turns a serde error from `serde_path_to_error` into [`QueryError::Invalid`] with its path;
/// an unknown or missing key's own name is appended when the path stops at its parent.
fn serde_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> QueryError {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let message = e.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    if let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("missing field `")) {
        if let Some(name) = rest.split('`').next() {
            if path != name && !path.ends_with(&format!(".{name}")) {
                path = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
            }
        }
    }
    let field = match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path,
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    };
    QueryError::invalid(field, message)
}

/// Deserializes `v` as `T`, naming the JSON path of any error.
pub fn from_value<T: DeserializeOwned>(v: Value, prefix: &str) -> Result<T, QueryError> {
    serde_path_to_error::deserialize(v).map_err(|e| serde_error(e, prefix))
}

/// Splits a request body into its common part (validated, resolved against `now` and
/// `project_tz`) and the kind's part `K` (a `deny_unknown_fields` struct: a key neither knows is
/// refused, named by its path).
pub fn parse_query<K: DeserializeOwned>(
    body: Value,
    project_tz: &str,
    now: DateTime<Utc>,
) -> Result<(Common, K), QueryError> {
    let Value::Object(map) = body else {
        return Err(QueryError::invalid("", "the query is a JSON object"));
    };
    let (common, kind): (Map<String, Value>, Map<String, Value>) =
        map.into_iter().partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
    let common: CommonQuery = from_value(Value::Object(common), "")?;
    let kind: K = from_value(Value::Object(kind), "")?;
    Ok((resolve_common(common, project_tz, now)?, kind))
}

/// Validates the common part and resolves its range.
pub fn resolve_common(q: CommonQuery, project_tz: &str, now: DateTime<Utc>) -> Result<Common, QueryError> {
    let (tz, timezone) = match &q.timezone {
        Some(name) => (parse_tz(name, "timezone")?, name.clone()),
        None => (parse_tz(project_tz, "timezone")?, project_tz.to_owned()),
    };
    let spec = parse_date_range(&q.date_range)?;
    let field_of = |e: time::TimeError| match e {
        time::TimeError::Reversed => "date_range.to",
        _ => "date_range",
    };
    let range = time::resolve(spec, now, &tz).map_err(|e| QueryError::invalid(field_of(e.clone()), e.to_string()))?;
    let previous = match q.compare {
        Some(Compare::PreviousPeriod) => {
            Some(time::previous_period(&range, &tz).map_err(|e| QueryError::invalid("compare", e.to_string()))?)
        }
        None => None,
    };
    let filter = q.filters.as_ref().map(|f| parse_filter(f, "filters")).transpose()?;
    let breakdown = match q.breakdown {
        Some(b) => {
            let field = Field::parse(&b.field).map_err(|m| QueryError::invalid("breakdown.field", m))?;
            let limit = b.limit.unwrap_or(DEFAULT_BREAKDOWN_LIMIT);
            if limit == 0 || limit > MAX_BREAKDOWN_LIMIT {
                return Err(QueryError::invalid("breakdown.limit", format!("limit is 1 to {MAX_BREAKDOWN_LIMIT}")));
            }
            Some(Breakdown { field, limit })
        }
        None => None,
    };
    Ok(Common {
        tz,
        timezone,
        range,
        previous,
        interval: q.interval.unwrap_or(Interval::Day),
        filter,
        breakdown,
        include_bots: q.include_bots,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Kind {
        #[serde(default)]
        metrics: Vec<String>,
    }

    fn now() -> DateTime<Utc> {
        "2026-03-30T12:00:00Z".parse().unwrap()
    }

    /// `Ok(())` or the path of the error.
    fn check(body: Value, expected: Result<(), &str>) {
        let got = parse_query::<Kind>(body.clone(), "Europe/Berlin", now()).map(|_| ()).map_err(|e| match e {
            QueryError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        });
        assert_eq!(got, expected.map_err(str::to_owned), "{body}");
    }

    #[test]
    fn errors_name_the_field() {
        let leaf = |f: &str, op: &str, v: Value| json!({"field": f, "op": op, "value": v});
        check(json!({"date_range": "last_7_days"}), Ok(()));
        check(json!({"date_range": "last_7_days", "metrics": ["count"]}), Ok(()));
        check(json!({"date_range": "last_7_days", "bogus": 1}), Err("bogus"));
        check(json!({"date_range": "last_8_days"}), Err("date_range"));
        check(json!({"date_range": {"from": "2026-03-02", "to": "2026-03-01"}}), Err("date_range.to"));
        check(json!({"date_range": {"from": "2026-03-01", "to": "2026-03-01T00:00:00Z"}}), Err("date_range.to"));
        check(json!({"date_range": {"from": "march", "to": "2026-03-01"}}), Err("date_range.from"));
        check(json!({"date_range": {"from": "2026-03-01", "to": "2026-03-01", "x": 1}}), Err("date_range.x"));
        check(json!({}), Err("date_range"));
        check(json!({"date_range": "today", "timezone": "Mars/Olympus"}), Err("timezone"));
        check(json!({"date_range": "today", "interval": "fortnight"}), Err("interval"));
        check(json!({"date_range": "today", "include_bots": "yes"}), Err("include_bots"));
        check(json!({"date_range": "today", "compare": "next_period"}), Err("compare"));
        check(json!({"date_range": "today", "breakdown": {"field": "event.nope"}}), Err("breakdown.field"));
        check(json!({"date_range": "today", "breakdown": {"field": "event.path", "limit": 0}}), Err("breakdown.limit"));
        check(json!({"date_range": "today", "breakdown": {"field": "event.path", "top": 3}}), Err("breakdown.top"));
        check(json!({"date_range": "today", "filters": leaf("event.name", "eq", json!("x"))}), Ok(()));
        let and = |items: Vec<Value>| json!({"date_range": "today", "filters": {"and": items}});
        check(
            and(vec![leaf("event.name", "eq", json!("x")), leaf("event.nme", "eq", json!("x"))]),
            Err("filters.and[1].field"),
        );
        check(and(vec![leaf("event.name", "like", json!("x"))]), Err("filters.and[0].op"));
        check(
            and(vec![json!({"or": [leaf("event.properties.a'b", "eq", json!(1))]})]),
            Err("filters.and[0].or[0].field"),
        );
        check(and(vec![leaf("event.properties.plan; DROP TABLE events", "eq", json!(1))]), Err("filters.and[0].field"));
        check(and(vec![leaf("person.properties.email", "contains", json!("@x"))]), Ok(()));
        check(and(vec![leaf("person.cohort", "eq", json!(3))]), Ok(()));
        check(and(vec![leaf("person.cohort", "neq", json!(3))]), Ok(()));
        check(and(vec![leaf("person.cohort", "gt", json!(3))]), Err("filters.and[0].op"));
        check(and(vec![leaf("person.cohort", "eq", json!("3"))]), Err("filters.and[0].value"));
        check(and(vec![leaf("person.cohort", "eq", json!(0))]), Err("filters.and[0].value"));
        check(and(vec![leaf("person.cohorts", "eq", json!(1))]), Err("filters.and[0].field"));
        check(json!({"date_range": "today", "breakdown": {"field": "person.cohort"}}), Ok(()));
        check(and(vec![leaf("session.pageviews", "gt", json!(2))]), Ok(()));
        check(and(vec![leaf("session.pageviews", "gt", json!("2"))]), Err("filters.and[0].value"));
        check(and(vec![leaf("event.path", "gt", json!(2))]), Err("filters.and[0].value"));
        check(and(vec![leaf("event.properties.n", "gt", json!(2.5))]), Ok(()));
        check(and(vec![leaf("event.path", "regex", json!("(unclosed"))]), Err("filters.and[0].value"));
        check(and(vec![leaf("event.path", "is_set", json!(1))]), Err("filters.and[0].value"));
        check(and(vec![json!({"field": "event.path", "op": "is_set"})]), Ok(()));
        check(and(vec![leaf("event.is_bot", "eq", json!("yes"))]), Err("filters.and[0].value"));
        check(and(vec![leaf("event.path", "eq", json!(["/a", {"x": 1}]))]), Err("filters.and[0].value[1]"));
        check(
            and(vec![json!({"field": "event.path", "op": "eq", "value": "/", "extra": 1})]),
            Err("filters.and[0].extra"),
        );
        check(and(vec![]), Err("filters.and"));
        check(json!({"date_range": "today", "filters": {"not": leaf("event.name", "neq", json!("x"))}}), Ok(()));
        check(json!({"date_range": "today", "filters": [1]}), Err("filters"));
    }

    #[test]
    fn property_keys() {
        for ok in ["plan", "$current_url", "utm.source", "a-b_c:d e"] {
            assert!(PropertyKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a'b", "a\"b", "a;b", "a\\b", "a\u{0}b", "é", "a)b", &"k".repeat(201)] {
            assert!(PropertyKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_defaults() {
        let (c, _) = parse_query::<Kind>(json!({"date_range": "yesterday"}), "Europe/Berlin", now()).unwrap();
        assert_eq!(c.timezone, "Europe/Berlin");
        assert_eq!(c.interval, Interval::Day);
        assert_eq!((c.range.to - c.range.from).num_hours(), 23, "29 March 2026 is a DST day in Berlin");
        assert!(!c.include_bots);
        let (_, k) = parse_query::<Kind>(json!({"date_range": "today", "metrics": ["a"]}), "UTC", now()).unwrap();
        assert_eq!(k.metrics, vec!["a"]);
        let (c, _) = parse_query::<Kind>(
            json!({"date_range": "yesterday", "timezone": "UTC", "compare": "previous_period",
                   "breakdown": {"field": "event.properties.plan"}}),
            "Europe/Berlin",
            now(),
        )
        .unwrap();
        assert_eq!(c.range.from, "2026-03-29T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(c.previous.unwrap().from, "2026-03-28T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(
            c.breakdown.unwrap(),
            Breakdown { field: Field::EventProperty(PropertyKey("plan".into())), limit: 10 }
        );
    }
}
