//! Filters compiled to SQL: a `WHERE` fragment with numbered bind parameters, the joins it needs,
//! and the guarded read transaction (statement timeout, result size limit) every query runs in.
//!
//! Nothing from the request is ever spliced into SQL: column names come from the static tables
//! of [`super::model`], property keys and values are bound parameters. Table aliases are fixed:
//! `e` events, `s` sessions, `pd` person_distinct_ids, `p` persons, `cmb` cohort_members (the
//! breakdown by cohort).

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::model::{ColumnType, Condition, Field, Filter, Op, Operand, QueryError};

/// How long one query may run: PostgreSQL cancels it after this (`SET LOCAL statement_timeout`).
pub const STATEMENT_TIMEOUT_MS: u32 = 15_000;

/// Most rows one statement of a query may return.
pub const MAX_RESULT_ROWS: usize = 50_000;

/// What the query reads from: each event, or each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `FROM events e`; session and person fields join in.
    Events,
    /// `FROM sessions s`; person fields join in, event fields are refused.
    Sessions,
}

/// Collects SQL bind parameters (numbered `$1`, `$2`, ... in push order) and the joins a
/// statement needs.
#[derive(Default)]
pub struct SqlBuilder {
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// The person mapping (`pd`) is needed (person properties, unique persons).
    pub distinct_ids: bool,
    /// The person row (`p`) is needed (person properties).
    pub persons: bool,
    /// The session row (`s`) is needed from events.
    pub sessions: bool,
    /// The person's cohorts (`cmb`) are joined: a breakdown by `person.cohort`. The join repeats
    /// a row once per cohort of its person (a person in no cohort keeps one row, `NULL`), so each
    /// cohort's group counts exactly its members' rows.
    pub cohorts: bool,
}

impl SqlBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        SqlBuilder::default()
    }

    /// Binds a value; returns its placeholder (`$n`).
    pub fn bind<T: ToSql + Sync + Send + 'static>(&mut self, v: T) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    /// The parameters, for `client.query(sql, &b.params())`.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }

    /// The `LEFT JOIN`s the compiled fragments need, for `FROM events e` or `FROM sessions s`.
    pub fn joins(&self, scope: Scope) -> String {
        let mut out = String::new();
        let from = match scope {
            Scope::Events => "e",
            Scope::Sessions => "s",
        };
        if self.distinct_ids || self.persons {
            out.push_str(&format!(
                " LEFT JOIN person_distinct_ids pd ON pd.project_id = {from}.project_id AND pd.distinct_id = {from}.distinct_id"
            ));
        }
        if self.persons {
            out.push_str(" LEFT JOIN persons p ON p.project_id = pd.project_id AND p.person_id = pd.person_id");
        }
        if self.sessions && scope == Scope::Events {
            out.push_str(" LEFT JOIN sessions s ON s.project_id = e.project_id AND s.session_id = e.session_id");
        }
        if self.cohorts {
            out.push_str(&format!(
                " LEFT JOIN cohort_members cmb ON cmb.project_id = {from}.project_id AND cmb.person_key = {}",
                person_key_sql(from)
            ));
        }
        out
    }

    /// The person an event (or session) counts for: its mapped person, else its distinct id
    /// (prefixed so the two kinds of key never collide).
    pub fn person_key(&mut self, scope: Scope) -> String {
        self.distinct_ids = true;
        let from = match scope {
            Scope::Events => "e",
            Scope::Sessions => "s",
        };
        person_key_sql(from)
    }

    /// The SQL expression of a field as text (or its native type for number/bool columns).
    pub fn field_sql(&mut self, field: &Field, scope: Scope, path: &str) -> Result<String, QueryError> {
        let not_here = || {
            QueryError::invalid(
                path,
                "this query reads sessions; only session.* and person.properties.* fields apply".to_owned(),
            )
        };
        Ok(match field {
            Field::Event(col, _) => match scope {
                Scope::Events => format!("e.{col}"),
                Scope::Sessions => return Err(not_here()),
            },
            Field::EventProperty(k) => match scope {
                Scope::Events => format!("(e.properties ->> {}::text)", self.bind(k.as_str().to_owned())),
                Scope::Sessions => return Err(not_here()),
            },
            Field::PersonProperty(k) => {
                self.distinct_ids = true;
                self.persons = true;
                format!("(p.properties ->> {}::text)", self.bind(k.as_str().to_owned()))
            }
            Field::Session(col, _) => {
                self.sessions = true;
                format!("s.{col}")
            }
            Field::Cohort => {
                self.distinct_ids = true;
                self.cohorts = true;
                "cmb.cohort_id".to_owned()
            }
        })
    }

    /// A field as a number: number columns as they are, properties when they hold a JSON number
    /// (anything else is NULL, so it matches no `gt`/`lt`).
    pub fn number_sql(&mut self, field: &Field, scope: Scope, path: &str) -> Result<String, QueryError> {
        let json = match (field, scope) {
            (Field::EventProperty(k), Scope::Events) => Some(("e", k)),
            (Field::PersonProperty(k), _) => {
                self.distinct_ids = true;
                self.persons = true;
                Some(("p", k))
            }
            _ => None,
        };
        match json {
            Some((alias, k)) => {
                let key = self.bind(k.as_str().to_owned());
                Ok(format!(
                    "(CASE WHEN jsonb_typeof({alias}.properties -> {key}::text) = 'number' \
                     THEN ({alias}.properties ->> {key}::text)::float8 END)"
                ))
            }
            None if field.column_type() == ColumnType::Number => self.field_sql(field, scope, path),
            None => self.field_sql(field, scope, path).map(|_| "NULL::float8".to_owned()),
        }
    }

    /// Compiles a filter tree to a boolean SQL expression.
    pub fn filter_sql(&mut self, f: &Filter, scope: Scope) -> Result<String, QueryError> {
        match f {
            Filter::And(items) | Filter::Or(items) => {
                let sep = if matches!(f, Filter::And(_)) { " AND " } else { " OR " };
                let parts = items.iter().map(|x| self.filter_sql(x, scope)).collect::<Result<Vec<_>, _>>()?;
                Ok(format!("({})", parts.join(sep)))
            }
            // A condition on a missing value is NULL, which AND/OR treat like false; NOT must too.
            Filter::Not(x) => Ok(format!("(NOT coalesce({}, false))", self.filter_sql(x, scope)?)),
            Filter::Leaf(c) => self.condition_sql(c, scope),
        }
    }

    fn condition_sql(&mut self, c: &Condition, scope: Scope) -> Result<String, QueryError> {
        let path = format!("{}.field", c.path);
        if c.field == Field::Cohort {
            return self.cohort_condition_sql(c, scope);
        }
        if matches!(c.op, Op::Gt | Op::Lt) {
            let x = self.number_sql(&c.field, scope, &path)?;
            let Operand::Number(n) = c.value else {
                return Err(QueryError::invalid(&c.path, "gt and lt need a number"));
            };
            let cmp = if c.op == Op::Gt { ">" } else { "<" };
            return Ok(format!("({x} {cmp} {}::float8)", self.bind(n)));
        }
        let x = self.field_sql(&c.field, scope, &path)?;
        let bound = |b: &mut SqlBuilder, v: &Operand| -> String {
            match v {
                Operand::Text(s) => format!("{}::text", b.bind(s.clone())),
                Operand::TextList(l) => format!("{}::text[]", b.bind(l.clone())),
                Operand::Number(n) => format!("{}::float8", b.bind(*n)),
                Operand::Bool(v) => format!("{}::bool", b.bind(*v)),
                Operand::None => "NULL".to_owned(),
            }
        };
        Ok(match (c.op, &c.value) {
            (Op::IsSet, _) => format!("({x} IS NOT NULL)"),
            (Op::IsNotSet, _) => format!("({x} IS NULL)"),
            (Op::Eq, Operand::TextList(_)) => format!("({x} = ANY({}))", bound(self, &c.value)),
            (Op::Neq, Operand::TextList(_)) => format!("({x} IS NULL OR NOT ({x} = ANY({})))", bound(self, &c.value)),
            (Op::Eq, v) => format!("({x} = {})", bound(self, v)),
            (Op::Neq, v) => format!("({x} IS DISTINCT FROM {})", bound(self, v)),
            (Op::Contains, v) => format!("(strpos({x}, {}) > 0)", bound(self, v)),
            (Op::NotContains, v) => format!("(coalesce(strpos({x}, {}), 0) = 0)", bound(self, v)),
            (Op::Regex, v) => format!("({x} ~ {})", bound(self, v)),
            (Op::Gt | Op::Lt, _) => return Err(QueryError::invalid(&c.path, "gt and lt need a number")),
        })
    }

    /// `person.cohort eq|neq <id>`: whether the row's person is a member. The members are matched
    /// on the row's own project, so another project's cohort id matches nobody.
    fn cohort_condition_sql(&mut self, c: &Condition, scope: Scope) -> Result<String, QueryError> {
        let Operand::Number(n) = c.value else {
            return Err(QueryError::invalid(format!("{}.value", c.path), "person.cohort needs a cohort id"));
        };
        // The parser only lets positive integers through, so the conversion is exact.
        let id = n as i64;
        let from = match scope {
            Scope::Events => "e",
            Scope::Sessions => "s",
        };
        let key = self.person_key(scope);
        let exists = format!(
            "EXISTS (SELECT 1 FROM cohort_members cm WHERE cm.project_id = {from}.project_id \
             AND cm.cohort_id = {}::bigint AND cm.person_key = {key})",
            self.bind(id)
        );
        Ok(match c.op {
            Op::Eq => format!("({exists})"),
            Op::Neq => format!("(NOT {exists})"),
            _ => return Err(QueryError::invalid(format!("{}.op", c.path), "person.cohort takes eq or neq")),
        })
    }
}

/// The person key of a row of `from` (`e` or `s`), with `pd` joined: see [`SqlBuilder::person_key`].
pub fn person_key_sql(from: &str) -> String {
    format!("coalesce('p:' || pd.person_id::text, 'd:' || {from}.distinct_id)")
}

/// Starts the read transaction every query runs in: read only, with the statement timeout.
pub async fn begin_read(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, QueryError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        .await?;
    Ok(tx)
}

/// Runs `sql` (which must not end with a `LIMIT`) with the builder's parameters, refusing an
/// answer of more than [`MAX_RESULT_ROWS`] rows.
pub async fn query_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    b: &SqlBuilder,
) -> Result<Vec<Row>, QueryError> {
    let limited = format!("{sql}\nLIMIT {}", MAX_RESULT_ROWS + 1);
    let rows = tx.query(&limited, &b.params()).await.map_err(map_db_error)?;
    if rows.len() > MAX_RESULT_ROWS {
        return Err(QueryError::TooLarge(MAX_RESULT_ROWS));
    }
    Ok(rows)
}

/// A PostgreSQL refusal caused by the request (a regex PostgreSQL cannot compile) is a 400.
fn map_db_error(e: tokio_postgres::Error) -> QueryError {
    match e.code().map(|c| c.code()) {
        // 2201B: invalid regular expression.
        Some("2201B") => QueryError::invalid("filters", "a regex value is not valid for PostgreSQL"),
        _ => QueryError::from(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::model::parse_filter;

    fn check(filter: serde_json::Value, scope: Scope, expected_sql: &str, expected_params: usize, joins: &str) {
        let f = parse_filter(&filter, "filters").unwrap();
        let mut b = SqlBuilder::new();
        let sql = b.filter_sql(&f, scope).unwrap();
        assert_eq!(sql, expected_sql, "{filter}");
        assert_eq!(b.params().len(), expected_params, "{filter}");
        assert_eq!(b.joins(scope), joins, "{filter}");
    }

    const PD: &str =
        " LEFT JOIN person_distinct_ids pd ON pd.project_id = e.project_id AND pd.distinct_id = e.distinct_id";
    const P: &str = " LEFT JOIN persons p ON p.project_id = pd.project_id AND p.person_id = pd.person_id";
    const S: &str = " LEFT JOIN sessions s ON s.project_id = e.project_id AND s.session_id = e.session_id";

    #[test]
    fn compiles_with_bound_parameters() {
        use Scope::*;
        let leaf = |f: &str, op: &str, v: serde_json::Value| json!({"field": f, "op": op, "value": v});
        check(leaf("event.name", "eq", json!("x")), Events, "(e.name = $1::text)", 1, "");
        check(leaf("event.name", "neq", json!("x")), Events, "(e.name IS DISTINCT FROM $1::text)", 1, "");
        check(leaf("event.path", "eq", json!(["/a", "/b"])), Events, "(e.path = ANY($1::text[]))", 1, "");
        check(
            leaf("event.path", "neq", json!(["/a"])),
            Events,
            "(e.path IS NULL OR NOT (e.path = ANY($1::text[])))",
            1,
            "",
        );
        check(leaf("event.path", "contains", json!("%_")), Events, "(strpos(e.path, $1::text) > 0)", 1, "");
        check(
            leaf("event.path", "not_contains", json!("a")),
            Events,
            "(coalesce(strpos(e.path, $1::text), 0) = 0)",
            1,
            "",
        );
        check(leaf("event.path", "regex", json!("^/a")), Events, "(e.path ~ $1::text)", 1, "");
        check(json!({"field": "event.country", "op": "is_set"}), Events, "(e.country IS NOT NULL)", 0, "");
        check(json!({"field": "event.country", "op": "is_not_set"}), Events, "(e.country IS NULL)", 0, "");
        check(leaf("event.is_bot", "eq", json!(true)), Events, "(e.is_bot = $1::bool)", 1, "");
        check(
            leaf("event.properties.plan", "eq", json!("pro")),
            Events,
            "((e.properties ->> $1::text) = $2::text)",
            2,
            "",
        );
        check(
            leaf("event.properties.amount", "gt", json!(10)),
            Events,
            "((CASE WHEN jsonb_typeof(e.properties -> $1::text) = 'number' THEN (e.properties ->> $1::text)::float8 END) > $2::float8)",
            2,
            "",
        );
        check(
            leaf("person.properties.email", "contains", json!("@")),
            Events,
            "(strpos((p.properties ->> $1::text), $2::text) > 0)",
            2,
            &format!("{PD}{P}"),
        );
        check(leaf("session.pageviews", "lt", json!(2)), Events, "(s.pageviews < $1::float8)", 1, S);
        check(leaf("session.channel", "eq", json!("direct")), Sessions, "(s.channel = $1::text)", 1, "");
        check(
            leaf("person.cohort", "eq", json!(7)),
            Events,
            "(EXISTS (SELECT 1 FROM cohort_members cm WHERE cm.project_id = e.project_id AND cm.cohort_id = $1::bigint \
             AND cm.person_key = coalesce('p:' || pd.person_id::text, 'd:' || e.distinct_id)))",
            1,
            PD,
        );
        check(
            leaf("person.cohort", "neq", json!(7)),
            Sessions,
            "(NOT EXISTS (SELECT 1 FROM cohort_members cm WHERE cm.project_id = s.project_id AND cm.cohort_id = $1::bigint \
             AND cm.person_key = coalesce('p:' || pd.person_id::text, 'd:' || s.distinct_id)))",
            1,
            " LEFT JOIN person_distinct_ids pd ON pd.project_id = s.project_id AND pd.distinct_id = s.distinct_id",
        );
        check(
            json!({"and": [leaf("event.name", "eq", json!("a")), {"or": [leaf("event.path", "eq", json!("/")), {"not": leaf("event.host", "eq", json!("h"))}]}]}),
            Events,
            "((e.name = $1::text) AND ((e.path = $2::text) OR (NOT coalesce((e.host = $3::text), false))))",
            3,
            "",
        );
    }

    #[test]
    fn session_scope_refuses_event_fields() {
        let f = parse_filter(&json!({"and": [{"field": "event.name", "op": "eq", "value": "x"}]}), "filters").unwrap();
        let err = SqlBuilder::new().filter_sql(&f, Scope::Sessions).unwrap_err();
        assert!(matches!(err, QueryError::Invalid { ref field, .. } if field == "filters.and[0].field"), "{err:?}");
    }

    #[test]
    fn injection_in_values_and_keys_is_never_spliced() {
        let f =
            parse_filter(&json!({"field": "event.name", "op": "eq", "value": "x'; DROP TABLE events; --"}), "filters")
                .unwrap();
        let mut b = SqlBuilder::new();
        let sql = b.filter_sql(&f, Scope::Events).unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
    }
}
