//! Per-person sequences give exactly the raw answers: funnels, retention and paths read through the sequences
//! equal the same queries over the raw events, on generated data with identity merges, out-of-order delivery,
//! same-instant events across a merged person's ids, bots and a non-UTC zone; and stale days are never served.

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use nexus_origin::query::funnel::{self, FunnelQuery, Source};
use nexus_origin::query::model::{parse_query, Common};
use nexus_origin::query::paths::{self, PathsQuery};
use nexus_origin::query::retention::{self, RetentionQuery};
use serde_json::{json, Value};

use crate::support::{send, TestApp, BOT_UA, BROWSER_UA};

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event of anonymous id `anon` (and user `user` when identified) at `minute` minutes after 2026-02-25 UTC.
fn event(kind: &str, name: &str, anon: &str, user: Option<&str>, minute: i64, path: Option<&str>) -> Value {
    let ts = Utc.with_ymd_and_hms(2026, 2, 25, 0, 0, 0).unwrap() + Duration::minutes(minute);
    let mut e = json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "anonymous_id": anon, "session_id": format!("s-{anon}"),
        "timestamp": ts.to_rfc3339(),
    });
    if kind != "page" {
        e["name"] = json!(name);
    }
    if let Some(u) = user {
        e["user_id"] = json!(u);
    }
    if let Some(p) = path {
        e["context"] = json!({"url": format!("https://shop.test{p}"), "path": p});
    }
    e
}

/// Generated events over 2026-02-25 .. 2026-03-20: persons walking view -> signup -> purchase with drop-off,
/// pages, noise, some identifying (two anonymous ids of one user merge into one person), events of a merged
/// person's ids at the same minute, and a bot. Delivered in shuffled batches (out of order).
async fn load(app: &TestApp, seed: u64) {
    let mut rng = Rng(seed);
    let names = ["view", "signup", "purchase", "other"];
    let pages = ["/", "/pricing", "/docs", "/signup", "/blog"];
    let mut human = Vec::new();
    for p in 0..40 {
        let anon = format!("a{p}");
        // persons 0..10 identify; 5..10 share their user with person p - 5 (a second device)
        let user = (p < 10).then(|| format!("u{}", p % 5));
        let mut t = rng.below(20 * 1440) as i64;
        let n = 3 + rng.below(12);
        for i in 0..n {
            t += [0, 1, 30, 600, 1440, 4000][rng.below(6) as usize];
            let who = if i > n / 2 { user.as_deref() } else { None };
            if rng.below(3) == 0 {
                let path = pages[rng.below(pages.len() as u64) as usize];
                human.push(event("page", "", &anon, who, t, Some(path)));
            } else {
                let name = names[rng.below(names.len() as u64) as usize];
                human.push(event("track", name, &anon, who, t, None));
            }
            if who.is_some() && rng.below(4) == 0 {
                // the same minute under the other distinct id of the person
                human.push(event("track", names[rng.below(3) as usize], &anon, None, t, None));
            }
        }
        if let Some(u) = &user {
            human.push(event("identify", "identify", &anon, Some(u), t / 2, None));
        }
    }
    // shuffle, then deliver in batches
    for i in (1..human.len()).rev() {
        human.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for chunk in human.chunks(40) {
        send(app, &app.project.write_key, chunk, BROWSER_UA).await;
    }
    let bot: Vec<Value> = (0..12)
        .map(|i| event("track", names[i % 3], "crawler", None, 7 * 1440 + i as i64 * 60, None))
        .chain((0..4).map(|i| event("page", "", "crawler", None, 8 * 1440 + i * 5, Some("/"))))
        .collect();
    send(app, &app.project.write_key, &bot, BOT_UA).await;
}

/// Builds the sequences of every day of the data, as the rollup job does, and clears the dirty marks it would
/// clear.
async fn build(app: &TestApp, days: impl Iterator<Item = NaiveDate>) {
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    for d in days {
        nexus_origin::store::sequences::rebuild_day(&tx, app.project.project_id, d).await.unwrap();
    }
    if has_dirty_marks(&tx).await {
        tx.execute("DELETE FROM rollup_dirty WHERE project_id = $1", &[&app.project.project_id]).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn has_dirty_marks(tx: &deadpool_postgres::Transaction<'_>) -> bool {
    tx.query_one("SELECT to_regclass('rollup_dirty') IS NOT NULL", &[]).await.unwrap().get(0)
}

fn all_days() -> impl Iterator<Item = NaiveDate> {
    let first = NaiveDate::from_ymd_opt(2026, 2, 24).unwrap();
    (0..40).map(move |i| first + chrono::Days::new(i))
}

enum Kind {
    Funnel(FunnelQuery),
    Retention(RetentionQuery),
    Paths(PathsQuery),
}

fn parse(body: Value) -> (Common, Kind) {
    let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let kind = body["kind"].as_str().unwrap().to_owned();
    let mut body = body;
    body.as_object_mut().unwrap().remove("kind");
    match kind.as_str() {
        "funnel" => {
            let (c, q) = parse_query::<FunnelQuery>(body, "UTC", now).unwrap();
            (c, Kind::Funnel(q))
        }
        "retention" => {
            let (c, q) = parse_query::<RetentionQuery>(body, "UTC", now).unwrap();
            (c, Kind::Retention(q))
        }
        _ => {
            let (c, q) = parse_query::<PathsQuery>(body, "UTC", now).unwrap();
            (c, Kind::Paths(q))
        }
    }
}

/// The queries compared: every one is answerable from the sequences.
fn queries() -> Vec<Value> {
    let range = json!({"from": "2026-03-01", "to": "2026-03-14"});
    let steps = json!([{"name": "view"}, {"name": "signup"}, {"name": "purchase"}]);
    vec![
        json!({"kind": "funnel", "date_range": range, "steps": steps, "window_days": 3}),
        json!({"kind": "funnel", "date_range": range, "steps": steps, "window_days": 3, "include_bots": true}),
        json!({"kind": "funnel", "date_range": range, "steps": steps, "window_days": 2, "order": "strict"}),
        json!({"kind": "funnel", "date_range": range, "steps": steps, "window_days": 2, "order": "any_order"}),
        json!({"kind": "funnel", "date_range": range, "steps": steps, "window_days": 7, "timezone": "America/New_York",
               "exclusions": [{"name": "other", "from_step": 0, "to_step": 1}]}),
        json!({"kind": "funnel", "date_range": range, "steps": [{"name": "view"}, {"name": "view"}], "window_days": 1}),
        json!({"kind": "retention", "date_range": range, "interval": "day", "start": {"name": "view"},
               "return": {"name": "purchase"}}),
        json!({"kind": "retention", "date_range": range, "interval": "week", "start": {"name": "view"},
               "mode": "recurring", "timezone": "Asia/Kolkata"}),
        json!({"kind": "retention", "date_range": range, "interval": "day", "start": {"name": "signup"},
               "include_bots": true}),
        json!({"kind": "paths", "date_range": range, "anchor": "/", "steps": 4}),
        json!({"kind": "paths", "date_range": range, "values": "events", "direction": "previous",
               "anchor": "purchase", "steps": 3}),
        json!({"kind": "paths", "date_range": range, "values": "events", "include_bots": true, "top_k": 3}),
    ]
}

async fn answer(app: &TestApp, body: &Value, source: Source) -> Value {
    let (common, kind) = parse(body.clone());
    let (pool, pid) = (&app.pool, app.project.project_id);
    match kind {
        Kind::Funnel(q) => serde_json::to_value(funnel::run_from(pool, pid, &common, &q, source).await.unwrap()),
        Kind::Retention(q) => serde_json::to_value(retention::run_from(pool, pid, &common, &q, source).await.unwrap()),
        Kind::Paths(q) => serde_json::to_value(paths::run_from(pool, pid, &common, &q, source).await.unwrap()),
    }
    .unwrap()
}

async fn answers(app: &TestApp, source: Source) -> Vec<Value> {
    let mut out = Vec::new();
    for q in queries() {
        out.push(answer(app, &q, source).await);
    }
    out
}

fn assert_same(raw: &[Value], seq: &[Value], when: &str) {
    for ((r, s), q) in raw.iter().zip(seq).zip(queries()) {
        assert_eq!(r, s, "{when}: {q}");
    }
}

#[tokio::test]
async fn sequences_answer_exactly_as_raw_events() {
    for seed in [0x9e37_79b9_7f4a_7c15u64, 0x2545_f491_4f6c_dd1d] {
        let app = TestApp::start(&format!("sequences_equal_{seed:x}")).await;
        load(&app, seed).await;
        let raw = answers(&app, Source::Raw).await;
        // The data is rich enough to mean something: funnels convert, cohorts return, paths branch.
        assert!(raw[0]["total"]["steps"][2]["count"].as_u64().unwrap() > 0, "{}", raw[0]);
        assert!(raw[6]["cohorts"].as_array().unwrap().iter().any(|c| c["values"][1].as_u64().unwrap() > 0));
        assert!(raw[9]["links"].as_array().unwrap().len() > 3, "{}", raw[9]);
        assert_ne!(raw[0], raw[1], "bots change the funnel");

        // Nothing built yet: every day is read raw.
        assert_same(&raw, &answers(&app, Source::Auto).await, "before any build");
        build(&app, all_days()).await;
        let built: i64 = app
            .pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM day_sequences WHERE project_id = $1", &[&app.project.project_id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(built, 40, "one row per day built");
        assert_same(&raw, &answers(&app, Source::Auto).await, "built");

        // An identity merge after the build (a third device of u0, and a so far anonymous person identifying):
        // persons are resolved at read time.
        send(
            &app,
            &app.project.write_key,
            &[event("identify", "identify", "a20", Some("u0"), 9 * 1440, None)],
            BROWSER_UA,
        )
        .await;
        send(
            &app,
            &app.project.write_key,
            &[event("identify", "identify", "a21", Some("u1"), 9 * 1440 + 5, None)],
            BROWSER_UA,
        )
        .await;
        build(&app, [NaiveDate::from_ymd_opt(2026, 3, 6).unwrap()].into_iter()).await;
        let raw = answers(&app, Source::Raw).await;
        assert_same(&raw, &answers(&app, Source::Auto).await, "after a merge");

        // A late event for a built day: ingest marks the day dirty, so it is read raw until rebuilt.
        send(&app, &app.project.write_key, &[event("track", "purchase", "a22", None, 10 * 1440 + 7, None)], BROWSER_UA)
            .await;
        let raw = answers(&app, Source::Raw).await;
        assert_same(&raw, &answers(&app, Source::Auto).await, "late event, day dirty");
        build(&app, [NaiveDate::from_ymd_opt(2026, 3, 7).unwrap()].into_iter()).await;
        assert_same(&raw, &answers(&app, Source::Auto).await, "late event, day rebuilt");
    }
}

/// The sequences are really what answers: rows removed behind their back (no dirty mark) do not change the
/// answer until the day is marked dirty, and then the raw rows of that day are read.
#[tokio::test]
async fn built_days_are_served_from_sequences_and_dirty_days_from_events() {
    let app = TestApp::start("sequences_served").await;
    load(&app, 7).await;
    build(&app, all_days()).await;
    let before = answers(&app, Source::Raw).await;
    let pid = app.project.project_id;
    let client = app.pool.get().await.unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
    let (start, end) = (day.and_hms_opt(0, 0, 0).unwrap().and_utc(), day.and_hms_opt(23, 59, 59).unwrap().and_utc());
    let gone = client
        .execute(
            "DELETE FROM events WHERE project_id = $1 AND timestamp >= $2 AND timestamp <= $3",
            &[&pid, &start, &end],
        )
        .await
        .unwrap();
    assert!(gone > 0);
    let raw = answers(&app, Source::Raw).await;
    assert_ne!(before, raw, "the deleted day mattered");
    assert_same(&before, &answers(&app, Source::Auto).await, "served from sequences");

    let tx_client = &mut app.pool.get().await.unwrap();
    let tx = tx_client.transaction().await.unwrap();
    if has_dirty_marks(&tx).await {
        tx.execute("INSERT INTO rollup_dirty (project_id, utc_day) VALUES ($1, $2)", &[&pid, &day]).await.unwrap();
        tx.commit().await.unwrap();
        assert_same(&raw, &answers(&app, Source::Auto).await, "dirty day read raw");
    } else {
        tx.commit().await.unwrap();
    }
    build(&app, [day].into_iter()).await;
    assert_same(&raw, &answers(&app, Source::Auto).await, "rebuilt");
}

/// Runs `f` once to warm up, then `runs` times; the median in milliseconds.
async fn time_ms<F, Fut>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut t = Vec::new();
    for _ in 0..runs {
        let start = std::time::Instant::now();
        f().await;
        t.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The 1M-event measurement of docs/query.md (numbers, no assertion on time): `cargo test --release -p
/// nexus-origin --test it sequences_benchmark -- --ignored --nocapture`. Events are made by SQL (~1 KB rows over
/// 90 days, 50 000 distinct ids, a tenth of them merged into a neighbour's person, a fifth unmapped).
#[tokio::test]
#[ignore = "a benchmark: loads 1M events"]
async fn sequences_benchmark_1m() {
    let events: i64 = std::env::var("NEXUS_SEQ_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let app = TestApp::start("sequences_benchmark").await;
    let pid = app.project.project_id;
    let client = app.pool.get().await.unwrap();
    let t = std::time::Instant::now();
    client
        .batch_execute(
            "SELECT nexus_ensure_event_partition(d) FROM generate_series('2025-12-15'::timestamptz, '2026-04-15', interval '1 month') d",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO events (project_id, event_id, event_type, name, distinct_id, session_id, timestamp, \
               client_timestamp, received_at, path, properties, context, is_bot) \
             SELECT $1, gen_random_uuid(), CASE WHEN r < 0.6 THEN 'page' ELSE 'track' END, \
               CASE WHEN r < 0.6 THEN 'pageview' WHEN r < 0.75 THEN 'signup' WHEN r < 0.85 THEN 'activation' \
                    WHEN r < 0.9 THEN 'purchase' ELSE 'other' END, \
               'd' || (i % 50000), 's' || (i % 50000) || '-' || (i % 7), ts, ts, ts, \
               CASE WHEN r < 0.6 THEN (ARRAY['/', '/pricing', '/docs', '/signup', '/blog'])[1 + (i / 7) % 5] END, \
               jsonb_build_object('plan', 'pro', 'pad', repeat('x', 600)), \
               jsonb_build_object('ua', repeat('y', 200)), i % 97 = 0 \
             FROM (SELECT i, random() AS r, \
                          '2026-01-01'::timestamptz + random() * interval '90 days' AS ts \
                   FROM generate_series(1, $2::int8) i) g",
            &[&pid, &events],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO person_distinct_ids (project_id, distinct_id, person_id) \
             SELECT $1, 'd' || n, md5('p' || CASE WHEN n % 10 = 1 THEN n - 1 ELSE n END)::uuid \
             FROM generate_series(0, 49999) n WHERE n % 10 < 8",
            &[&pid],
        )
        .await
        .unwrap();
    client.batch_execute("ANALYZE events; ANALYZE person_distinct_ids").await.unwrap();
    println!("loaded {events} events in {:.1} s", t.elapsed().as_secs_f64());

    let t = std::time::Instant::now();
    build(&app, (0..92).map(|i| NaiveDate::from_ymd_opt(2025, 12, 31).unwrap() + chrono::Days::new(i))).await;
    client.batch_execute("ANALYZE day_sequences; ANALYZE sequence_distinct_ids").await.unwrap();
    let size: String = client
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('day_sequences') + pg_total_relation_size('sequence_distinct_ids')) || ' vs events ' || \
             pg_size_pretty((SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i \
                             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass)::int8)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!("built sequences of 92 days in {:.1} s ({size})", t.elapsed().as_secs_f64());

    let funnel_q = json!({"kind": "funnel", "date_range": {"from": "2026-03-01", "to": "2026-03-30"}, "window_days": 7,
        "steps": [{"name": "pageview"}, {"name": "signup"}, {"name": "activation"}, {"name": "purchase"}]});
    let retention_q = json!({"kind": "retention", "date_range": {"from": "2026-02-02", "to": "2026-03-29"},
        "interval": "week", "start": {"name": "signup"}, "return": {"name": "pageview"}});
    let paths_q = json!({"kind": "paths", "date_range": {"from": "2026-03-01", "to": "2026-03-30"}, "anchor": "/"});
    let person = "coalesce('p:' || pd.person_id::text, 'd:' || e.distinct_id)";
    let join = "LEFT JOIN person_distinct_ids pd ON pd.project_id = e.project_id AND pd.distinct_id = e.distinct_id";
    let plain_funnel = format!(
        "WITH ev AS MATERIALIZED (SELECT {person} AS person, e.name, e.timestamp AS ts FROM events e {join} \
           WHERE e.project_id = $1 AND e.timestamp >= '2026-03-01' AND e.timestamp < '2026-04-06' AND NOT e.is_bot \
             AND e.name IN ('pageview', 'signup', 'activation', 'purchase')), \
         s1 AS (SELECT person, min(ts) AS t FROM ev WHERE name = 'pageview' AND ts < '2026-03-30' GROUP BY 1), \
         s2 AS (SELECT s1.person, s1.t AS t0, min(ev.ts) AS t FROM s1 JOIN ev ON ev.person = s1.person \
                AND ev.name = 'signup' AND ev.ts > s1.t AND ev.ts <= s1.t + interval '7 days' GROUP BY 1, 2), \
         s3 AS (SELECT s2.person, s2.t0, min(ev.ts) AS t FROM s2 JOIN ev ON ev.person = s2.person \
                AND ev.name = 'activation' AND ev.ts > s2.t AND ev.ts <= s2.t0 + interval '7 days' GROUP BY 1, 2), \
         s4 AS (SELECT s3.person FROM s3 JOIN ev ON ev.person = s3.person \
                AND ev.name = 'purchase' AND ev.ts > s3.t AND ev.ts <= s3.t0 + interval '7 days' GROUP BY 1) \
         SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM s3), (SELECT count(*) FROM s4)"
    );
    let plain_retention = format!(
        "WITH firsts AS (SELECT {person} AS person, min(e.timestamp) AS t FROM events e {join} \
           WHERE e.project_id = $1 AND e.timestamp < '2026-03-29' AND NOT e.is_bot AND e.name = 'signup' GROUP BY 1), \
         cohort AS (SELECT person, date_trunc('week', t) AS c FROM firsts WHERE t >= '2026-02-02'), \
         act AS (SELECT DISTINCT {person} AS person, date_trunc('week', e.timestamp) AS w FROM events e {join} \
           WHERE e.project_id = $1 AND e.timestamp >= '2026-02-02' AND e.timestamp < '2026-03-29' AND NOT e.is_bot \
             AND e.name = 'pageview') \
         SELECT c, (w::date - c::date) / 7 AS k, count(*) FROM cohort JOIN act USING (person) WHERE w >= c \
         GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let runs = 3;
    println!("| query | plain SQL | raw path | sequences | plain / sequences |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, q, plain) in [
        ("4-step funnel, 7-day window, 30 days", &funnel_q, Some(&plain_funnel)),
        ("weekly retention, 8 weeks", &retention_q, Some(&plain_retention)),
        ("paths from the home page, 30 days", &paths_q, None),
    ] {
        let plain_ms = match plain {
            Some(sql) => {
                time_ms(runs, || async {
                    client.query(sql.as_str(), &[&pid]).await.unwrap();
                })
                .await
            }
            None => f64::NAN,
        };
        let raw_ms = time_ms(runs, || async {
            answer(&app, q, Source::Raw).await;
        })
        .await;
        let seq_ms = time_ms(runs, || async {
            answer(&app, q, Source::Auto).await;
        })
        .await;
        assert_eq!(answer(&app, q, Source::Raw).await, answer(&app, q, Source::Auto).await, "{label}");
        println!("| {label} | {plain_ms:.0} ms | {raw_ms:.0} ms | {seq_ms:.0} ms | {:.1}x |", plain_ms / seq_ms);
    }
}
