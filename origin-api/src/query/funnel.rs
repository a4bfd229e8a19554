//! Funnels: how far each person gets through 2..10 steps within a conversion window, each person's events walked once.
//!
//! Pure maths. The SQL evaluates every step's filters into a bitmask per event and hands over each person's
//! events sorted by time; this module walks them once, in the spirit of PostHog's funnel UDF, instead of the
//! self-join per step that makes funnels slow on PostgreSQL.
//!
//! Definitions (the oracle in the tests implements these by brute force):
//! * An attempt is a chain of events `i_0 < i_1 < ... < i_{k-1}` (positions in the person's sorted events)
//!   where event `i_j` matches step `j`. One event fills at most one step of a chain.
//! * Conversion window: `ts(i_{k-1}) - ts(i_0) <= window` in elapsed milliseconds (N days = N x 24 h, so the
//!   timezone and DST never matter for it). An attempt is entered in the range: `ts(i_0) < entry_until`; its
//!   later steps may come up to the window after the range.
//! * Strict order: the chain's events are adjacent (`i_{j+1} = i_j + 1`) among all of the person's events.
//! * Exclusion `(from, to)`: the attempt stops at an exclusion event seen after its step `from` and before its
//!   step `to`: a chain is invalid when such an event lies strictly between `i_from` and `i_min(to, k-1)`.
//!   The steps reached before the exclusion still count.
//! * Any order: the person reaches `k` steps when some window of `window` ms, starting at a step event before
//!   `entry_until`, holds events matching `k` distinct steps (an event matching several steps counts for each;
//!   exclusions are not supported).
//! * A person's level is the largest `k` over all valid attempts; the witness attempt gives the step times.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::{begin_read, Scope, SqlBuilder};
use super::model::{parse_filter, Common, QueryError};

/// Fewest steps a funnel may have.
pub const MIN_STEPS: usize = 2;
/// Most steps a funnel may have (the step mask is a `u16`).
pub const MAX_STEPS: usize = 10;
/// Breakdown group that collects the values beyond the top N.
pub const OTHER: &str = "$other";

/// How the steps must follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderMode {
    /// Steps in order, other events may come in between.
    #[default]
    Ordered,
    /// Steps in order with no other event of the person in between.
    Strict,
    /// All steps within the window, in any order.
    AnyOrder,
}

/// An exclusion: an event matching it after step `from` and before step `to` ends the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exclusion {
    /// Step index (0-based) after which the exclusion applies.
    pub from: usize,
    /// Step index (0-based) before which the exclusion applies.
    pub to: usize,
}

/// One event of a person, its filters already evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunnelEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Bit `j` set when the event matches step `j`.
    pub steps: u16,
    /// Bit `e` set when the event matches exclusion `e`.
    pub exclusions: u16,
}

/// A person's events, sorted by time (ties in a stable order chosen by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonEvents {
    /// The person (a person id, or the distinct id of an unmerged visitor).
    pub person: String,
    /// The person's breakdown value, when the funnel has a breakdown.
    pub breakdown: Option<String>,
    /// Events sorted by time.
    pub events: Vec<FunnelEvent>,
}

/// Settings of one funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelConfig {
    /// Number of steps, `MIN_STEPS..=MAX_STEPS`.
    pub steps: usize,
    /// Conversion window in elapsed milliseconds.
    pub window_ms: i64,
    /// Attempts start before this time (ms): the end of the query's range.
    pub entry_until: i64,
    /// Order mode.
    pub mode: OrderMode,
    /// Exclusions, indexed like the exclusion bits of [`FunnelEvent::exclusions`].
    pub exclusions: Vec<Exclusion>,
    /// Keep at most this many breakdown groups; the rest are merged into [`OTHER`].
    pub breakdown_limit: usize,
    /// List at most this many persons per step (converted and dropped).
    pub persons_limit: usize,
}

/// Why a funnel cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunnelError {
    /// Too few or too many steps.
    #[error("a funnel has {MIN_STEPS} to {MAX_STEPS} steps, not {0}")]
    StepCount(usize),
    /// The window is not positive.
    #[error("the conversion window must be positive")]
    Window,
    /// An exclusion does not sit between two steps of the funnel.
    #[error("exclusion {0} must go from one step to a later step of the funnel")]
    ExclusionSteps(usize),
    /// Too many exclusions for the mask.
    #[error("a funnel has at most 16 exclusions")]
    TooManyExclusions,
    /// Exclusions are defined between ordered steps only.
    #[error("exclusions need the ordered or strict mode")]
    ExclusionInAnyOrder,
}

impl FunnelConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), FunnelError> {
        if !(MIN_STEPS..=MAX_STEPS).contains(&self.steps) {
            return Err(FunnelError::StepCount(self.steps));
        }
        if self.window_ms <= 0 {
            return Err(FunnelError::Window);
        }
        if self.exclusions.len() > 16 {
            return Err(FunnelError::TooManyExclusions);
        }
        if !self.exclusions.is_empty() && self.mode == OrderMode::AnyOrder {
            return Err(FunnelError::ExclusionInAnyOrder);
        }
        for (i, e) in self.exclusions.iter().enumerate() {
            if e.from >= e.to || e.to >= self.steps {
                return Err(FunnelError::ExclusionSteps(i));
            }
        }
        Ok(())
    }
}

/// How far one person got, with the step times of the attempt that got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Number of steps reached (0: never entered).
    pub level: usize,
    /// Position in the person's events of each reached step (`len == level`), in step order for the ordered
    /// modes and in time order for any order.
    pub positions: Vec<usize>,
    /// Time of each reached step, parallel to `positions`.
    pub times: Vec<i64>,
}

/// A partial attempt: when it started and where it took its steps (a fixed array: the walk allocates nothing per
/// event).
#[derive(Debug, Clone, Copy)]
struct Partial {
    start: i64,
    len: usize,
    positions: [usize; MAX_STEPS],
}

impl Partial {
    fn begin(ts: i64, pos: usize) -> Partial {
        let mut positions = [0; MAX_STEPS];
        positions[0] = pos;
        Partial { start: ts, len: 1, positions }
    }

    fn then(mut self, pos: usize) -> Partial {
        self.positions[self.len] = pos;
        self.len += 1;
        self
    }
}

/// How far a person gets in an ordered or strict funnel: one pass, keeping per step the partial attempt with the
/// latest start (a later start leaves the most room in the window, and every partial attempt at the same step
/// is ended by the same exclusions, so it dominates the others).
fn reach_ordered(events: &[FunnelEvent], cfg: &FunnelConfig) -> Reach {
    let n = cfg.steps.min(MAX_STEPS);
    let strict = cfg.mode == OrderMode::Strict;
    let mut state: [Option<Partial>; MAX_STEPS] = [None; MAX_STEPS];
    let mut best: Option<Partial> = None;
    for (pos, ev) in events.iter().enumerate() {
        if ev.steps == 0 && ev.exclusions == 0 && !strict {
            continue;
        }
        // Chains that take this event as step j, built from the state before this event.
        let mut fresh: [Option<Partial>; MAX_STEPS] = [None; MAX_STEPS];
        for j in (0..n).rev() {
            if ev.steps & (1 << j) == 0 {
                continue;
            }
            if j == 0 {
                if ev.ts < cfg.entry_until {
                    fresh[0] = Some(Partial::begin(ev.ts, pos));
                }
            } else if let Some(prev) = state[j - 1] {
                if ev.ts - prev.start <= cfg.window_ms {
                    fresh[j] = Some(prev.then(pos));
                }
            }
        }
        for f in fresh.iter().take(n).flatten() {
            if best.is_none_or(|b| f.len > b.len) {
                best = Some(*f);
            }
        }
        // Strict: only chains that end on this very event survive it.
        let mut next = if strict { [None; MAX_STEPS] } else { state };
        for j in 0..n {
            if let Some(f) = fresh[j] {
                if next[j].is_none_or(|s| f.start > s.start) {
                    next[j] = Some(f);
                }
            }
        }
        for (e, ex) in cfg.exclusions.iter().enumerate() {
            if ev.exclusions & (1 << e) == 0 {
                continue;
            }
            for j in ex.from..ex.to.min(n) {
                // A chain taking this event as its step `from` starts after the exclusion, so it survives.
                next[j] = if j == ex.from { fresh[j] } else { None };
            }
        }
        state = next;
    }
    match best {
        None => Reach { level: 0, positions: vec![], times: vec![] },
        Some(b) => {
            let positions = b.positions[..b.len].to_vec();
            let times = positions.iter().map(|&p| events[p].ts).collect();
            Reach { level: b.len, positions, times }
        }
    }
}

/// How many distinct steps a person does within one window, in any order: a sliding window over the events.
fn reach_any_order(events: &[FunnelEvent], cfg: &FunnelConfig) -> Reach {
    let n = cfg.steps;
    let mut counts = [0u32; MAX_STEPS];
    let mut distinct = 0usize;
    let mut best: Option<(usize, usize, usize)> = None; // (level, left, right exclusive)
    let mut right = 0usize;
    for left in 0..events.len() {
        while right < events.len() && events[right].ts - events[left].ts <= cfg.window_ms {
            for (j, c) in counts.iter_mut().enumerate().take(n) {
                if events[right].steps & (1 << j) != 0 {
                    if *c == 0 {
                        distinct += 1;
                    }
                    *c += 1;
                }
            }
            right += 1;
        }
        let anchor = &events[left];
        if anchor.steps != 0 && anchor.ts < cfg.entry_until && best.is_none_or(|(l, _, _)| distinct > l) {
            best = Some((distinct, left, right));
        }
        for (j, c) in counts.iter_mut().enumerate().take(n) {
            if events[left].steps & (1 << j) != 0 {
                *c -= 1;
                if *c == 0 {
                    distinct -= 1;
                }
            }
        }
    }
    let Some((level, l, r)) = best else { return Reach { level: 0, positions: vec![], times: vec![] } };
    // The witness: where each step first happens in the best window, in time order.
    let mut first: Vec<usize> = (0..n).filter_map(|j| (l..r).find(|&p| events[p].steps & (1 << j) != 0)).collect();
    first.sort_unstable();
    let times = first.iter().map(|&p| events[p].ts).collect();
    Reach { level, positions: first, times }
}

/// How far one person gets through the funnel.
pub fn reach(events: &[FunnelEvent], cfg: &FunnelConfig) -> Reach {
    match cfg.mode {
        OrderMode::Ordered | OrderMode::Strict => reach_ordered(events, cfg),
        OrderMode::AnyOrder => reach_any_order(events, cfg),
    }
}

/// One step of a funnel result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    /// Step index (0-based).
    pub step: usize,
    /// Persons who reached this step.
    pub count: u64,
    /// `count / count of step 0` (1 for step 0, 0 when nobody entered).
    pub conversion_from_first: f64,
    /// `count / count of the previous step` (1 for step 0, 0 when nobody reached the previous step).
    pub conversion_from_previous: f64,
    /// Persons who reached the previous step but not this one (0 for step 0).
    pub drop_off: u64,
    /// `drop_off / count of the previous step`.
    pub drop_off_rate: f64,
    /// Median seconds from the previous step to this one, over the persons who reached this step.
    pub median_time_to_convert_secs: Option<f64>,
    /// Average seconds from the previous step to this one.
    pub avg_time_to_convert_secs: Option<f64>,
    /// Persons who reached this step (sorted, at most `persons_limit`).
    pub converted: Vec<String>,
    /// Persons who reached the previous step and stopped before this one (sorted, at most `persons_limit`).
    pub dropped: Vec<String>,
}

/// The steps of one group of persons (everyone, or one breakdown value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelGroup {
    /// The breakdown value; `None` for the total (and for persons without a value inside a breakdown).
    pub breakdown: Option<String>,
    /// One entry per step.
    pub steps: Vec<StepResult>,
}

/// A funnel's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelResult {
    /// All persons.
    pub total: FunnelGroup,
    /// One group per breakdown value (top `breakdown_limit` by entrants, then [`OTHER`]); empty without breakdown.
    pub breakdowns: Vec<FunnelGroup>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Step statistics over persons with their reach.
fn group(breakdown: Option<String>, reached: &[(&str, &Reach)], cfg: &FunnelConfig) -> FunnelGroup {
    let mut steps = Vec::with_capacity(cfg.steps);
    let first = reached.iter().filter(|(_, r)| r.level >= 1).count() as u64;
    let mut prev = first;
    for k in 0..cfg.steps {
        let mut converted: Vec<&str> = reached.iter().filter(|(_, r)| r.level > k).map(|(p, _)| *p).collect();
        let count = converted.len() as u64;
        let mut dropped: Vec<&str> =
            if k == 0 { vec![] } else { reached.iter().filter(|(_, r)| r.level == k).map(|(p, _)| *p).collect() };
        let mut secs: Vec<f64> = if k == 0 {
            vec![]
        } else {
            reached
                .iter()
                .filter(|(_, r)| r.level > k)
                .map(|(_, r)| (r.times[k] - r.times[k - 1]) as f64 / 1000.0)
                .collect()
        };
        secs.sort_by(f64::total_cmp);
        converted.sort_unstable();
        dropped.sort_unstable();
        let drop_off = if k == 0 { 0 } else { prev - count };
        steps.push(StepResult {
            step: k,
            count,
            conversion_from_first: if k == 0 && count > 0 { 1.0 } else { ratio(count, first) },
            conversion_from_previous: if k == 0 && count > 0 { 1.0 } else { ratio(count, prev) },
            drop_off,
            drop_off_rate: if k == 0 { 0.0 } else { ratio(drop_off, prev) },
            median_time_to_convert_secs: median(&secs),
            avg_time_to_convert_secs: if secs.is_empty() {
                None
            } else {
                Some(secs.iter().sum::<f64>() / secs.len() as f64)
            },
            converted: converted.into_iter().take(cfg.persons_limit).map(str::to_owned).collect(),
            dropped: dropped.into_iter().take(cfg.persons_limit).map(str::to_owned).collect(),
        });
        prev = count;
    }
    FunnelGroup { breakdown, steps }
}

/// A person's reach with what the statistics need of the person.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonReach {
    /// The person.
    pub person: String,
    /// The person's breakdown value.
    pub breakdown: Option<String>,
    /// How far the person got.
    pub reach: Reach,
}

/// Step statistics over persons whose reach is known; `with_breakdown` adds one group per breakdown value.
pub fn aggregate(persons: &[PersonReach], cfg: &FunnelConfig, with_breakdown: bool) -> FunnelResult {
    let all: Vec<(&str, &Reach)> = persons.iter().map(|p| (p.person.as_str(), &p.reach)).collect();
    let total = group(None, &all, cfg);
    let mut breakdowns = Vec::new();
    if with_breakdown {
        let mut by_value: BTreeMap<Option<&str>, Vec<(&str, &Reach)>> = BTreeMap::new();
        for p in persons {
            by_value.entry(p.breakdown.as_deref()).or_default().push((p.person.as_str(), &p.reach));
        }
        // Rank by entrants, ties by value, so the top N is deterministic.
        let mut ranked: Vec<_> = by_value.into_iter().collect();
        ranked.sort_by(|a, b| {
            let ea = a.1.iter().filter(|(_, r)| r.level > 0).count();
            let eb = b.1.iter().filter(|(_, r)| r.level > 0).count();
            eb.cmp(&ea).then_with(|| a.0.cmp(&b.0))
        });
        let mut other: Vec<(&str, &Reach)> = Vec::new();
        for (i, (value, members)) in ranked.into_iter().enumerate() {
            if i < cfg.breakdown_limit {
                breakdowns.push(group(value.map(str::to_owned), &members, cfg));
            } else {
                other.extend(members);
            }
        }
        if !other.is_empty() {
            breakdowns.push(group(Some(OTHER.to_owned()), &other, cfg));
        }
    }
    FunnelResult { total, breakdowns }
}

/// Computes a funnel: each person's events walked once, then the step statistics per group (a breakdown when
/// any person has a breakdown value).
pub fn funnel(persons: &[PersonEvents], cfg: &FunnelConfig) -> Result<FunnelResult, FunnelError> {
    cfg.validate()?;
    let reaches: Vec<PersonReach> = persons
        .iter()
        .map(|p| PersonReach { person: p.person.clone(), breakdown: p.breakdown.clone(), reach: reach(&p.events, cfg) })
        .collect();
    Ok(aggregate(&reaches, cfg, persons.iter().any(|p| p.breakdown.is_some())))
}

// ---- The query: request, SQL and the walk over streamed rows ----
//
// The event spec and the streaming helpers below are shared by retention, paths and lifecycle.

/// Rows fetched per round trip while streaming a person-ordered result.
const FETCH_ROWS: i32 = 20_000;

/// Which events a step (or a start, return or exclusion event) matches: an event name, filters, or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// Event name (`events.name`).
    #[serde(default)]
    pub name: Option<String>,
    /// A filter tree, as the common `filters`.
    #[serde(default)]
    pub filters: Option<serde_json::Value>,
}

impl EventSpec {
    /// A boolean SQL expression over `events e` (never NULL); `path` names the spec in errors.
    pub fn sql(&self, b: &mut SqlBuilder, path: &str) -> Result<String, QueryError> {
        let mut parts = Vec::new();
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > protocol::limits::MAX_NAME_LEN {
                return Err(QueryError::invalid(format!("{path}.name"), "name is 1 to 200 bytes"));
            }
            parts.push(format!("e.name = {}::text", b.bind(name.clone())));
        }
        if let Some(f) = &self.filters {
            let f = parse_filter(f, &format!("{path}.filters"))?;
            parts.push(b.filter_sql(&f, Scope::Events)?);
        }
        if parts.is_empty() {
            return Err(QueryError::invalid(path, "give a name, filters or both"));
        }
        Ok(format!("coalesce({}, false)", parts.join(" AND ")))
    }
}

/// The conditions every analysis applies to `events e`: the project, bots unless asked for, the common filters.
/// Returns the `AND ...` tail after the project condition.
pub fn common_where(b: &mut SqlBuilder, common: &Common) -> Result<String, QueryError> {
    let mut out = String::new();
    if !common.include_bots {
        out.push_str(" AND NOT e.is_bot");
    }
    if let Some(f) = &common.filter {
        out.push_str(&format!(" AND coalesce({}, false)", b.filter_sql(f, Scope::Events)?));
    }
    Ok(out)
}

/// Refuses `compare` for the analyses that have no previous-period answer.
pub fn refuse_compare(common: &Common, kind: &str) -> Result<(), QueryError> {
    match common.previous {
        Some(_) => Err(QueryError::invalid("compare", format!("compare is not supported by {kind}"))),
        None => Ok(()),
    }
}

/// Runs `sql` in a guarded read transaction and hands every row to `each`, fetching in chunks so a large
/// answer is never held in memory at once.
pub async fn stream_rows(
    pool: &deadpool_postgres::Pool,
    sql: &str,
    b: &SqlBuilder,
    mut each: impl FnMut(&tokio_postgres::Row) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let mut client = pool.get().await?;
    let tx = begin_read(&mut client).await?;
    let stmt = tx.prepare(sql).await.map_err(db_error)?;
    let portal = tx.bind(&stmt, &b.params()).await.map_err(db_error)?;
    loop {
        let rows = tx.query_portal(&portal, FETCH_ROWS).await.map_err(db_error)?;
        for row in &rows {
            each(row)?;
        }
        if rows.len() < FETCH_ROWS as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Where an analysis reads its events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// The per-person sequences when the query only needs what they carry, else the raw events.
    #[default]
    Auto,
    /// Always the raw events (the reference the sequences are tested against).
    Raw,
}

impl EventSpec {
    /// The event name when the spec is a name alone: what the per-person sequences can match.
    pub fn name_only(&self) -> Option<&str> {
        match (&self.name, &self.filters) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }
}

/// Whether the common part of a query lets the per-person sequences answer it: they carry event names, page
/// paths and the bot flag, nothing a filter or a breakdown could ask for.
pub fn sequences_fit(common: &Common, source: Source) -> bool {
    source == Source::Auto && common.filter.is_none() && common.breakdown.is_none() && common.previous.is_none()
}

/// Runs a sequence scan in a guarded read transaction (see [`crate::store::sequences::scan`]).
pub async fn scan_sequences<T>(
    pool: &deadpool_postgres::Pool,
    scan: &crate::store::sequences::Scan,
    keep: impl FnMut(crate::store::sequences::SeqEvent<'_>) -> Option<T>,
    done: impl FnMut(String, Vec<(i64, T)>),
) -> Result<(), QueryError> {
    let mut client = pool.get().await?;
    // The mapping copy is locked before the snapshot is taken and brought to it (`store::idmap`).
    let slot = crate::store::idmap::copy_of(&client, scan.project_id).await?;
    let mut guard = slot.lock().await;
    let tx = begin_read(&mut client).await?;
    // Several statements must see one snapshot: which days are clean, the numbers, the days themselves.
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
    let map = crate::store::idmap::refresh(&tx, scan.project_id, &mut guard).await?;
    drop(guard);
    crate::store::sequences::scan(&tx, scan, &map, keep, done).await.map_err(|e| match e {
        crate::store::StoreError::Db(e) => QueryError::from(e),
        other => QueryError::Store(other),
    })?;
    tx.commit().await?;
    Ok(())
}

/// A PostgreSQL refusal caused by the request (a regex it cannot compile) is a 400.
fn db_error(e: tokio_postgres::Error) -> QueryError {
    match e.code().map(|c| c.code()) {
        Some("2201B") => QueryError::invalid("filters", "a regex value is not valid for PostgreSQL"),
        _ => QueryError::from(e),
    }
}

/// Groups consecutive rows of one person (rows ordered by person first) and calls `done` once per person.
#[derive(Debug)]
pub struct PersonGroups<T> {
    current: Option<String>,
    items: Vec<T>,
}

impl<T> Default for PersonGroups<T> {
    fn default() -> Self {
        PersonGroups { current: None, items: Vec::new() }
    }
}

impl<T> PersonGroups<T> {
    /// Adds an item of `person`; when the person changes, the previous person's items go to `done`.
    pub fn push(&mut self, person: &str, item: T, done: &mut impl FnMut(String, Vec<T>)) {
        if self.current.as_deref() != Some(person) {
            self.flush(done);
            self.current = Some(person.to_owned());
        }
        self.items.push(item);
    }

    /// Hands over the last person.
    pub fn flush(&mut self, done: &mut impl FnMut(String, Vec<T>)) {
        if let Some(p) = self.current.take() {
            done(p, std::mem::take(&mut self.items));
        }
    }
}

fn default_window_days() -> u32 {
    14
}

fn default_persons_limit() -> usize {
    100
}

/// Most persons listed per step.
pub const MAX_PERSONS_LIMIT: usize = 1000;

/// Longest conversion window, in days.
pub const MAX_WINDOW_DAYS: u32 = 365;

/// An exclusion as sent: an event between two steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionQuery {
    /// Event name.
    #[serde(default)]
    pub name: Option<String>,
    /// Filters.
    #[serde(default)]
    pub filters: Option<serde_json::Value>,
    /// The step after which the exclusion applies (0-based).
    pub from_step: usize,
    /// The step before which it applies.
    pub to_step: usize,
}

/// The funnel part of `POST /v1/query/funnel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// 2 to 10 steps.
    pub steps: Vec<EventSpec>,
    /// Conversion window in days of 24 hours (1 to 365, default 14).
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// `ordered` (default), `strict` or `any_order`.
    #[serde(default)]
    pub order: OrderMode,
    /// Exclusion events.
    #[serde(default)]
    pub exclusions: Vec<ExclusionQuery>,
    /// Persons listed per step as converted and dropped (0 to 1000, default 100).
    #[serde(default = "default_persons_limit")]
    pub persons_limit: usize,
}

/// The answer of `POST /v1/query/funnel`.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelResponse {
    /// Zone of the range.
    pub timezone: String,
    /// Start of the range (first steps at or after it).
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the range (first steps before it; later steps up to the window after it).
    pub to: chrono::DateTime<chrono::Utc>,
    /// The window in days.
    pub window_days: u32,
    /// The order mode.
    pub order: OrderMode,
    /// All persons.
    pub total: FunnelGroup,
    /// One group per breakdown value.
    pub breakdowns: Vec<FunnelGroup>,
}

fn config_error(e: FunnelError) -> QueryError {
    let field = match &e {
        FunnelError::StepCount(_) => "steps".to_owned(),
        FunnelError::Window => "window_days".to_owned(),
        FunnelError::ExclusionSteps(i) => format!("exclusions[{i}]"),
        FunnelError::TooManyExclusions | FunnelError::ExclusionInAnyOrder => "exclusions".to_owned(),
    };
    QueryError::invalid(field, e.to_string())
}

/// Runs a funnel for a project: one statement returns every relevant event ordered by person and time, with
/// the steps and exclusions it matches as bitmasks; each person's events are walked once as they stream in.
/// Funnels of event names alone read the per-person sequences instead (the same events in the same order).
pub async fn run(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &FunnelQuery,
) -> Result<FunnelResponse, QueryError> {
    run_from(pool, project_id, common, q, Source::Auto).await
}

/// Each person's reach, from the per-person sequences: the events of `[from, until)` (bots left out unless
/// asked for), matched to steps and exclusions by name.
async fn reaches_from_sequences(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &FunnelQuery,
    cfg: &FunnelConfig,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<PersonReach>, QueryError> {
    let mut masks: std::collections::HashMap<&str, (u16, u16)> = std::collections::HashMap::new();
    for (i, step) in q.steps.iter().enumerate() {
        if let Some(n) = step.name_only() {
            masks.entry(n).or_default().0 |= 1 << i;
        }
    }
    for (i, x) in q.exclusions.iter().enumerate() {
        if let Some(n) = x.name.as_deref() {
            masks.entry(n).or_default().1 |= 1 << i;
        }
    }
    let strict = cfg.mode == OrderMode::Strict;
    let (from_us, until_us) = (common.range.from.timestamp_micros(), until.timestamp_micros());
    let include_bots = common.include_bots;
    let scan =
        crate::store::sequences::Scan { project_id, from: common.range.from, until, earlier: None, paths: false };
    let mut persons: Vec<SequencePerson> = Vec::new();
    let mut by_name = crate::store::sequences::NameCache::default();
    scan_sequences(
        pool,
        &scan,
        |e| {
            if (e.bot && !include_bots) || e.ts_us < from_us || e.ts_us >= until_us {
                return None;
            }
            let (steps, exclusions) = by_name.get(&e, |name| masks.get(name).copied().unwrap_or((0, 0)));
            // Strict order needs every event of the person: any other event in between breaks a chain.
            (strict || steps != 0 || exclusions != 0).then_some((steps, exclusions))
        },
        |person, events| persons.push((person, events)),
    )
    .await?;
    Ok(walk_parallel(persons, cfg))
}

/// A person and their events from the sequences: (microseconds, (step mask, exclusion mask)).
type SequencePerson = (String, Vec<(i64, (u16, u16))>);

/// Walks persons on every core: the scan hands all persons over at once, and each walk is independent.
fn walk_parallel(persons: Vec<SequencePerson>, cfg: &FunnelConfig) -> Vec<PersonReach> {
    let walk = |chunk: &mut [SequencePerson]| -> Vec<PersonReach> {
        let mut out = Vec::new();
        for (person, events) in chunk {
            let events: Vec<FunnelEvent> = events
                .iter()
                .map(|&(ts, (steps, exclusions))| FunnelEvent { ts: ts.div_euclid(1000), steps, exclusions })
                .collect();
            let r = reach(&events, cfg);
            if r.level > 0 {
                out.push(PersonReach { person: std::mem::take(person), breakdown: None, reach: r });
            }
        }
        out
    };
    let mut persons = persons;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let size = persons.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = persons.chunks_mut(size).map(|chunk| scope.spawn(move || walk(chunk))).collect();
        let mut reaches = Vec::new();
        for h in handles {
            match h.join() {
                Ok(part) => reaches.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        reaches
    })
}

/// [`run`] reading from the given source.
pub async fn run_from(
    pool: &deadpool_postgres::Pool,
    project_id: i64,
    common: &Common,
    q: &FunnelQuery,
    source: Source,
) -> Result<FunnelResponse, QueryError> {
    refuse_compare(common, "funnels")?;
    if common.breakdown.as_ref().is_some_and(|bd| bd.field == super::model::Field::Cohort) {
        return Err(QueryError::invalid(
            "breakdown.field",
            "funnels break down by one value per person; filter by person.cohort instead",
        ));
    }
    if q.window_days == 0 || q.window_days > MAX_WINDOW_DAYS {
        return Err(QueryError::invalid("window_days", format!("window_days is 1 to {MAX_WINDOW_DAYS}")));
    }
    if q.persons_limit > MAX_PERSONS_LIMIT {
        return Err(QueryError::invalid("persons_limit", format!("persons_limit is 0 to {MAX_PERSONS_LIMIT}")));
    }
    let window_ms = i64::from(q.window_days) * 86_400_000;
    let cfg = FunnelConfig {
        steps: q.steps.len(),
        window_ms,
        entry_until: common.range.to.timestamp_millis(),
        mode: q.order,
        exclusions: q.exclusions.iter().map(|x| Exclusion { from: x.from_step, to: x.to_step }).collect(),
        breakdown_limit: common.breakdown.as_ref().map_or(0, |bd| bd.limit as usize),
        persons_limit: q.persons_limit,
    };
    cfg.validate().map_err(config_error)?;

    let mut b = SqlBuilder::new();
    let person = b.person_key(Scope::Events);
    let pid = b.bind(project_id);
    let from = b.bind(common.range.from);
    let until_ts = common.range.to + chrono::Duration::milliseconds(window_ms);
    let until = b.bind(until_ts);
    let mut mask = Vec::new();
    for (i, step) in q.steps.iter().enumerate() {
        let cond = step.sql(&mut b, &format!("steps[{i}]"))?;
        mask.push(format!("(CASE WHEN {cond} THEN {} ELSE 0 END)", 1u32 << i));
    }
    let mut excl = vec!["0".to_owned()];
    for (i, x) in q.exclusions.iter().enumerate() {
        let spec = EventSpec { name: x.name.clone(), filters: x.filters.clone() };
        let cond = spec.sql(&mut b, &format!("exclusions[{i}]"))?;
        excl.push(format!("(CASE WHEN {cond} THEN {} ELSE 0 END)", 1u32 << i));
    }
    let bd = match &common.breakdown {
        Some(bd) => format!("({})::text", b.field_sql(&bd.field, Scope::Events, "breakdown.field")?),
        None => "NULL::text".to_owned(),
    };
    let tail = common_where(&mut b, common)?;
    // Strict order needs every event of the person: any other event in between breaks a chain.
    let relevant = if cfg.mode == OrderMode::Strict { "" } else { "WHERE steps <> 0 OR excl <> 0" };
    let sql = format!(
        "SELECT person, ts, steps, excl, bd FROM (\
           SELECT {person} AS person, e.timestamp AS ts, e.event_id, ({mask})::int4 AS steps, ({excl})::int4 AS excl, \
                  {bd} AS bd \
           FROM events e{joins} \
           WHERE e.project_id = {pid} AND e.timestamp >= {from} AND e.timestamp < {until}{tail}\
         ) x {relevant} ORDER BY person, ts, event_id",
        mask = mask.join(" | "),
        excl = excl.join(" | "),
        joins = b.joins(Scope::Events),
    );

    let names: Option<Vec<&str>> = q
        .steps
        .iter()
        .map(EventSpec::name_only)
        .chain(q.exclusions.iter().map(|x| if x.filters.is_none() { x.name.as_deref() } else { None }))
        .collect();
    if let (true, Some(_)) = (sequences_fit(common, source), names) {
        let mut reaches = reaches_from_sequences(pool, project_id, common, q, &cfg, until_ts).await?;
        // Persons in one order whatever the source, so float sums of the times add up identically.
        reaches.sort_by(|a, b| a.person.cmp(&b.person));
        return Ok(response(common, q, aggregate(&reaches, &cfg, false)));
    }

    type Row = (FunnelEvent, Option<String>);
    let mut reaches: Vec<PersonReach> = Vec::new();
    let mut groups: PersonGroups<Row> = PersonGroups::default();
    let mut done = |person: String, rows: Vec<Row>| {
        // The breakdown value of a person is the one on their first event of step 0 in the range.
        let breakdown =
            rows.iter().find(|(e, _)| e.steps & 1 != 0 && e.ts < cfg.entry_until).and_then(|(_, v)| v.clone());
        let events: Vec<FunnelEvent> = rows.into_iter().map(|(e, _)| e).collect();
        let r = reach(&events, &cfg);
        if r.level > 0 {
            reaches.push(PersonReach { person, breakdown, reach: r });
        }
    };
    stream_rows(pool, &sql, &b, |row| {
        let person: &str = row.try_get(0)?;
        let ts: chrono::DateTime<chrono::Utc> = row.try_get(1)?;
        let steps: i32 = row.try_get(2)?;
        let exclusions: i32 = row.try_get(3)?;
        let value: Option<String> = row.try_get(4)?;
        // The masks hold at most 10 and 16 bits, so the casts are exact.
        let ev = FunnelEvent { ts: ts.timestamp_millis(), steps: steps as u16, exclusions: exclusions as u16 };
        groups.push(person, (ev, value), &mut done);
        Ok(())
    })
    .await?;
    groups.flush(&mut done);
    reaches.sort_by(|a, b| a.person.cmp(&b.person));

    Ok(response(common, q, aggregate(&reaches, &cfg, common.breakdown.is_some())))
}

/// The answer of a funnel query, whichever source computed `result`.
fn response(common: &Common, q: &FunnelQuery, result: FunnelResult) -> FunnelResponse {
    FunnelResponse {
        timezone: common.timezone.clone(),
        from: common.range.from,
        to: common.range.to,
        window_days: q.window_days,
        order: q.order,
        total: result.total,
        breakdowns: result.breakdowns,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn cfg(steps: usize, window_ms: i64, mode: OrderMode, exclusions: Vec<Exclusion>) -> FunnelConfig {
        FunnelConfig {
            steps,
            window_ms,
            entry_until: i64::MAX,
            mode,
            exclusions,
            breakdown_limit: 10,
            persons_limit: 100,
        }
    }

    /// Events from `(hour, step mask, exclusion mask)`.
    fn evs(spec: &[(i64, u16, u16)]) -> Vec<FunnelEvent> {
        spec.iter().map(|&(h, steps, exclusions)| FunnelEvent { ts: h * H, steps, exclusions }).collect()
    }

    fn check(spec: &[(i64, u16, u16)], c: &FunnelConfig, level: usize, hours: &[i64]) {
        let r = reach(&evs(spec), c);
        assert_eq!(r.level, level, "level of {spec:?} with {c:?}");
        let got: Vec<i64> = r.times.iter().map(|t| t / H).collect();
        assert_eq!(got, hours, "times of {spec:?}");
    }

    #[test]
    fn ordered_cases() {
        let o3 = cfg(3, DAY, OrderMode::Ordered, vec![]);
        check(&[], &o3, 0, &[]);
        check(&[(0, 0b010, 0)], &o3, 0, &[]);
        check(&[(0, 0b001, 0)], &o3, 1, &[0]);
        check(&[(0, 0b001, 0), (1, 0b010, 0), (2, 0b100, 0)], &o3, 3, &[0, 1, 2]);
        // out of order does not count
        check(&[(0, 0b010, 0), (1, 0b001, 0), (2, 0b100, 0)], &o3, 1, &[1]);
        // other events in between are fine
        check(&[(0, 0b001, 0), (1, 0, 0), (2, 0b010, 0)], &o3, 2, &[0, 2]);
        // window: exactly 24 h is in, a millisecond more is out
        check(&[(0, 0b001, 0), (24, 0b010, 0)], &o3, 2, &[0, 24]);
        let r = reach(
            &[FunnelEvent { ts: 0, steps: 1, exclusions: 0 }, FunnelEvent { ts: DAY + 1, steps: 2, exclusions: 0 }],
            &o3,
        );
        assert_eq!(r.level, 1);
        // a later start rescues the window
        check(&[(0, 0b001, 0), (20, 0b001, 0), (30, 0b010, 0)], &o3, 2, &[20, 30]);
        // the window counts from the first step, not the previous one
        check(&[(0, 0b001, 0), (20, 0b010, 0), (30, 0b100, 0)], &o3, 2, &[0, 20]);
        // one event fills one step only
        check(&[(0, 0b011, 0)], &o3, 1, &[0]);
        check(&[(0, 0b011, 0), (1, 0b011, 0)], &o3, 2, &[0, 1]);
        // same timestamp, order of delivery decides
        check(&[(5, 0b001, 0), (5, 0b010, 0)], &o3, 2, &[5, 5]);
        // attempts are entered in the range; their later steps may come after it
        let late = FunnelConfig { entry_until: 10 * H, ..o3.clone() };
        check(&[(0, 0b001, 0), (12, 0b010, 0)], &late, 2, &[0, 12]);
        check(&[(10, 0b001, 0), (12, 0b010, 0)], &late, 0, &[]);
        check(&[(0, 0b001, 0), (10, 0b001, 0), (30, 0b010, 0)], &late, 1, &[0]);
    }

    #[test]
    fn strict_cases() {
        let s3 = cfg(3, DAY, OrderMode::Strict, vec![]);
        check(&[(0, 0b001, 0), (1, 0b010, 0), (2, 0b100, 0)], &s3, 3, &[0, 1, 2]);
        check(&[(0, 0b001, 0), (1, 0, 0), (2, 0b010, 0)], &s3, 1, &[0]);
        check(&[(0, 0b001, 0), (1, 0, 0), (2, 0b001, 0), (3, 0b010, 0)], &s3, 2, &[2, 3]);
        check(&[(0, 0b001, 0), (1, 0b010, 0), (2, 0b001, 0), (3, 0b100, 0)], &s3, 2, &[0, 1]);
    }

    #[test]
    fn exclusion_cases() {
        let x = cfg(3, DAY, OrderMode::Ordered, vec![Exclusion { from: 0, to: 1 }]);
        // exclusion between step 0 and 1 ends the attempt; step 0 still counts
        check(&[(0, 0b001, 0), (1, 0, 1), (2, 0b010, 0)], &x, 1, &[0]);
        // a new attempt after the exclusion converts
        check(&[(0, 0b001, 0), (1, 0, 1), (2, 0b001, 0), (3, 0b010, 0), (4, 0b100, 0)], &x, 3, &[2, 3, 4]);
        // exclusion after step 1 does not matter for 0 -> 1
        check(&[(0, 0b001, 0), (1, 0b010, 0), (2, 0, 1), (3, 0b100, 0)], &x, 3, &[0, 1, 3]);
        // the exclusion event itself may be step `to` or step `from`
        check(&[(0, 0b001, 0), (1, 0b010, 1)], &x, 2, &[0, 1]);
        check(&[(0, 0b001, 1), (1, 0b010, 0)], &x, 2, &[0, 1]);
        let y = cfg(3, DAY, OrderMode::Ordered, vec![Exclusion { from: 0, to: 2 }]);
        check(&[(0, 0b001, 0), (1, 0b010, 0), (2, 0, 1), (3, 0b100, 0)], &y, 2, &[0, 1]);
        check(&[(0, 0b001, 0), (1, 0b010, 1), (3, 0b100, 0)], &y, 2, &[0, 1]);
    }

    #[test]
    fn any_order_cases() {
        let a3 = cfg(3, DAY, OrderMode::AnyOrder, vec![]);
        check(&[(0, 0b100, 0), (1, 0b001, 0), (2, 0b010, 0)], &a3, 3, &[0, 1, 2]);
        check(&[(0, 0b100, 0), (1, 0b100, 0), (30, 0b010, 0)], &a3, 1, &[0]);
        check(&[(0, 0b100, 0), (30, 0b010, 0), (31, 0b001, 0)], &a3, 2, &[30, 31]);
        check(&[(0, 0b011, 0)], &a3, 2, &[0, 0]);
        let late = FunnelConfig { entry_until: 10 * H, ..a3.clone() };
        check(&[(12, 0b001, 0), (13, 0b010, 0)], &late, 0, &[]);
        check(&[(9, 0b100, 0), (12, 0b001, 0)], &late, 2, &[9, 12]);
    }

    /// The window is elapsed time: across Berlin's spring-forward night, 7 days after 12:00 local is 13:00 local.
    #[test]
    fn window_spanning_dst_is_elapsed_time() {
        let at = |offset_h: i32, m: u32, d: u32, h: u32, min: u32| {
            chrono::FixedOffset::east_opt(offset_h * 3600)
                .unwrap()
                .with_ymd_and_hms(2026, m, d, h, min, 0)
                .unwrap()
                .with_timezone(&Utc)
                .timestamp_millis()
        };
        // 2026-03-25 12:00 CET (+01:00); a week later Berlin is on CEST (+02:00)
        let start = at(1, 3, 25, 12, 0);
        let april = |h, min| at(2, 4, 1, h, min);
        let c = cfg(2, 7 * DAY, OrderMode::Ordered, vec![]);
        let ev = |ts, steps| FunnelEvent { ts, steps, exclusions: 0 };
        // 12:30 local a week later is 6 days 23.5 h elapsed: inside
        assert_eq!(reach(&[ev(start, 1), ev(april(12, 30), 2)], &c).level, 2);
        // 13:00 local is exactly 7 x 24 h: inside; 13:01 is outside, though the calendar says "a week and a minute"
        assert_eq!(april(13, 0) - start, 7 * DAY);
        assert_eq!(reach(&[ev(start, 1), ev(april(13, 0), 2)], &c).level, 2);
        assert_eq!(reach(&[ev(start, 1), ev(april(13, 1), 2)], &c).level, 1);
        // the same in autumn: 25 h day, a week after 12:00 local is 11:00 local
        let oct = |d, h| at(if d < 25 { 2 } else { 1 }, 10, d, h, 0);
        assert_eq!(reach(&[ev(oct(21, 12), 1), ev(oct(28, 11), 2)], &c).level, 2);
        assert_eq!(reach(&[ev(oct(21, 12), 1), ev(oct(28, 12), 2)], &c).level, 1);
    }

    #[test]
    fn step_statistics_and_breakdown() {
        let c = FunnelConfig { breakdown_limit: 1, ..cfg(3, DAY, OrderMode::Ordered, vec![]) };
        let p = |id: &str, b: &str, spec: &[(i64, u16, u16)]| PersonEvents {
            person: id.into(),
            breakdown: Some(b.into()),
            events: evs(spec),
        };
        let persons = vec![
            p("a", "de", &[(0, 1, 0), (1, 2, 0), (3, 4, 0)]),
            p("b", "de", &[(0, 1, 0), (3, 2, 0)]),
            p("c", "fr", &[(0, 1, 0)]),
            p("d", "us", &[(0, 2, 0)]),
        ];
        let r = funnel(&persons, &c).unwrap();
        let counts: Vec<u64> = r.total.steps.iter().map(|s| s.count).collect();
        assert_eq!(counts, [3, 2, 1]);
        let s1 = &r.total.steps[1];
        assert_eq!(s1.drop_off, 1);
        assert_eq!(s1.dropped, ["c"]);
        assert_eq!(s1.converted, ["a", "b"]);
        assert!((s1.conversion_from_first - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s1.median_time_to_convert_secs, Some(2.0 * 3600.0));
        assert_eq!(s1.avg_time_to_convert_secs, Some(2.0 * 3600.0));
        let s2 = &r.total.steps[2];
        assert_eq!(s2.median_time_to_convert_secs, Some(2.0 * 3600.0));
        assert!((s2.conversion_from_previous - 0.5).abs() < 1e-9);
        assert_eq!(s2.dropped, ["b"]);
        assert_eq!(r.breakdowns.len(), 2);
        assert_eq!(r.breakdowns[0].breakdown.as_deref(), Some("de"));
        assert_eq!(r.breakdowns[0].steps[2].count, 1);
        assert_eq!(r.breakdowns[1].breakdown.as_deref(), Some(OTHER));
        assert_eq!(r.breakdowns[1].steps[0].count, 1);
        assert_eq!(r.breakdowns[1].steps[0].converted, ["c"]);
    }

    #[test]
    fn validation() {
        assert_eq!(cfg(1, DAY, OrderMode::Ordered, vec![]).validate(), Err(FunnelError::StepCount(1)));
        assert_eq!(cfg(11, DAY, OrderMode::Ordered, vec![]).validate(), Err(FunnelError::StepCount(11)));
        assert_eq!(cfg(2, 0, OrderMode::Ordered, vec![]).validate(), Err(FunnelError::Window));
        let bad = vec![Exclusion { from: 1, to: 1 }];
        assert_eq!(cfg(3, DAY, OrderMode::Ordered, bad).validate(), Err(FunnelError::ExclusionSteps(0)));
        let bad = vec![Exclusion { from: 1, to: 3 }];
        assert_eq!(cfg(3, DAY, OrderMode::Ordered, bad).validate(), Err(FunnelError::ExclusionSteps(0)));
        let ok = vec![Exclusion { from: 0, to: 1 }];
        assert_eq!(cfg(3, DAY, OrderMode::AnyOrder, ok).validate(), Err(FunnelError::ExclusionInAnyOrder));
    }

    // ---- the oracle: brute force over every chain of positions ----

    /// Whether a chain of positions is a valid attempt, straight from the definitions in the module docs.
    fn valid_chain(events: &[FunnelEvent], c: &FunnelConfig, chain: &[usize]) -> bool {
        let k = chain.len();
        if k == 0 {
            return true;
        }
        for (j, &p) in chain.iter().enumerate() {
            if events[p].steps & (1 << j) == 0 {
                return false;
            }
            if j > 0 && chain[j - 1] >= p {
                return false;
            }
            if j > 0 && c.mode == OrderMode::Strict && chain[j - 1] + 1 != p {
                return false;
            }
        }
        if events[chain[0]].ts >= c.entry_until || events[chain[k - 1]].ts - events[chain[0]].ts > c.window_ms {
            return false;
        }
        for (e, ex) in c.exclusions.iter().enumerate() {
            if ex.from >= k {
                continue;
            }
            let lo = chain[ex.from];
            let hi = chain[ex.to.min(k - 1)];
            if (lo + 1..hi).any(|q| events[q].exclusions & (1 << e) != 0) {
                return false;
            }
        }
        true
    }

    /// Largest level over all chains, enumerated by depth-first search without pruning beyond validity.
    fn oracle_level(events: &[FunnelEvent], c: &FunnelConfig) -> usize {
        if c.mode == OrderMode::AnyOrder {
            // every window anchored at some event; count the distinct steps seen
            return events
                .iter()
                .filter(|a| a.steps != 0 && a.ts < c.entry_until)
                .map(|a| {
                    (0..c.steps)
                        .filter(|&j| {
                            events.iter().any(|e| e.ts >= a.ts && e.ts - a.ts <= c.window_ms && e.steps & (1 << j) != 0)
                        })
                        .count()
                })
                .max()
                .unwrap_or(0);
        }
        fn dfs(events: &[FunnelEvent], c: &FunnelConfig, chain: &mut Vec<usize>, best: &mut usize) {
            *best = (*best).max(chain.len());
            if chain.len() == c.steps {
                return;
            }
            let from = chain.last().map_or(0, |&p| p + 1);
            for p in from..events.len() {
                chain.push(p);
                if valid_chain(events, c, chain) {
                    dfs(events, c, chain, best);
                }
                chain.pop();
            }
        }
        let mut best = 0;
        dfs(events, c, &mut Vec::new(), &mut best);
        best
    }

    fn arb_events() -> impl Strategy<Value = Vec<FunnelEvent>> {
        // small times so windows, ties and exclusions interact often
        prop::collection::vec((0i64..40, 0u16..16, prop::bool::weighted(0.15)), 0..9).prop_map(|mut v| {
            v.sort_by_key(|e| e.0);
            v.into_iter().map(|(t, steps, ex)| FunnelEvent { ts: t * H, steps, exclusions: u16::from(ex) }).collect()
        })
    }

    fn arb_config() -> impl Strategy<Value = FunnelConfig> {
        (2usize..5, 1i64..30, 0u8..3, prop::option::of((0usize..3, 1usize..4)), prop::option::of(0i64..40)).prop_map(
            |(steps, w, mode, ex, until)| {
                let mode = [OrderMode::Ordered, OrderMode::Strict, OrderMode::AnyOrder][mode as usize];
                let exclusions = match ex {
                    Some((from, len)) if mode != OrderMode::AnyOrder && from + len < steps => {
                        vec![Exclusion { from, to: from + len }]
                    }
                    _ => vec![],
                };
                FunnelConfig { entry_until: until.map_or(i64::MAX, |u| u * H), ..cfg(steps, w * H, mode, exclusions) }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The single pass agrees with brute force, and its witness is a valid attempt.
        #[test]
        fn walk_matches_brute_force(events in arb_events(), c in arb_config()) {
            let r = reach(&events, &c);
            prop_assert_eq!(r.level, oracle_level(&events, &c));
            prop_assert_eq!(r.positions.len(), r.level);
            if c.mode == OrderMode::AnyOrder {
                if let (Some(a), Some(b)) = (r.times.first(), r.times.last()) {
                    prop_assert!(b - a <= c.window_ms);
                }
            } else {
                prop_assert!(valid_chain(&events, &c, &r.positions));
            }
        }

        /// Counts never grow from one step to the next; drop-offs add up; time to convert fits the window.
        #[test]
        fn counts_are_monotone(persons in prop::collection::vec(arb_events(), 0..12), c in arb_config()) {
            let persons: Vec<PersonEvents> = persons.into_iter().enumerate()
                .map(|(i, events)| PersonEvents { person: format!("p{i}"), breakdown: Some(format!("b{}", i % 3)), events })
                .collect();
            let r = funnel(&persons, &c).unwrap();
            for g in std::iter::once(&r.total).chain(&r.breakdowns) {
                for w in g.steps.windows(2) {
                    prop_assert!(w[1].count <= w[0].count);
                    prop_assert_eq!(w[0].count - w[1].count, w[1].drop_off);
                    prop_assert_eq!(w[1].dropped.len() as u64, w[1].drop_off);
                    if let Some(t) = w[1].avg_time_to_convert_secs {
                        prop_assert!(t >= 0.0 && t * 1000.0 <= c.window_ms as f64);
                    }
                }
            }
            let by_group: u64 = r.breakdowns.iter().map(|g| g.steps[0].count).sum();
            prop_assert_eq!(by_group, r.total.steps[0].count);
        }
    }
}
