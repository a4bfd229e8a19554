//! Trends checked against an oracle: a straightforward in-memory implementation over the same
//! generated events (proptest, bounded cases). Events cluster around DST changes and midnights,
//! include identity merges, bots and hostile property values; each case asks for count, unique
//! persons and unique sessions per calendar day (or clock hour) in Europe/Berlin (the project's zone, with the
//! 25-hour 25 October 2026), America/New_York or UTC, with a filter and maybe a breakdown.
//!
//! The oracle takes the person of each distinct id from `person_distinct_ids` (what identity
//! resolution decided at ingest); everything else (day of each event in the zone, filters,
//! ranking, "other", distinct counts) it computes itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::support::TestApp;
use crate::support::{query, send, BOT_UA, BROWSER_UA};

const NAMES: [&str; 3] = ["view", "signup", "buy"];
const PLANS: [&str; 3] = ["free", "pro", "x'; DROP TABLE events; --"];
const ZONES: [Option<&str>; 3] = [None, Some("America/New_York"), Some("UTC")];
const PROJECT_TZ: &str = "Europe/Berlin";

/// Days asked for (inclusive), in the query's zone.
fn days() -> Vec<NaiveDate> {
    (23..=27).map(|d| NaiveDate::from_ymd_opt(2026, 10, d).unwrap()).collect()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Instants events cluster around: midnights in the three zones, and Berlin's DST change.
fn boundaries() -> Vec<DateTime<Utc>> {
    let mut out = vec![t("2026-10-25T01:00:00Z")];
    for zone in ["Europe/Berlin", "America/New_York", "UTC"] {
        let tz: Tz = zone.parse().unwrap();
        for d in 22..=28 {
            let day = NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
            out.push(nexus_origin::query::time::day_start(&tz, day));
        }
    }
    out
}

#[derive(Debug, Clone)]
struct GenEvent {
    at: DateTime<Utc>,
    anon: u8,
    user: Option<u8>,
    identify: bool,
    session: Option<u8>,
    name: usize,
    plan: Option<usize>,
    amount: Option<i32>,
    bot: bool,
}

impl GenEvent {
    fn distinct_id(&self) -> String {
        match self.user {
            Some(u) => format!("user-{u}"),
            None => format!("anon-{}", self.anon),
        }
    }

    fn json(&self) -> Value {
        let mut props = serde_json::Map::new();
        if let Some(p) = self.plan {
            props.insert("plan".into(), json!(PLANS[p]));
        }
        if let Some(a) = self.amount {
            props.insert("amount".into(), json!(a));
        }
        let mut e = json!({
            "id": uuid::Uuid::now_v7(),
            "type": if self.identify { "identify" } else { "track" },
            "name": NAMES[self.name],
            "anonymous_id": format!("anon-{}", self.anon),
            "timestamp": self.at.to_rfc3339(),
            "properties": props,
        });
        if let Some(u) = self.user {
            e["user_id"] = json!(format!("user-{u}"));
        }
        if let Some(s) = self.session {
            e["session_id"] = json!(format!("s-{s}"));
        }
        e
    }
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    let start = t("2026-10-22T12:00:00Z");
    let span = (t("2026-10-28T12:00:00Z") - start).num_seconds();
    let b = boundaries();
    let at = prop_oneof![
        (0..span).prop_map(move |s| start + Duration::seconds(s)),
        (0..b.len(), -5400i64..5400).prop_map(move |(i, d)| b[i] + Duration::seconds(d)),
    ];
    (
        at,
        0u8..6,
        prop::option::of(0u8..3),
        prop::bool::weighted(0.2),
        prop::option::of(0u8..6),
        0usize..3,
        prop::option::of(0usize..3),
        prop::option::of(0i32..100),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(at, anon, user, identify, session, name, plan, amount, bot)| GenEvent {
            at,
            anon,
            identify: identify && user.is_some(),
            user,
            session,
            name,
            plan,
            amount,
            bot,
        })
}

#[derive(Debug, Clone)]
struct GenQuery {
    filter: usize,
    breakdown: bool,
    zone: usize,
    first_metric: usize,
    hourly: bool,
}

const METRICS: [&str; 3] = ["count", "unique_persons", "unique_sessions"];

fn filter_json(i: usize) -> Value {
    match i {
        0 => Value::Null,
        1 => json!({"field": "event.name", "op": "eq", "value": "signup"}),
        2 => json!({"field": "event.properties.plan", "op": "eq", "value": PLANS[2]}),
        3 => {
            json!({"or": [{"field": "event.name", "op": "eq", "value": "buy"}, {"field": "event.properties.plan", "op": "is_not_set"}]})
        }
        4 => json!({"not": {"field": "event.properties.plan", "op": "neq", "value": "pro"}}),
        _ => json!({"and": [{"field": "event.properties.amount", "op": "gt", "value": 50},
                            {"field": "event.name", "op": "neq", "value": "view"},
                            {"field": "event.properties.plan", "op": "contains", "value": "r"}]}),
    }
}

/// The oracle's reading of [`filter_json`].
fn matches(i: usize, e: &GenEvent) -> bool {
    let plan = e.plan.map(|p| PLANS[p]);
    match i {
        0 => true,
        1 => NAMES[e.name] == "signup",
        2 => plan == Some(PLANS[2]),
        3 => NAMES[e.name] == "buy" || plan.is_none(),
        4 => plan == Some("pro"),
        _ => e.amount.is_some_and(|a| a > 50) && NAMES[e.name] != "view" && plan.is_some_and(|p| p.contains('r')),
    }
}

/// Per day: events, persons, sessions.
#[derive(Default, Clone)]
struct Acc {
    count: i64,
    persons: BTreeSet<String>,
    sessions: BTreeSet<String>,
}

impl Acc {
    fn metric(&self, m: &str) -> i64 {
        match m {
            "count" => self.count,
            "unique_persons" => self.persons.len() as i64,
            _ => self.sessions.len() as i64,
        }
    }
    fn add(&mut self, o: &Acc) {
        self.count += o.count;
        self.persons.extend(o.persons.iter().cloned());
        self.sessions.extend(o.sessions.iter().cloned());
    }
}

type Key = Option<(Option<String>, bool)>;

/// How the oracle buckets: calendar days, clock hours, or the whole range as one bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Buckets {
    Days,
    Hours,
    Whole,
}

/// The range asked for, in the query's zone: 23 to 27 October inclusive.
fn range_of(tz: &Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = days()[0];
    let end = first + Duration::days(5);
    (nexus_origin::query::time::day_start(tz, first), nexus_origin::query::time::day_start(tz, end))
}

/// The bucket of an instant, computed the plain way: its local date; or, since the three zones
/// have whole-hour offsets, its UTC hour counted from the start of the range.
fn bucket_of(mode: Buckets, tz: &Tz, at: DateTime<Utc>) -> Option<usize> {
    let (from, to) = range_of(tz);
    if at < from || at >= to {
        return None;
    }
    match mode {
        Buckets::Days => days().iter().position(|d| *d == at.with_timezone(tz).date_naive()),
        Buckets::Hours => usize::try_from((at - from).num_seconds() / 3600).ok(),
        Buckets::Whole => Some(0),
    }
}

fn bucket_count(mode: Buckets, tz: &Tz) -> usize {
    let (from, to) = range_of(tz);
    match mode {
        Buckets::Days => days().len(),
        Buckets::Hours => usize::try_from((to - from).num_hours()).unwrap(),
        Buckets::Whole => 1,
    }
}

/// The expected series: (breakdown key, metric -> per-bucket values), in the answer's order.
fn oracle(
    events: &[GenEvent],
    q: &GenQuery,
    person_of: &HashMap<String, String>,
    mode: Buckets,
    breakdown: bool,
) -> Vec<(Key, BTreeMap<String, Vec<i64>>)> {
    let tz: Tz = ZONES[q.zone].unwrap_or(PROJECT_TZ).parse().unwrap();
    let n = bucket_count(mode, &tz);
    let mut groups: BTreeMap<Option<String>, Vec<Acc>> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.bot && matches(q.filter, e)) {
        let Some(bucket) = bucket_of(mode, &tz, e.at) else { continue };
        let group = if breakdown { e.plan.map(|p| PLANS[p].to_owned()) } else { None };
        let acc = &mut groups.entry(group).or_insert_with(|| vec![Acc::default(); n])[bucket];
        acc.count += 1;
        let d = e.distinct_id();
        acc.persons.insert(person_of.get(&d).map(|p| format!("p:{p}")).unwrap_or(format!("d:{d}")));
        if let Some(s) = e.session {
            acc.sessions.insert(format!("s-{s}"));
        }
    }
    let first = METRICS[q.first_metric];
    let metrics: Vec<&str> = (0..3).map(|i| METRICS[(q.first_metric + i) % 3]).collect();
    let render = |accs: &[Acc]| -> BTreeMap<String, Vec<i64>> {
        metrics.iter().map(|m| (m.to_string(), accs.iter().map(|a| a.metric(m)).collect())).collect()
    };
    if !breakdown {
        let accs = groups.remove(&None).unwrap_or_else(|| vec![Acc::default(); n]);
        return vec![(None, render(&accs))];
    }
    // Rank by the first metric over the whole range; ties by value (bytes), unset last.
    let mut ranked: Vec<(i64, Option<String>)> = groups
        .iter()
        .map(|(k, accs)| {
            let mut total = Acc::default();
            accs.iter().for_each(|a| total.add(a));
            (total.metric(first), k.clone())
        })
        .collect();
    ranked.sort_by(|(m1, k1), (m2, k2)| {
        m2.cmp(m1).then_with(|| match (k1, k2) {
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
    });
    let top: Vec<Option<String>> = ranked.iter().take(2).map(|(_, k)| k.clone()).collect();
    let mut out: Vec<(Key, BTreeMap<String, Vec<i64>>)> =
        top.iter().map(|k| (Some((k.clone(), false)), render(&groups[k]))).collect();
    let rest: Vec<&Vec<Acc>> = groups.iter().filter(|(k, _)| !top.contains(k)).map(|(_, v)| v).collect();
    if !rest.is_empty() {
        let mut other = vec![Acc::default(); n];
        for accs in rest {
            for (o, a) in other.iter_mut().zip(accs) {
                o.add(a);
            }
        }
        out.push((Some((None, true)), render(&other)));
    }
    out
}

fn answer_series(v: &Value) -> Vec<(Key, BTreeMap<String, Vec<i64>>)> {
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key =
                s.get("breakdown").map(|b| (b["value"].as_str().map(str::to_owned), b["other"].as_bool().unwrap()));
            let metrics = s["metrics"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, vals)| (k.clone(), vals.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()))
                .collect();
            (key, metrics)
        })
        .collect()
}

fn totals(m: &Value) -> BTreeMap<String, Vec<i64>> {
    m.as_object().unwrap().iter().map(|(k, x)| (k.clone(), vec![x.as_i64().unwrap()])).collect()
}

async fn check_case(app: &TestApp, events: &[GenEvent], q: &GenQuery) -> Result<(), TestCaseError> {
    let p = nexus_origin::store::projects::create_project(&app.pool, "oracle", PROJECT_TZ, &[]).await.unwrap();
    let (bots, humans): (Vec<&GenEvent>, Vec<&GenEvent>) = events.iter().partition(|e| e.bot);
    if !humans.is_empty() {
        send(app, &p.write_key, &humans.iter().map(|e| e.json()).collect::<Vec<_>>(), BROWSER_UA).await;
    }
    if !bots.is_empty() {
        send(app, &p.write_key, &bots.iter().map(|e| e.json()).collect::<Vec<_>>(), BOT_UA).await;
    }
    let client = app.pool.get().await.unwrap();
    let person_of: HashMap<String, String> = client
        .query("SELECT distinct_id, person_id::text FROM person_distinct_ids WHERE project_id = $1", &[&p.project_id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mode = if q.hourly { Buckets::Hours } else { Buckets::Days };
    let mut body = json!({
        "date_range": {"from": "2026-10-23", "to": "2026-10-27"},
        "interval": if q.hourly { "hour" } else { "day" },
        "metrics": (0..3).map(|i| METRICS[(q.first_metric + i) % 3]).collect::<Vec<_>>(),
    });
    if let Some(z) = ZONES[q.zone] {
        body["timezone"] = json!(z);
    }
    let f = filter_json(q.filter);
    if !f.is_null() {
        body["filters"] = f;
    }
    if q.breakdown {
        body["breakdown"] = json!({"field": "event.properties.plan", "limit": 2});
    }
    let (status, v) = query(app, "/v1/query/trends", &p.read_key, &body).await;
    prop_assert_eq!(status, 200, "{}", v);
    let labels: Vec<String> =
        v["buckets"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_owned()).collect();
    let tz: Tz = ZONES[q.zone].unwrap_or(PROJECT_TZ).parse().unwrap();
    if q.hourly {
        prop_assert_eq!(labels.len(), bucket_count(Buckets::Hours, &tz));
    } else {
        prop_assert_eq!(labels, days().iter().map(|d| d.to_string()).collect::<Vec<_>>());
    }
    let expected = oracle(events, q, &person_of, mode, q.breakdown);
    prop_assert_eq!(answer_series(&v), expected, "query {} answered {}", body, v);

    // The same events as a top list of plans over the whole range.
    let mut top = body.clone();
    let obj = top.as_object_mut().unwrap();
    obj.remove("interval");
    obj.remove("breakdown");
    obj.insert("dimension".into(), json!("event.properties.plan"));
    obj.insert("limit".into(), json!(2));
    let (status, v) = query(app, "/v1/query/top", &p.read_key, &top).await;
    prop_assert_eq!(status, 200, "{}", v);
    let expected = oracle(events, q, &person_of, Buckets::Whole, true);
    let mut got: Vec<(Key, BTreeMap<String, Vec<i64>>)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (Some((r["value"].as_str().map(str::to_owned), false)), totals(&r["metrics"])))
        .collect();
    if let Some(o) = v.get("other") {
        got.push((Some((None, true)), totals(o)));
    }
    prop_assert_eq!(got, expected, "top {} answered {}", top, v);

    // Property aggregates and session metrics per day.
    let mut metrics: Vec<Value> = AGG_METRICS.iter().map(|m| json!(m)).collect();
    for op in ["sum", "avg", "min", "max", "p50", "p90", "p99"] {
        metrics.push(json!({"op": op, "field": "event.properties.amount"}));
    }
    let mut aggs = json!({"date_range": body["date_range"], "interval": "day", "metrics": metrics});
    if let Some(z) = ZONES[q.zone] {
        aggs["timezone"] = json!(z);
    }
    let (status, v) = query(app, "/v1/query/trends", &p.read_key, &aggs).await;
    prop_assert_eq!(status, 200, "{}", v);
    let expected = aggregates_oracle(events, &tz);
    for (name, want) in &expected {
        let got = v["series"][0]["metrics"][name.as_str()].as_array().unwrap();
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let same = match (g.as_f64(), w) {
                (None, None) => g.is_null(),
                (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                _ => false,
            };
            prop_assert!(same, "{}: got {:?}, want {:?}; answer {}", name, got, want, v);
        }
    }
    Ok(())
}

const AGG_METRICS: [&str; 3] = ["visits", "bounce_rate", "avg_duration"];

/// Percentile with linear interpolation between closest ranks (as PostgreSQL's `percentile_cont`).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Per day: aggregates of `amount` over human events, and session metrics over human sessions
/// (a session with any bot event is a bot's), sessions bucketed by their first event.
fn aggregates_oracle(events: &[GenEvent], tz: &Tz) -> BTreeMap<String, Vec<Option<f64>>> {
    let n = bucket_count(Buckets::Days, tz);
    let mut amounts: Vec<Vec<f64>> = vec![Vec::new(); n];
    for e in events.iter().filter(|e| !e.bot) {
        if let (Some(b), Some(a)) = (bucket_of(Buckets::Days, tz, e.at), e.amount) {
            amounts[b].push(f64::from(a));
        }
    }
    let mut sessions: BTreeMap<u8, Vec<&GenEvent>> = BTreeMap::new();
    for e in events {
        if let Some(s) = e.session {
            sessions.entry(s).or_default().push(e);
        }
    }
    let mut per_day: Vec<Vec<(bool, f64)>> = vec![Vec::new(); n];
    for evs in sessions.values() {
        if evs.iter().any(|e| e.bot) {
            continue;
        }
        let start = evs.iter().map(|e| e.at).min().unwrap();
        let end = evs.iter().map(|e| e.at).max().unwrap();
        if let Some(b) = bucket_of(Buckets::Days, tz, start) {
            per_day[b].push((evs.len() <= 1, (end - start).num_milliseconds() as f64 / 1000.0));
        }
    }
    let mean = |xs: Vec<f64>| if xs.is_empty() { None } else { Some(xs.iter().sum::<f64>() / xs.len() as f64) };
    let mut out: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for (b, xs) in amounts.iter_mut().enumerate() {
        xs.sort_by(f64::total_cmp);
        let mut put = |k: &str, v: Option<f64>| out.entry(k.to_owned()).or_insert_with(|| vec![None; n])[b] = v;
        put("sum", Some(xs.iter().sum()));
        put("avg", mean(xs.clone()));
        put("min", xs.first().copied());
        put("max", xs.last().copied());
        put("p50", percentile(xs, 0.5));
        put("p90", percentile(xs, 0.9));
        put("p99", percentile(xs, 0.99));
        let day = &per_day[b];
        put("visits", Some(day.len() as f64));
        put("bounce_rate", mean(day.iter().map(|(bounce, _)| if *bounce { 1.0 } else { 0.0 }).collect()));
        put("avg_duration", mean(day.iter().map(|(_, d)| *d).collect()));
    }
    out.into_iter()
        .map(|(k, v)| {
            let name = if AGG_METRICS.contains(&k.as_str()) { k } else { format!("{k}(event.properties.amount)") };
            (name, v)
        })
        .collect()
}

#[test]
fn trends_match_the_oracle() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::start("query_oracle"));
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    let queries = (0usize..6, any::<bool>(), 0usize..3, 0usize..3, prop::bool::weighted(0.25)).prop_map(
        |(filter, breakdown, zone, first_metric, hourly)| GenQuery { filter, breakdown, zone, first_metric, hourly },
    );
    let strategy = (prop::collection::vec(gen_event(), 0..80), queries);
    runner.run(&strategy, |(events, q)| rt.block_on(check_case(&app, &events, &q))).unwrap();
}
