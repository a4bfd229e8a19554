//! Cohorts through the real HTTP stack on PostgreSQL: behavioural, static and combined cohorts
//! whose materialised members equal an in-memory computation over generated events (identity
//! merges and bots included); trends filtered and broken down by cohort equal the oracle; a
//! refresh after new events moves membership; definitions are validated naming the field; and a
//! project's keys never see another project's cohorts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{get, query, send, BOT_UA, BROWSER_UA};
use crate::support::{read, TestApp};

/// One generated event: person label, name, time, amount, bot.
#[derive(Debug, Clone)]
struct Ev {
    person: usize,
    name: &'static str,
    ts: DateTime<Utc>,
    amount: i64,
    bot: bool,
}

const PERSONS: usize = 40;
const PLANS: [&str; 3] = ["free", "pro", "team"];

/// Person `i` sends as `u{i}`; every fourth one first as `a{i}`, merged into `u{i}` by identify.
fn distinct_id(i: usize, anon: bool) -> String {
    if anon && i.is_multiple_of(4) {
        format!("a{i}")
    } else {
        format!("u{i}")
    }
}

fn plan(i: usize) -> Option<&'static str> {
    (i % 5 != 4).then(|| PLANS[i % 3])
}

fn wire(e: &Ev, anon: bool) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(), "type": "track", "name": e.name, "anonymous_id": distinct_id(e.person, anon),
        "timestamp": e.ts.to_rfc3339(), "properties": {"amount": e.amount},
        "context": {"url": "https://shop.test/", "path": "/"},
    })
}

/// Events over the last 60 days, each at `n days + 12 hours` ago: no event is within 12 hours of
/// a whole-day look-back boundary, so the refresh's own `now` cannot move one across.
fn generate(rng: &mut StdRng, now: DateTime<Utc>) -> Vec<(Ev, bool)> {
    let mut out = Vec::new();
    for person in 0..PERSONS {
        // Person 1 only ever buys as a bot (below): bots must not make a buyer.
        let n = if person == 1 { 0 } else { rng.random_range(0..15) };
        for _ in 0..n {
            let ev = Ev {
                person,
                name: if rng.random_bool(0.5) { "buy" } else { "view" },
                ts: now - Duration::days(rng.random_range(0..60)) - Duration::hours(12),
                amount: rng.random_range(1..100),
                bot: false,
            };
            out.push((ev, rng.random_bool(0.5)));
        }
    }
    out
}

async fn send_all(app: &TestApp, write_key: &str, events: &[(Ev, bool)]) {
    let human: Vec<Value> = events.iter().filter(|(e, _)| !e.bot).map(|(e, a)| wire(e, *a)).collect();
    let bots: Vec<Value> = events.iter().filter(|(e, _)| e.bot).map(|(e, a)| wire(e, *a)).collect();
    send(app, write_key, &human, BROWSER_UA).await;
    if !bots.is_empty() {
        send(app, write_key, &bots, BOT_UA).await;
    }
}

/// Identifies every person (merging `a{i}` into `u{i}`) and sets its plan.
async fn identify_all(app: &TestApp, write_key: &str) {
    let events: Vec<Value> = (0..PERSONS)
        .map(|i| {
            let mut e = json!({"id": uuid::Uuid::now_v7(), "type": "identify", "name": "$identify",
                               "user_id": format!("u{i}"), "timestamp": Utc::now().to_rfc3339()});
            if i.is_multiple_of(4) {
                e["anonymous_id"] = json!(format!("a{i}"));
            }
            if let Some(p) = plan(i) {
                e["set"] = json!({ "plan": p });
            }
            e
        })
        .collect();
    send(app, write_key, &events, BROWSER_UA).await;
}

/// The in-memory rules, mirroring the JSON definitions below.
fn did(events: &[Ev], now: DateTime<Utc>, name: &str, days: i64, at_least: usize, min_amount: i64) -> BTreeSet<usize> {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for e in events {
        if e.name == name && !e.bot && e.ts >= now - Duration::days(days) && e.amount > min_amount {
            *counts.entry(e.person).or_default() += 1;
        }
    }
    counts.into_iter().filter(|(_, n)| *n >= at_least).map(|(p, _)| p).collect()
}

fn all_persons() -> BTreeSet<usize> {
    (0..PERSONS).collect()
}

fn def_buyers() -> Value {
    json!({"did_event": {"name": "buy", "at_least": 2, "in_last_days": 30,
                         "filters": {"field": "event.properties.amount", "op": "gt", "value": 20}}})
}

fn def_pro() -> Value {
    json!({"person": {"field": "person.properties.plan", "op": "eq", "value": "pro"}})
}

fn def_combined() -> Value {
    json!({"or": [def_buyers(), {"and": [def_pro(), {"not": {"did_event": {"name": "view", "in_last_days": 7}}}]}]})
}

fn def_static() -> Value {
    json!({"distinct_ids": ["a0", "u3", "u3", "u7", "nobody-yet"]})
}

fn oracle_buyers(events: &[Ev], now: DateTime<Utc>) -> BTreeSet<usize> {
    did(events, now, "buy", 30, 2, 20)
}

fn oracle_pro() -> BTreeSet<usize> {
    all_persons().into_iter().filter(|&i| plan(i) == Some("pro")).collect()
}

fn oracle_combined(events: &[Ev], now: DateTime<Utc>) -> BTreeSet<usize> {
    let viewers = did(events, now, "view", 7, 1, i64::MIN);
    let pro_not_viewing: BTreeSet<usize> = oracle_pro().difference(&viewers).copied().collect();
    oracle_buyers(events, now).union(&pro_not_viewing).copied().collect()
}

fn oracle_static() -> BTreeSet<usize> {
    [0, 3, 7].into_iter().collect()
}

/// The stored members of a cohort as person labels (and their number of rows).
async fn members(app: &TestApp, project_id: i64, cohort_id: i64) -> (BTreeSet<usize>, i64) {
    let client = app.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT pd.distinct_id FROM cohort_members cm JOIN person_distinct_ids pd
               ON pd.project_id = cm.project_id AND 'p:' || pd.person_id::text = cm.person_key
             WHERE cm.project_id = $1 AND cm.cohort_id = $2",
            &[&project_id, &cohort_id],
        )
        .await
        .unwrap();
    let labels = rows.iter().map(|r| r.get::<_, String>(0)[1..].parse::<usize>().unwrap()).collect();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM cohort_members WHERE project_id = $1 AND cohort_id = $2",
            &[&project_id, &cohort_id],
        )
        .await
        .unwrap()
        .get(0);
    (labels, n)
}

async fn create(app: &TestApp, admin_key: &str, name: &str, definition: Value) -> (u16, Value) {
    let res = app
        .http
        .post(app.url("/v1/cohorts"))
        .header("authorization", format!("Bearer {admin_key}"))
        .body(json!({"name": name, "definition": definition}).to_string())
        .send()
        .await
        .unwrap();
    read(res).await
}

async fn created(app: &TestApp, admin_key: &str, name: &str, definition: Value) -> i64 {
    let (s, v) = create(app, admin_key, name, definition).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

/// Daily counts and unique persons of `buy`/`view` events of `persons`, over the UTC dates of `days`.
fn oracle_daily(events: &[Ev], persons: &BTreeSet<usize>, days: &[chrono::NaiveDate]) -> (Vec<i64>, Vec<i64>) {
    let mut count = vec![0i64; days.len()];
    let mut uniq: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); days.len()];
    for e in events.iter().filter(|e| !e.bot && persons.contains(&e.person)) {
        if let Some(i) = days.iter().position(|d| *d == e.ts.date_naive()) {
            count[i] += 1;
            uniq[i].insert(e.person);
        }
    }
    (count, uniq.iter().map(|s| s.len() as i64).collect())
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[tokio::test]
async fn cohorts_match_the_oracle_filter_and_break_down_trends_and_refresh() {
    let app = TestApp::start("cohorts_oracle").await;
    let p = app.project.clone();
    let mut rng = StdRng::seed_from_u64(6);
    let now = Utc::now();
    let generated = generate(&mut rng, now);
    let mut bots: Vec<(Ev, bool)> = (0..5)
        .map(|_| (Ev { person: 1, name: "buy", ts: now - Duration::days(1), amount: 90, bot: true }, false))
        .collect();
    send_all(&app, &p.write_key, &generated).await;
    send_all(&app, &p.write_key, &bots).await;
    identify_all(&app, &p.write_key).await;
    let mut events: Vec<Ev> = generated.iter().map(|(e, _)| e.clone()).collect();
    events.extend(bots.drain(..).map(|(e, _)| e));

    assert!(did(&events.iter().map(|e| Ev { bot: false, ..e.clone() }).collect::<Vec<_>>(), now, "buy", 30, 2, 20)
        .contains(&1));
    assert!(!oracle_buyers(&events, now).contains(&1));
    let buyers = created(&app, &p.admin_key, "Buyers", def_buyers()).await;
    let pro = created(&app, &p.admin_key, "Pro", def_pro()).await;
    let combined = created(&app, &p.admin_key, "Buyers or quiet pros", def_combined()).await;
    let fixed = created(&app, &p.admin_key, "Hand-picked", def_static()).await;

    let expected = [
        (buyers, oracle_buyers(&events, now)),
        (pro, oracle_pro()),
        (combined, oracle_combined(&events, now)),
        (fixed, oracle_static()),
    ];
    for (id, want) in &expected {
        let (got, rows) = members(&app, p.project_id, *id).await;
        assert_eq!(&got, want, "cohort {id}");
        assert_eq!(rows, want.len() as i64, "one row per person, cohort {id}");
        assert!(want.len() >= 3 && want.len() < PERSONS, "a cohort that tells something, cohort {id}: {want:?}");
    }
    // The answers count the same members.
    let (s, v) = get(&app, &format!("/v1/cohorts/{fixed}"), &p.read_key).await;
    assert_eq!((s, v["kind"].as_str(), v["members"].as_i64()), (200, Some("static"), Some(3)), "{v}");
    let (s, v) = get(&app, "/v1/cohorts", &p.read_key).await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = v["cohorts"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["behavioural", "behavioural", "behavioural", "static"]);

    // Trends filtered by a cohort, and broken down by cohort, against the oracle.
    let first = (now - Duration::days(61)).date_naive();
    let days: Vec<chrono::NaiveDate> = first.iter_days().take_while(|d| *d <= now.date_naive()).collect();
    let range = json!({"from": first.to_string(), "to": now.date_naive().to_string()});
    let names = json!({"field": "event.name", "op": "eq", "value": ["buy", "view"]});
    for (id, want) in &expected {
        let q = json!({"date_range": range, "metrics": ["count", "unique_persons"],
                       "filters": {"and": [names, {"field": "person.cohort", "op": "eq", "value": id}]}});
        let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
        assert_eq!(s, 200, "{v}");
        let (count, uniq) = oracle_daily(&events, want, &days);
        assert_eq!(ints(&v["series"][0]["metrics"]["count"]), count, "cohort {id}");
        assert_eq!(ints(&v["series"][0]["metrics"]["unique_persons"]), uniq, "cohort {id}");
        // neq: everyone else.
        let q = json!({"date_range": range, "metrics": ["count"],
                       "filters": {"and": [names, {"field": "person.cohort", "op": "neq", "value": id}]}});
        let (_, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
        let rest: BTreeSet<usize> = all_persons().difference(want).copied().collect();
        assert_eq!(ints(&v["series"][0]["metrics"]["count"]), oracle_daily(&events, &rest, &days).0, "neq {id}");
    }
    let q = json!({"date_range": range, "metrics": ["count", "unique_persons"], "filters": names,
                   "breakdown": {"field": "person.cohort", "limit": 10}});
    let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
    assert_eq!(s, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), expected.len() + 1, "four cohorts and the persons in none: {v}");
    let in_any: BTreeSet<usize> = expected.iter().flat_map(|(_, w)| w.iter().copied()).collect();
    let in_none: BTreeSet<usize> = all_persons().difference(&in_any).copied().collect();
    for s in series {
        assert_eq!(s["breakdown"]["other"], false);
        let want = match s["breakdown"]["value"].as_str() {
            Some(id) => &expected.iter().find(|(c, _)| c.to_string() == id).unwrap().1,
            None => &in_none,
        };
        let (count, uniq) = oracle_daily(&events, want, &days);
        assert_eq!(ints(&s["metrics"]["count"]), count, "{}", s["breakdown"]);
        assert_eq!(ints(&s["metrics"]["unique_persons"]), uniq, "{}", s["breakdown"]);
    }
    // Top cohorts by persons over the range.
    let q = json!({"date_range": range, "dimension": "person.cohort", "metrics": ["unique_persons"], "limit": 2,
                   "filters": names});
    let (s, v) = query(&app, "/v1/query/top", &p.read_key, &q).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "{v}");

    // New events: a person outside Buyers buys twice; the next refresh lets them in.
    let outsider = (0..PERSONS).find(|i| !expected[0].1.contains(i)).unwrap();
    let late: Vec<(Ev, bool)> =
        (0..2).map(|_| (Ev { person: outsider, name: "buy", ts: Utc::now(), amount: 50, bot: false }, false)).collect();
    send_all(&app, &p.write_key, &late).await;
    assert!(!members(&app, p.project_id, buyers).await.0.contains(&outsider), "not before the refresh");
    let refreshed = nexus_origin::store::cohorts::refresh_all(&app.pool).await.unwrap();
    assert_eq!(refreshed, 4);
    events.extend(late.into_iter().map(|(e, _)| e));
    let now = Utc::now();
    assert!(members(&app, p.project_id, buyers).await.0.contains(&outsider));
    assert_eq!(members(&app, p.project_id, buyers).await.0, oracle_buyers(&events, now));
    assert_eq!(members(&app, p.project_id, combined).await.0, oracle_combined(&events, now));

    let res = app
        .http
        .post(app.url(&format!("/v1/cohorts/{buyers}/refresh")))
        .header("authorization", format!("Bearer {}", p.admin_key))
        .send()
        .await
        .unwrap();
    let (s, v) = read(res).await;
    assert_eq!((s, v["members"].as_i64()), (200, Some(oracle_buyers(&events, now).len() as i64)), "{v}");

    // The background job refreshes too (it is due right after the migration).
    let ran = nexus_origin::jobs::run_due(&app.pool, "test").await.unwrap();
    assert!(ran.contains(&nexus_origin::jobs::Job::RefreshCohorts), "{ran:?}");

    // Deleting a cohort removes its members.
    let res = app
        .http
        .delete(app.url(&format!("/v1/cohorts/{pro}")))
        .header("authorization", format!("Bearer {}", p.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(members(&app, p.project_id, pro).await.1, 0);
    assert_eq!(get(&app, &format!("/v1/cohorts/{pro}"), &p.read_key).await.0, 404);
}

#[tokio::test]
async fn definitions_are_validated_and_keys_scoped() {
    let app = TestApp::start("cohorts_validation").await;
    let p = app.project.clone();
    let field_of = |v: &Value| v["error"]["details"]["field"].as_str().unwrap_or("<none>").to_owned();
    let cases = [
        (json!({"did_event": {"name": "buy"}}), "definition.did_event.in_last_days"),
        (json!({"and": [def_pro(), {"maybe": 1}]}), "definition.and[1].maybe"),
        (json!({"person": {"field": "person.properties.plan", "op": "gt", "value": "x"}}), "definition.person.value"),
        (json!({"distinct_ids": [1]}), "definition.distinct_ids[0]"),
    ];
    for (def, field) in cases {
        let (s, v) = create(&app, &p.admin_key, "x", def.clone()).await;
        assert_eq!((s, field_of(&v)), (400, field.to_owned()), "{def}: {v}");
    }
    let res = app
        .http
        .post(app.url("/v1/cohorts"))
        .header("authorization", format!("Bearer {}", p.admin_key))
        .body(json!({"name": "x", "definition": def_pro(), "owner": "me"}).to_string())
        .send()
        .await
        .unwrap();
    let (s, v) = read(res).await;
    assert_eq!((s, field_of(&v)), (400, "owner".to_owned()), "{v}");
    let (s, v) = create(&app, &p.admin_key, "", def_pro()).await;
    assert_eq!((s, field_of(&v)), (400, "name".to_owned()), "{v}");
    // Writing needs the admin key; reading takes the read key.
    let (s, v) = create(&app, &p.read_key, "x", def_pro()).await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = create(&app, &p.write_key, "x", def_pro()).await;
    assert_eq!(s, 403);
    let (s, _) = get(&app, "/v1/cohorts", &p.write_key).await;
    assert_eq!(s, 403);
    // Queries: bad cohort conditions name the field.
    let q = json!({"date_range": "last_7_days", "filters": {"field": "person.cohort", "op": "contains", "value": 1}});
    let (s, v) = query(&app, "/v1/query/trends", &p.read_key, &q).await;
    assert_eq!((s, field_of(&v)), (400, "filters.op".to_owned()), "{v}");
    let q = json!({"date_range": "last_7_days", "steps": [{"name": "a"}, {"name": "b"}],
                   "breakdown": {"field": "person.cohort"}});
    let (s, v) = query(&app, "/v1/query/funnel", &p.read_key, &q).await;
    assert_eq!((s, field_of(&v)), (400, "breakdown.field".to_owned()), "{v}");
}

#[tokio::test]
async fn a_read_key_never_sees_another_projects_cohorts() {
    let app = TestApp::start("cohorts_tenants").await;
    let a = app.project.clone();
    let b = nexus_origin::store::projects::create_project(&app.pool, "B", "UTC", &[]).await.unwrap();
    let now = Utc::now();
    let mut rng = StdRng::seed_from_u64(7);
    // The same distinct ids in both projects: persons are per project, so are cohorts.
    let events = generate(&mut rng, now);
    for key in [&a.write_key, &b.write_key] {
        send_all(&app, key, &events).await;
        identify_all(&app, key).await;
    }
    let in_a = created(&app, &a.admin_key, "Pro A", def_pro()).await;
    let in_b = created(&app, &b.admin_key, "Pro B", def_pro()).await;
    assert_eq!(members(&app, b.project_id, in_b).await.0, oracle_pro());

    let (s, v) = get(&app, "/v1/cohorts", &a.read_key).await;
    assert_eq!(s, 200);
    let ids: Vec<i64> = v["cohorts"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [in_a]);
    assert_eq!(get(&app, &format!("/v1/cohorts/{in_b}"), &a.read_key).await.0, 404);
    let res = app
        .http
        .delete(app.url(&format!("/v1/cohorts/{in_b}")))
        .header("authorization", format!("Bearer {}", a.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let res = app
        .http
        .post(app.url(&format!("/v1/cohorts/{in_b}/refresh")))
        .header("authorization", format!("Bearer {}", a.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(members(&app, b.project_id, in_b).await.1, oracle_pro().len() as i64, "B's cohort untouched");

    // Filtering A's events by B's cohort matches nothing; by A's own, A's members only.
    let range =
        json!({"from": (now - Duration::days(61)).date_naive().to_string(), "to": now.date_naive().to_string()});
    let total = |v: &Value| ints(&v["series"][0]["metrics"]["count"]).iter().sum::<i64>();
    let names = json!({"field": "event.name", "op": "eq", "value": ["buy", "view"]});
    let by = |id: i64| {
        json!({"date_range": range,
               "filters": {"and": [names, {"field": "person.cohort", "op": "eq", "value": id}]}})
    };
    let (s, v) = query(&app, "/v1/query/trends", &a.read_key, &by(in_b)).await;
    assert_eq!((s, total(&v)), (200, 0), "{v}");
    let (_, v) = query(&app, "/v1/query/trends", &a.read_key, &by(in_a)).await;
    let evs: Vec<Ev> = events.iter().map(|(e, _)| e.clone()).collect();
    let days: Vec<chrono::NaiveDate> =
        (now - Duration::days(61)).date_naive().iter_days().take_while(|d| *d <= now.date_naive()).collect();
    assert_eq!(total(&v), oracle_daily(&evs, &oracle_pro(), &days).0.iter().sum::<i64>());
    assert!(total(&v) > 0);
    // The filter works in every analysis; B's cohort matches none of A's persons.
    let sticky = |v: &Value| v["rows"].as_array().unwrap().iter().map(|x| x["persons"].as_u64().unwrap()).sum::<u64>();
    let buyers_pro = evs.iter().filter(|e| e.name == "buy" && oracle_pro().contains(&e.person)).map(|e| e.person);
    let buyers_pro = buyers_pro.collect::<BTreeSet<usize>>().len() as u64;
    for (id, want) in [(in_a, buyers_pro), (in_b, 0)] {
        let cohort = json!({"field": "person.cohort", "op": "eq", "value": id});
        let analyses = [
            ("/v1/query/funnel", json!({"steps": [{"name": "view"}, {"name": "buy"}]})),
            ("/v1/query/retention", json!({"start": {"name": "view"}})),
            ("/v1/query/stickiness", json!({"event": {"name": "buy"}})),
            ("/v1/query/lifecycle", json!({"event": {"name": "buy"}})),
            ("/v1/query/paths", json!({"anchor": "/", "steps": 2})),
            ("/v1/query/top", json!({"dimension": "event.name"})),
        ];
        for (path, mut q) in analyses {
            q["date_range"] = range.clone();
            q["filters"] = cohort.clone();
            let (s, v) = query(&app, path, &a.read_key, &q).await;
            assert_eq!(s, 200, "{path}: {v}");
            if path.ends_with("stickiness") {
                assert_eq!(sticky(&v), want, "{v}");
            }
            if path.ends_with("top") {
                assert_eq!(v["rows"].as_array().unwrap().is_empty(), want == 0, "{v}");
            }
        }
    }
    // A breakdown by cohort lists A's cohort only.
    let q = json!({"date_range": range, "breakdown": {"field": "person.cohort"}});
    let (_, v) = query(&app, "/v1/query/trends", &a.read_key, &q).await;
    let groups: BTreeSet<Option<String>> =
        v["series"].as_array().unwrap().iter().map(|s| s["breakdown"]["value"].as_str().map(str::to_owned)).collect();
    assert_eq!(groups, [None, Some(in_a.to_string())].into_iter().collect(), "{v}");
}
