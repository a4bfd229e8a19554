//! Daily rollups: trends and top answers with rollups on (the default) equal the answers over
//! the raw events (`"use_rollups": false`, which `query_oracle` checks against an in-memory
//! oracle) before the job ran, after it, after late events, identity merges and person
//! deletions, in a DST zone, with bots; concurrent job runs never double count; and the query
//! path really reads the rollups (a tampered rollup row shows through until its day is marked).

use chrono::{DateTime, Duration, Utc};
use nexus_origin::store::{self, projects::NewProject, rollups};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::support::{query, send_from, BOT_UA, BROWSER_UA};
use crate::support::{read, TestApp};

/// Client addresses (the test origin trusts 127.0.0.1 as a proxy): countries from the mmdb, and
/// none for the loopback.
const IPS: [&str; 4] = ["1.1.1.1", "8.8.8.8", "81.2.69.142", "127.0.0.1"];
const PATHS: [&str; 4] = ["/", "/pricing", "/docs", "/signup"];
const NAMES: [&str; 3] = ["page", "signup", "purchase"];

/// One generated event.
#[derive(Debug, Clone)]
struct Gen {
    at: DateTime<Utc>,
    anon: u8,
    user: Option<u8>,
    name: usize,
    path: usize,
    ip: usize,
    bot: bool,
}

impl Gen {
    fn json(&self) -> Value {
        let mut e = json!({
            "id": uuid::Uuid::now_v7(),
            "type": if self.name == 0 { "page" } else { "track" },
            "name": NAMES[self.name],
            "anonymous_id": format!("anon-{}", self.anon),
            "timestamp": self.at.to_rfc3339(),
            "context": {"url": format!("https://shop.test{}", PATHS[self.path]), "path": PATHS[self.path]},
        });
        if let Some(u) = self.user {
            e["user_id"] = json!(format!("user-{u}"));
        }
        e
    }
}

/// Sends events grouped by (ip, bot) so each request carries its client address and agent.
async fn send(app: &TestApp, p: &NewProject, events: &[Gen]) {
    for (ip, addr) in IPS.iter().enumerate() {
        for bot in [false, true] {
            let batch: Vec<Value> = events.iter().filter(|e| e.ip == ip && e.bot == bot).map(Gen::json).collect();
            send_from(app, &p.write_key, &batch, if bot { BOT_UA } else { BROWSER_UA }, Some(addr)).await;
        }
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Events from 2026-10-20 to 2026-10-30 (Berlin leaves DST on the 25th), some near midnights.
fn gen_event() -> impl Strategy<Value = Gen> {
    let start = t("2026-10-20T00:00:00Z");
    let span = 10 * 24 * 3600i64;
    let midnights: Vec<DateTime<Utc>> = (0..10).map(|d| t("2026-10-20T22:00:00Z") + Duration::days(d)).collect();
    let at = prop_oneof![
        (0..span).prop_map(move |s| start + Duration::seconds(s)),
        (0..midnights.len(), -7200i64..7200).prop_map(move |(i, d)| midnights[i] + Duration::seconds(d)),
    ];
    (at, 0u8..8, prop::option::of(0u8..3), 0usize..3, 0usize..4, 0usize..4, prop::bool::weighted(0.15))
        .prop_map(|(at, anon, user, name, path, ip, bot)| Gen { at, anon, user, name, path, ip, bot })
}

/// The queries compared: every kind the rollups answer, and a few they do not.
fn queries() -> Vec<(&'static str, Value)> {
    let range = json!({"from": "2026-10-20", "to": "2026-10-30"});
    vec![
        ("trends", json!({"date_range": range, "metrics": ["count", "unique_persons"]})),
        ("trends", json!({"date_range": range, "interval": "week", "metrics": ["unique_persons", "count"]})),
        (
            "trends",
            json!({"date_range": range, "interval": "month", "metrics": ["unique_persons"], "include_bots": true}),
        ),
        (
            "trends",
            json!({"date_range": range, "metrics": ["unique_persons", "count"], "breakdown": {"field": "event.country", "limit": 2}}),
        ),
        (
            "trends",
            json!({"date_range": {"from": "2026-10-25", "to": "2026-10-29"}, "metrics": ["count"], "compare": "previous_period",
                   "breakdown": {"field": "event.path", "limit": 2},
                   "filters": {"field": "event.name", "op": "neq", "value": "purchase"}}),
        ),
        (
            "trends",
            json!({"date_range": range, "metrics": ["count"], "include_bots": true,
                   "filters": {"or": [{"field": "event.is_bot", "op": "eq", "value": true}, {"field": "event.path", "op": "regex", "value": "^/(docs|signup)"}]}}),
        ),
        ("trends", json!({"date_range": range, "metrics": ["count", "visits"]})),
        ("trends", json!({"date_range": range, "interval": "hour", "metrics": ["count"]})),
        ("top", json!({"date_range": range, "dimension": "event.path", "metrics": ["count"]})),
        (
            "top",
            json!({"date_range": range, "dimension": "event.country", "metrics": ["unique_persons", "count"], "limit": 2}),
        ),
        ("top", json!({"date_range": range, "dimension": "event.name", "metrics": ["count"], "include_bots": true})),
        ("top", json!({"date_range": range, "dimension": "event.path"})),
        // The rollup sets' shapes: one event selector, at most one dimension.
        (
            "top",
            json!({"date_range": range, "dimension": "event.path", "limit": 2,
                   "filters": {"field": "event.type", "op": "eq", "value": "page"}}),
        ),
        (
            "trends",
            json!({"date_range": {"from": "2026-10-25", "to": "2026-10-29"}, "interval": "week",
                   "metrics": ["unique_persons", "count"], "compare": "previous_period",
                   "filters": {"field": "event.name", "op": "eq", "value": "signup"}}),
        ),
        (
            "trends",
            json!({"date_range": range, "metrics": ["count", "unique_persons"],
                   "breakdown": {"field": "event.path", "limit": 1},
                   "filters": {"field": "event.type", "op": "eq", "value": "page"}}),
        ),
        ("top", json!({"date_range": range, "dimension": "event.country", "metrics": ["unique_persons"], "limit": 1})),
    ]
}

/// Runs every query with rollups on and off; returns the first difference.
async fn differences(app: &TestApp, p: &NewProject) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, body) in queries() {
        let path = format!("/v1/query/{kind}");
        let (s1, on) = query(app, &path, &p.read_key, &body).await;
        let mut off_body = body.clone();
        off_body["use_rollups"] = json!(false);
        let (s2, off) = query(app, &path, &p.read_key, &off_body).await;
        assert_eq!((s1, s2), (200, 200), "{body}: {on} / {off}");
        if on != off {
            out.push(format!("{kind} {body}:\n  on  {on}\n  off {off}"));
        }
    }
    out
}

async fn assert_same(app: &TestApp, p: &NewProject, when: &str) {
    let d = differences(app, p).await;
    assert!(d.is_empty(), "{when}: rollups differ from raw events:\n{}", d.join("\n"));
}

async fn berlin(app: &TestApp, name: &str) -> NewProject {
    store::projects::create_project(&app.pool, name, "Europe/Berlin", &[]).await.unwrap()
}

async fn one(app: &TestApp, sql: &str, project_id: i64) -> i64 {
    app.pool.get().await.unwrap().query_one(sql, &[&project_id]).await.unwrap().get(0)
}

/// Deterministic events for the scenario tests (a fixed proptest seed would do too; this is plainer).
fn fixed_events(n: usize, seed: u64) -> Vec<Gen> {
    let mut x = seed;
    let mut next = move |m: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    (0..n)
        .map(|_| Gen {
            at: t("2026-10-20T00:00:00Z") + Duration::seconds(next(10 * 24 * 3600) as i64),
            anon: next(8) as u8,
            user: if next(3) == 0 { Some(next(3) as u8) } else { None },
            name: next(3) as usize,
            path: next(4) as usize,
            ip: next(4) as usize,
            bot: next(7) == 0,
        })
        .collect()
}

#[tokio::test]
async fn rollups_answer_like_raw_events_through_late_events_merges_and_deletions() {
    let app = TestApp::start("rollups_scenario").await;
    let p = berlin(&app, "Berlin rollups").await;
    send(&app, &p, &fixed_events(400, 7)).await;
    // Right after ingest, before any job: every day is dirty, read raw.
    assert_same(&app, &p, "before the job").await;
    assert!(rollups::run_pending(&app.pool).await.unwrap() > 0);
    assert_eq!(one(&app, "SELECT count(*) FROM rollup_dirty WHERE project_id = $1", p.project_id).await, 0);
    let stored = one(&app, "SELECT count(*) FROM events WHERE project_id = $1", p.project_id).await;
    assert_eq!(stored, 400);
    assert_eq!(
        one(&app, "SELECT sum(events)::int8 FROM rollup_daily_counts WHERE project_id = $1", p.project_id).await,
        stored
    );
    assert_eq!(
        one(&app, "SELECT sum(events)::int8 FROM rollup_daily_persons WHERE project_id = $1", p.project_id).await,
        stored
    );
    let countries = "SELECT count(DISTINCT country) FROM rollup_daily_counts WHERE project_id = $1";
    assert!(one(&app, countries, p.project_id).await >= 2, "the breakdowns by country have countries to split");
    assert_same(&app, &p, "after the job").await;

    // Late events for past days (one on the 25-hour day, one just after a Berlin midnight).
    let late = vec![
        Gen { at: t("2026-10-25T12:00:00Z"), anon: 1, user: None, name: 1, path: 3, ip: 0, bot: false },
        Gen { at: t("2026-10-21T22:00:30Z"), anon: 9, user: None, name: 0, path: 1, ip: 2, bot: false },
        Gen { at: t("2026-10-22T03:00:00Z"), anon: 9, user: None, name: 0, path: 1, ip: 1, bot: true },
    ];
    send(&app, &p, &late).await;
    assert!(one(&app, "SELECT count(*) FROM rollup_dirty WHERE project_id = $1", p.project_id).await >= 2);
    assert_same(&app, &p, "late events, before the job").await;
    rollups::run_pending(&app.pool).await.unwrap();
    assert_same(&app, &p, "late events, after the job").await;

    // An identity merge after the job: anon-9 becomes user-1 (who has history of their own).
    let identify = json!({"id": uuid::Uuid::now_v7(), "type": "identify", "name": "identify", "anonymous_id": "anon-9",
                          "user_id": "user-1", "timestamp": "2026-10-28T10:00:00Z"});
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={}", p.write_key)))
        .header("content-type", "application/json")
        .header("user-agent", BROWSER_UA)
        .body(json!({ "batch": [identify] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(read(res).await.0, 200);
    assert_same(&app, &p, "identity merge, before the job").await;
    rollups::run_pending(&app.pool).await.unwrap();
    assert_same(&app, &p, "identity merge, after the job").await;

    // A person deletion after the job.
    let res = app.http.delete(app.url("/v1/persons/anon-3")).bearer_auth(&p.admin_key).send().await.unwrap();
    let (status, body) = read(res).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"].as_u64().unwrap() > 0, "{body}");
    assert!(one(&app, "SELECT count(*) FROM rollup_dirty WHERE project_id = $1", p.project_id).await > 0);
    assert_same(&app, &p, "person deletion, before the job").await;
    rollups::run_pending(&app.pool).await.unwrap();
    assert_same(&app, &p, "person deletion, after the job").await;
}

#[tokio::test]
async fn queries_really_read_the_rollups_and_dirty_days_raw() {
    let app = TestApp::start("rollups_tamper").await;
    let p = berlin(&app, "Berlin tamper").await;
    send(&app, &p, &fixed_events(200, 11)).await;
    rollups::run_pending(&app.pool).await.unwrap();
    assert_same(&app, &p, "clean").await;
    // Tamper with one day's rollup rows: the rollup path shows it, the raw path does not.
    let client = app.pool.get().await.unwrap();
    // First the sets alone: the queries of their shape (one selector, one dimension at most)
    // read them, with counts and with unique persons.
    client
        .execute(
            "UPDATE rollup_daily_sets SET events = events + 1000 WHERE project_id = $1 AND day = '2026-10-23'",
            &[&p.project_id],
        )
        .await
        .unwrap();
    let d = differences(&app, &p).await;
    assert!(d.len() >= 6, "the tampered sets show through the rollup path: {d:?}");
    client
        .execute(
            "UPDATE rollup_daily_sets SET events = events - 1000, dids = $2 WHERE project_id = $1 AND day = '2026-10-23'",
            &[&p.project_id, &vec![0x3au8, 0x30, 0, 0, 0, 0, 0, 0]],
        )
        .await
        .unwrap();
    let d = differences(&app, &p).await;
    assert!(
        d.iter().filter(|x| x.contains("unique_persons")).count() >= 4,
        "emptied sets show in the unique persons: {d:?}"
    );
    client
        .execute(
            "UPDATE rollup_daily_counts SET events = events + 1000 WHERE project_id = $1 AND day = '2026-10-23'",
            &[&p.project_id],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO rollup_daily_persons VALUES ($1, '2026-10-23', 'ghost', NULL, false, 1)",
            &[&p.project_id],
        )
        .await
        .unwrap();
    let d = differences(&app, &p).await;
    assert!(d.len() >= 5, "the tampered rows show through the rollup path: {d:?}");
    // Marked dirty, the day is read raw again: every answer is exact despite the bad rows.
    rollups::mark_range_dirty(&client, p.project_id, t("2026-10-23T00:00:00Z"), t("2026-10-23T00:00:00Z"))
        .await
        .unwrap();
    assert_same(&app, &p, "tampered day marked dirty").await;
    rollups::run_pending(&app.pool).await.unwrap();
    assert_eq!(
        one(
            &app,
            "SELECT count(*) FROM rollup_daily_persons WHERE distinct_id = 'ghost' AND project_id = $1",
            p.project_id
        )
        .await,
        0
    );
    assert_same(&app, &p, "recomputed").await;
}

#[tokio::test]
async fn concurrent_job_runs_never_double_count() {
    let app = TestApp::start("rollups_concurrent").await;
    let p = berlin(&app, "Berlin concurrent").await;
    // A second pool stands for a second replica.
    let other = store::pool(&app.db_url, 4).unwrap();
    for round in 0..4u64 {
        send(&app, &p, &fixed_events(150, 100 + round)).await;
        let (a, b, c) =
            tokio::join!(rollups::run_pending(&app.pool), rollups::run_pending(&other), rollups::run_pending(&other));
        let done = a.unwrap() + b.unwrap() + c.unwrap();
        assert!(done > 0, "round {round}");
        assert_eq!(one(&app, "SELECT count(*) FROM rollup_dirty WHERE project_id = $1", p.project_id).await, 0);
        let stored = one(&app, "SELECT count(*) FROM events WHERE project_id = $1", p.project_id).await;
        assert_eq!(stored, 150 * (round as i64 + 1));
        for table in ["rollup_daily_counts", "rollup_daily_persons"] {
            let sql = format!("SELECT coalesce(sum(events), 0)::int8 FROM {table} WHERE project_id = $1");
            assert_eq!(one(&app, &sql, p.project_id).await, stored, "round {round}: {table}");
        }
        // The sets leave bots out.
        let humans = one(&app, "SELECT count(*) FROM events WHERE project_id = $1 AND NOT is_bot", p.project_id).await;
        let sql = "SELECT coalesce(sum(events), 0)::int8 FROM rollup_daily_sets WHERE project_id = $1 AND sel = '' AND dim = ''";
        assert_eq!(one(&app, sql, p.project_id).await, humans, "round {round}: rollup_daily_sets");
    }
    assert_same(&app, &p, "after concurrent runs").await;
}

#[test]
fn rollups_on_and_off_agree_on_random_data() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(TestApp::start("rollups_proptest"));
    let mut runner = TestRunner::new(Config { cases: 8, failure_persistence: None, ..Config::default() });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &(prop::collection::vec(gen_event(), 1..80), prop::collection::vec(gen_event(), 0..30)),
            |(first, late)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                rt.block_on(async {
                    let p = berlin(&app, &format!("case {n}")).await;
                    send(&app, &p, &first).await;
                    rollups::run_pending(&app.pool).await.unwrap();
                    let d = differences(&app, &p).await;
                    prop_assert!(d.is_empty(), "after the job:\n{}", d.join("\n"));
                    // Late events land on days the job already rolled up.
                    send(&app, &p, &late).await;
                    let d = differences(&app, &p).await;
                    prop_assert!(d.is_empty(), "late events before the job:\n{}", d.join("\n"));
                    rollups::run_pending(&app.pool).await.unwrap();
                    let d = differences(&app, &p).await;
                    prop_assert!(d.is_empty(), "late events after the job:\n{}", d.join("\n"));
                    Ok::<(), TestCaseError>(())
                })
            },
        )
        .unwrap();
}
