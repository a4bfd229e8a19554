//! Cohort definitions: the JSON rule of a saved cohort, its validation (errors name the field at
//! fault), and its compilation to the one SQL statement that lists the members' person keys.
//!
//! A rule is one of:
//! * `{"distinct_ids": ["a", "b"]}`: a static list; the members are the persons of those ids
//!   (an id no event has sent yet joins at the first refresh after it has);
//! * `{"did_event": {"name": "purchase", "filters": {...}, "at_least": 2, "in_last_days": 30}}`:
//!   persons with at least `at_least` (default 1) non-bot events of that name matching the
//!   filters, timed at or after `now - in_last_days x 24 h`;
//! * `{"person": {"field": "person.properties.plan", "op": "eq", "value": "pro"}}`: persons whose
//!   property matches (the operators of query filters);
//! * `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`.
//!
//! Members are person keys as the queries compute them ([`super::filter::person_key_sql`]). The
//! universe a `not` is taken from is the project's persons plus every key a positive rule found.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::filter::{Scope, SqlBuilder};
use super::model::{parse_filter, Condition, Field, Filter, QueryError};

/// Most distinct ids of a static list.
pub const MAX_STATIC_IDS: usize = 10_000;
/// Most leaves (lists, event and property conditions) in one rule.
pub const MAX_RULE_LEAVES: usize = 32;
/// How deep a rule may nest.
pub const MAX_RULE_DEPTH: usize = 6;
/// Longest look-back of `did_event`, days.
pub const MAX_DAYS: u32 = 3650;
/// Longest cohort name.
pub const MAX_NAME_LEN: usize = 200;

/// A validated cohort rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Every child holds.
    And(Vec<Rule>),
    /// At least one child holds.
    Or(Vec<Rule>),
    /// The child does not hold.
    Not(Box<Rule>),
    /// The persons of these distinct ids.
    DistinctIds(Vec<String>),
    /// At least `at_least` events named `name` (matching `filter`) in the last `days` days.
    DidEvent {
        /// Event name.
        name: String,
        /// Conditions on the events.
        filter: Option<Filter>,
        /// Minimum count, at least 1.
        at_least: u32,
        /// Look-back, days of 24 hours.
        days: u32,
    },
    /// A condition on a person property.
    Person(Condition),
}

/// Static (a list of ids) or behavioural (anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A list of distinct ids.
    Static,
    /// A rule over events and properties.
    Behavioural,
}

impl Kind {
    /// The stored and answered name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Static => "static",
            Kind::Behavioural => "behavioural",
        }
    }
}

impl Rule {
    /// A bare list of ids is static; every other rule is behavioural.
    pub fn kind(&self) -> Kind {
        match self {
            Rule::DistinctIds(_) => Kind::Static,
            _ => Kind::Behavioural,
        }
    }
}

/// Validates a cohort's name.
pub fn parse_name(v: Option<&Value>) -> Result<String, QueryError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME_LEN => Ok(s.clone()),
        Some(Value::String(_)) => Err(QueryError::invalid("name", format!("name is 1 to {MAX_NAME_LEN} bytes"))),
        _ => Err(QueryError::invalid("name", "name is required, a string")),
    }
}

/// Parses and validates a rule found at `path` (`definition`).
pub fn parse_rule(v: &Value, path: &str) -> Result<Rule, QueryError> {
    let mut leaves = 0;
    parse_node(v, path, 0, &mut leaves)
}

const SHAPES: &str = "a rule is {\"and\": [...]}, {\"or\": [...]}, {\"not\": {...}}, {\"distinct_ids\": [...]}, \
     {\"did_event\": {...}} or {\"person\": {...}}";

fn parse_node(v: &Value, path: &str, depth: usize, leaves: &mut usize) -> Result<Rule, QueryError> {
    if depth > MAX_RULE_DEPTH {
        return Err(QueryError::invalid(path, format!("rules nest deeper than {MAX_RULE_DEPTH} levels")));
    }
    let obj = v.as_object().ok_or_else(|| QueryError::invalid(path, SHAPES))?;
    let mut keys = obj.keys();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(QueryError::invalid(path, format!("{SHAPES}, with exactly one key")));
    };
    let body = &obj[key];
    let sub = format!("{path}.{key}");
    if matches!(key.as_str(), "distinct_ids" | "did_event" | "person") {
        *leaves += 1;
        if *leaves > MAX_RULE_LEAVES {
            return Err(QueryError::invalid(&sub, format!("more than {MAX_RULE_LEAVES} conditions")));
        }
    }
    match key.as_str() {
        "and" | "or" => {
            let list =
                body.as_array().ok_or_else(|| QueryError::invalid(&sub, format!("{key} takes a list of rules")))?;
            if list.is_empty() {
                return Err(QueryError::invalid(&sub, format!("{key} takes at least one rule")));
            }
            let items = list
                .iter()
                .enumerate()
                .map(|(i, x)| parse_node(x, &format!("{sub}[{i}]"), depth + 1, leaves))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "and" { Rule::And(items) } else { Rule::Or(items) })
        }
        "not" => Ok(Rule::Not(Box::new(parse_node(body, &sub, depth + 1, leaves)?))),
        "distinct_ids" => parse_ids(body, &sub).map(Rule::DistinctIds),
        "did_event" => parse_did_event(body, &sub),
        "person" => {
            let Filter::Leaf(c) = parse_filter(body, &sub)? else {
                return Err(QueryError::invalid(&sub, "person takes one condition {\"field\", \"op\", \"value\"}"));
            };
            if !matches!(c.field, Field::PersonProperty(_)) {
                return Err(QueryError::invalid(
                    format!("{sub}.field"),
                    "person takes a person.properties.<key> field",
                ));
            }
            Ok(Rule::Person(c))
        }
        other => Err(QueryError::invalid(&sub, format!("unknown rule {other:?}; {SHAPES}"))),
    }
}

fn parse_ids(v: &Value, path: &str) -> Result<Vec<String>, QueryError> {
    let list = v.as_array().ok_or_else(|| QueryError::invalid(path, "distinct_ids is a list of strings"))?;
    if list.is_empty() || list.len() > MAX_STATIC_IDS {
        return Err(QueryError::invalid(path, format!("distinct_ids has 1 to {MAX_STATIC_IDS} ids")));
    }
    let mut ids = list
        .iter()
        .enumerate()
        .map(|(i, x)| match x.as_str() {
            Some(s) if !s.is_empty() && s.len() <= protocol::limits::MAX_ID_LEN => Ok(s.to_owned()),
            _ => Err(QueryError::invalid(
                format!("{path}[{i}]"),
                format!("a distinct id is a string of 1 to {} bytes", protocol::limits::MAX_ID_LEN),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

fn parse_did_event(v: &Value, path: &str) -> Result<Rule, QueryError> {
    let obj = v.as_object().ok_or_else(|| {
        QueryError::invalid(path, "did_event is {\"name\", \"filters\", \"at_least\", \"in_last_days\"}")
    })?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "name" | "filters" | "at_least" | "in_last_days")) {
        return Err(QueryError::invalid(
            format!("{path}.{k}"),
            format!("unknown field {k:?}; did_event has name, filters, at_least and in_last_days"),
        ));
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= protocol::limits::MAX_NAME_LEN => s.clone(),
        _ => return Err(QueryError::invalid(format!("{path}.name"), "name is required, a non-empty event name")),
    };
    let filter = match obj.get("filters") {
        None | Some(Value::Null) => None,
        Some(f) => {
            let fpath = format!("{path}.filters");
            let f = parse_filter(f, &fpath)?;
            // A cohort defined by cohorts would need an order of refresh; kept out.
            if let Some(c) = f.conditions().into_iter().find(|c| c.field == Field::Cohort) {
                return Err(QueryError::invalid(format!("{}.field", c.path), "a cohort rule cannot use person.cohort"));
            }
            Some(f)
        }
    };
    let number = |k: &str, default: Option<u32>, max: u32| -> Result<u32, QueryError> {
        let p = format!("{path}.{k}");
        match (obj.get(k), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(QueryError::invalid(&p, format!("{k} is required, 1 to {max}"))),
            (Some(x), _) => x
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| QueryError::invalid(&p, format!("{k} is an integer from 1 to {max}"))),
        }
    };
    let at_least = number("at_least", Some(1), 1_000_000)?;
    let days = number("in_last_days", None, MAX_DAYS)?;
    Ok(Rule::DidEvent { name, filter, at_least, days })
}

/// Compiles a rule into `SELECT k FROM ...`: the distinct person keys of the members of a cohort
/// of `project_id` at `now`.
pub fn membership_sql(rule: &Rule, project_id: i64, now: DateTime<Utc>) -> Result<(String, SqlBuilder), QueryError> {
    let mut c = Compiler { b: SqlBuilder::new(), ctes: Vec::new(), pid: String::new(), now };
    c.pid = format!("{}::bigint", c.b.bind(project_id));
    let cond = c.cond(rule)?;
    let pid = &c.pid;
    let mut with: Vec<String> = c.ctes.iter().enumerate().map(|(i, sql)| format!("c{i} AS ({sql})")).collect();
    let mut universe = vec![format!("SELECT 'p:' || person_id::text AS k FROM persons WHERE project_id = {pid}")];
    universe.extend((0..c.ctes.len()).map(|i| format!("SELECT k FROM c{i}")));
    with.push(format!("u AS ({})", universe.join(" UNION ")));
    let sql = format!(
        "WITH {with} SELECT u.k FROM u LEFT JOIN persons p ON p.project_id = {pid} \
         AND p.person_id = (CASE WHEN u.k LIKE 'p:%' THEN substr(u.k, 3)::uuid END) WHERE {cond}",
        with = with.join(", "),
    );
    Ok((sql, c.b))
}

struct Compiler {
    b: SqlBuilder,
    ctes: Vec<String>,
    pid: String,
    now: DateTime<Utc>,
}

impl Compiler {
    /// Adds a set of keys as a CTE; answers the membership test of `u.k` in it.
    fn set(&mut self, sql: String) -> String {
        self.ctes.push(sql);
        format!("(u.k IN (SELECT k FROM c{}))", self.ctes.len() - 1)
    }

    fn cond(&mut self, rule: &Rule) -> Result<String, QueryError> {
        Ok(match rule {
            Rule::And(items) | Rule::Or(items) => {
                let sep = if matches!(rule, Rule::And(_)) { " AND " } else { " OR " };
                let parts = items.iter().map(|x| self.cond(x)).collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(sep))
            }
            // A property condition on a missing value is NULL; NOT must treat it as false first.
            Rule::Not(x) => format!("(NOT coalesce({}, false))", self.cond(x)?),
            Rule::DistinctIds(ids) => {
                // Ids no event has named yet have no person; they join at a refresh after they do.
                let list = self.b.bind(ids.clone());
                let pid = self.pid.clone();
                self.set(format!(
                    "SELECT 'p:' || pd.person_id::text AS k FROM unnest({list}::text[]) AS d(distinct_id) \
                     JOIN person_distinct_ids pd ON pd.project_id = {pid} AND pd.distinct_id = d.distinct_id"
                ))
            }
            Rule::DidEvent { name, filter, at_least, days } => {
                // Each CTE has its own FROM: the joins are those its own filter needs.
                let (di, pe, se, co) = (self.b.distinct_ids, self.b.persons, self.b.sessions, self.b.cohorts);
                self.b.distinct_ids = false;
                self.b.persons = false;
                self.b.sessions = false;
                self.b.cohorts = false;
                let key = self.b.person_key(Scope::Events);
                let since = self.now - chrono::Duration::days(i64::from(*days));
                let mut conds = vec![
                    format!("e.project_id = {}", self.pid),
                    format!("e.name = {}::text", self.b.bind(name.clone())),
                    format!("e.\"timestamp\" >= {}::timestamptz", self.b.bind(since)),
                    "NOT e.is_bot".to_owned(),
                ];
                if let Some(f) = filter {
                    conds.push(self.b.filter_sql(f, Scope::Events)?);
                }
                let joins = self.b.joins(Scope::Events);
                let n = self.b.bind(i64::from(*at_least));
                (self.b.distinct_ids, self.b.persons, self.b.sessions, self.b.cohorts) = (di, pe, se, co);
                self.set(format!(
                    "SELECT {key} AS k FROM events e{joins} WHERE {} GROUP BY 1 HAVING count(*) >= {n}::bigint",
                    conds.join(" AND ")
                ))
            }
            // `p` is the universe row's person (joined in the outer statement).
            Rule::Person(c) => self.b.filter_sql(&Filter::Leaf(c.clone()), Scope::Events)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `Ok(kind)` or the path of the error.
    fn check(v: Value, expected: Result<Kind, &str>) {
        let got = parse_rule(&v, "definition").map(|r| r.kind()).map_err(|e| match e {
            QueryError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        });
        assert_eq!(got, expected.map_err(str::to_owned), "{v}");
    }

    #[test]
    fn rules_validate_and_name_the_field() {
        let did = |x: Value| json!({"did_event": x});
        let prop = json!({"person": {"field": "person.properties.plan", "op": "eq", "value": "pro"}});
        check(json!({"distinct_ids": ["a", "b"]}), Ok(Kind::Static));
        check(json!({"distinct_ids": []}), Err("definition.distinct_ids"));
        check(json!({"distinct_ids": ["a", 3]}), Err("definition.distinct_ids[1]"));
        check(json!({"distinct_ids": ["a", ""]}), Err("definition.distinct_ids[1]"));
        check(did(json!({"name": "buy", "in_last_days": 30})), Ok(Kind::Behavioural));
        check(did(json!({"name": "buy", "at_least": 3, "in_last_days": 30})), Ok(Kind::Behavioural));
        check(did(json!({"name": "buy"})), Err("definition.did_event.in_last_days"));
        check(did(json!({"name": "buy", "in_last_days": 0})), Err("definition.did_event.in_last_days"));
        check(did(json!({"name": "buy", "in_last_days": 5000})), Err("definition.did_event.in_last_days"));
        check(did(json!({"name": "buy", "in_last_days": 5, "at_least": 0})), Err("definition.did_event.at_least"));
        check(did(json!({"name": "buy", "in_last_days": 5, "at_least": -1})), Err("definition.did_event.at_least"));
        check(did(json!({"name": "", "in_last_days": 5})), Err("definition.did_event.name"));
        check(did(json!({"in_last_days": 5})), Err("definition.did_event.name"));
        check(did(json!({"name": "b", "in_last_days": 5, "times": 2})), Err("definition.did_event.times"));
        check(
            did(json!({"name": "b", "in_last_days": 5, "filters": {"field": "event.nope", "op": "eq", "value": 1}})),
            Err("definition.did_event.filters.field"),
        );
        check(
            did(
                json!({"name": "b", "in_last_days": 5, "filters": {"and": [{"field": "person.cohort", "op": "eq", "value": 1}]}}),
            ),
            Err("definition.did_event.filters.and[0].field"),
        );
        check(prop.clone(), Ok(Kind::Behavioural));
        check(json!({"person": {"field": "event.name", "op": "eq", "value": "x"}}), Err("definition.person.field"));
        check(
            json!({"person": {"field": "person.properties.plan", "op": "like", "value": "x"}}),
            Err("definition.person.op"),
        );
        check(json!({"person": {"and": [prop["person"].clone()]}}), Err("definition.person"));
        check(json!({"and": [prop.clone(), {"not": {"distinct_ids": ["a"]}}]}), Ok(Kind::Behavioural));
        check(json!({"or": [prop.clone(), {"nope": 1}]}), Err("definition.or[1].nope"));
        check(json!({"or": []}), Err("definition.or"));
        check(json!({"and": [prop.clone()], "or": [prop.clone()]}), Err("definition"));
        check(json!({}), Err("definition"));
        check(json!([1]), Err("definition"));
        let deep = (0..8).fold(prop.clone(), |acc, _| json!({"not": acc}));
        check(deep, Err("definition.not.not.not.not.not.not.not"));
        let wide = json!({"or": vec![prop.clone(); MAX_RULE_LEAVES + 1]});
        check(wide, Err(&format!("definition.or[{MAX_RULE_LEAVES}].person")));
    }

    #[test]
    fn names() {
        assert_eq!(parse_name(Some(&json!("Buyers"))).unwrap(), "Buyers");
        for bad in [json!(""), json!("  "), json!(3), json!("x".repeat(MAX_NAME_LEN + 1))] {
            assert!(parse_name(Some(&bad)).is_err(), "{bad}");
        }
        assert!(parse_name(None).is_err());
    }

    #[test]
    fn compiles_one_cte_per_set_with_bound_values() {
        let now: DateTime<Utc> = "2026-03-30T12:00:00Z".parse().unwrap();
        let rule = parse_rule(
            &json!({"and": [
                {"did_event": {"name": "buy'; DROP TABLE events; --", "in_last_days": 7, "at_least": 2,
                               "filters": {"field": "person.properties.plan", "op": "eq", "value": "pro"}}},
                {"not": {"distinct_ids": ["a"]}},
                {"person": {"field": "person.properties.country", "op": "is_set"}}
            ]}),
            "definition",
        )
        .unwrap();
        let (sql, b) = membership_sql(&rule, 5, now).unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.starts_with("WITH c0 AS (SELECT coalesce('p:' || pd.person_id::text, 'd:' || e.distinct_id) AS k FROM events e LEFT JOIN person_distinct_ids pd"), "{sql}");
        assert!(sql.contains("c1 AS (SELECT 'p:' || pd.person_id::text AS k FROM unnest($7::text[])"), "{sql}");
        assert!(sql.contains("u AS (SELECT 'p:' || person_id::text AS k FROM persons WHERE project_id = $1::bigint UNION SELECT k FROM c0 UNION SELECT k FROM c1)"), "{sql}");
        assert!(sql.ends_with("WHERE ((u.k IN (SELECT k FROM c0)) AND (NOT coalesce((u.k IN (SELECT k FROM c1)), false)) AND ((p.properties ->> $8::text) IS NOT NULL))"), "{sql}");
        // project, name, since, the filter's key and value, at_least, ... : every value bound.
        assert_eq!(b.params().len(), 8);
    }
}
