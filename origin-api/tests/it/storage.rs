//! Storage: dedup across partitions, historical events, concurrent writers, background jobs
//! that never run twice across replicas.

use chrono::{DateTime, Duration, Utc};
use nexus_origin::{jobs, store};
use protocol::forward::{enrich, EnrichedEvent, RequestContext};
use serde_json::{json, Value};

use crate::support::{batch, event, read, TestApp};

fn enriched(raw: Value, sent_at: &str, received_at: &str) -> EnrichedEvent {
    let ev = protocol::validate::validate_event(raw).unwrap();
    let ctx = RequestContext {
        received_at: received_at.parse().unwrap(),
        sent_at: Some(sent_at.parse().unwrap()),
        ..RequestContext::default()
    };
    enrich(ev, &ctx)
}

#[tokio::test]
async fn three_deliveries_straddling_a_partition_boundary_store_once() {
    let app = TestApp::start("straddle").await;
    let mut raw = event("late_night");
    raw["timestamp"] = json!("2026-11-30T23:59:59.990Z");
    // Three deliveries of one event; their corrected times land on both sides of midnight, in
    // the November and the December partition.
    let deliveries = [
        ("2026-11-30T23:59:59.995Z", "2026-11-30T23:59:59.999Z"),
        ("2026-12-01T00:00:00.000Z", "2026-12-01T00:00:00.020Z"),
        ("2026-11-30T23:59:59.991Z", "2026-11-30T23:59:59.992Z"),
    ];
    let mut new_ids = 0;
    for (sent, received) in deliveries {
        let e = enriched(raw.clone(), sent, received);
        new_ids += store::events::insert(&app.pool, &[(app.project.project_id, &[e][..])]).await.unwrap().len();
    }
    assert_eq!(new_ids, 1);
    let client = app.pool.get().await.unwrap();
    let rows = client
        .query("SELECT tableoid::regclass::text, \"timestamp\" FROM events WHERE name = 'late_night'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "stored once across partitions");
    let part: String = rows[0].get(0);
    assert_eq!(part, "events_p202611");
    let ids: i64 = client.query_one("SELECT count(*) FROM event_ids", &[]).await.unwrap().get(0);
    assert_eq!(ids, 1);
}

#[tokio::test]
async fn an_event_two_years_old_is_stored_in_its_own_partition() {
    let app = TestApp::start("two_years_back").await;
    let when: DateTime<Utc> = Utc::now() - Duration::days(731);
    let mut raw = event("historical");
    raw["timestamp"] = json!(when.to_rfc3339());
    // No sent_at: the timestamp is taken as is (an import or a long-offline device).
    let (status, body) = app.post_batch(json!({"batch": [raw]}).to_string(), "application/json").await;
    assert_eq!((status, body["accepted"].as_i64()), (200, Some(1)));
    let client = app.pool.get().await.unwrap();
    let part: String = client
        .query_one("SELECT tableoid::regclass::text FROM events WHERE name = 'historical'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(part, format!("events_p{}", when.format("%Y%m")));
}

#[tokio::test]
async fn eight_concurrent_writers_of_one_batch_store_each_event_once() {
    let app = TestApp::start("concurrent_writers").await;
    let now = Utc::now().to_rfc3339();
    let batch: Vec<EnrichedEvent> = (0..50).map(|i| enriched(event(&format!("e{i}")), &now, &now)).collect();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, batch, project) = (app.pool.clone(), batch.clone(), app.project.project_id);
        tasks.push(tokio::spawn(
            async move { store::events::insert(&pool, &[(project, &batch[..])]).await.unwrap().len() },
        ));
    }
    let mut total_new = 0;
    for t in tasks {
        total_new += t.await.unwrap();
    }
    assert_eq!(total_new, 50, "each id is new for exactly one writer");
    assert_eq!(app.stored().await, 50);
}

#[tokio::test]
async fn two_replicas_never_run_the_same_job_twice() {
    let app = TestApp::start("jobs_once").await;
    // A second pool stands for a second origin process on the same database.
    let other = store::pool(&app.db_url, 4).unwrap();
    let client = app.pool.get().await.unwrap();
    for round in 1..=20i64 {
        client.execute("UPDATE jobs SET next_run_at = now() - interval '1 second'", &[]).await.unwrap();
        let (a, b) = tokio::join!(jobs::run_due(&app.pool, "replica-a"), jobs::run_due(&other, "replica-b"));
        let ran = a.unwrap().len() + b.unwrap().len();
        assert_eq!(ran, jobs::Job::ALL.len(), "round {round}: each due job ran exactly once");
        let runs: i64 = client.query_one("SELECT sum(runs)::int8 FROM jobs", &[]).await.unwrap().get(0);
        assert_eq!(runs, round * jobs::Job::ALL.len() as i64);
    }
    // Not due: nobody runs it.
    assert!(jobs::run_due(&app.pool, "replica-a").await.unwrap().is_empty());
    // The job created partitions ahead of time.
    let ahead = Utc::now().checked_add_months(chrono::Months::new(3)).unwrap();
    let name = format!("events_p{}", ahead.format("%Y%m"));
    let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.unwrap().get(0);
    assert!(exists, "{name} exists");
}

fn session_event(
    kind: &str,
    name: Option<&str>,
    path: &str,
    at: &str,
    session: &str,
    referrer: Option<&str>,
) -> EnrichedEvent {
    let mut raw = json!({
        "id": uuid::Uuid::now_v7(), "type": kind, "anonymous_id": "visitor-1", "session_id": session,
        "timestamp": at, "context": {"url": format!("https://shop.test{path}"), "path": path, "referrer": referrer},
    });
    if let Some(n) = name {
        raw["name"] = json!(n);
    }
    let ev = protocol::validate::validate_event(raw).unwrap();
    let ctx = RequestContext {
        received_at: at.parse().unwrap(),
        sent_at: Some(at.parse().unwrap()),
        geo: protocol::forward::Geo { country: Some("DE".into()), ..Default::default() },
        user_agent: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36".into()),
        ..RequestContext::default()
    };
    enrich(ev, &ctx)
}

#[tokio::test]
async fn sessions_from_a_scripted_sequence_arriving_out_of_order() {
    let app = TestApp::start("sessions_scripted").await;
    let p = app.project.project_id;
    let landing =
        session_event("page", None, "/landing", "2026-12-01T10:00:00Z", "s1", Some("https://www.google.com/"));
    let click = session_event(
        "track",
        Some("cta_clicked"),
        "/landing",
        "2026-12-01T10:01:00Z",
        "s1",
        Some("https://www.google.com/"),
    );
    let pricing =
        session_event("page", None, "/pricing", "2026-12-01T10:05:00Z", "s1", Some("https://shop.test/landing"));
    let lone =
        session_event("page", None, "/blog", "2026-12-01T11:00:00Z", "s2", Some("https://news.ycombinator.com/"));
    // The last page first, then the rest reversed, then a re-delivery of the last page.
    store::events::insert(&app.pool, &[(p, std::slice::from_ref(&pricing))]).await.unwrap();
    store::events::insert(&app.pool, &[(p, &[click, landing, lone][..])]).await.unwrap();
    store::events::insert(&app.pool, &[(p, &[pricing][..])]).await.unwrap();

    let client = app.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT started_at::text, duration_secs, pageviews, events, is_bounce, entry_path, exit_path,
                    channel, referrer_domain, country, browser, device_type
             FROM sessions WHERE project_id = $1 AND session_id = 's1'",
            &[&p],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2026-12-01 10:00:00+00");
    assert_eq!(row.get::<_, f64>(1), 300.0);
    assert_eq!((row.get::<_, i32>(2), row.get::<_, i32>(3)), (2, 3), "page views, events (re-delivery not counted)");
    assert!(!row.get::<_, bool>(4));
    assert_eq!((row.get::<_, String>(5), row.get::<_, String>(6)), ("/landing".into(), "/pricing".into()));
    assert_eq!(row.get::<_, String>(7), "organic_search", "attribution from the earliest event");
    assert_eq!(row.get::<_, String>(8), "google.com");
    assert_eq!(row.get::<_, String>(9), "DE");
    assert_eq!((row.get::<_, String>(10), row.get::<_, String>(11)), ("Chrome".into(), "desktop".into()));
    let lone = client
        .query_one("SELECT is_bounce, channel, duration_secs FROM sessions WHERE session_id = 's2'", &[])
        .await
        .unwrap();
    assert_eq!(
        (lone.get::<_, bool>(0), lone.get::<_, String>(1), lone.get::<_, f64>(2)),
        (true, "referral".into(), 0.0)
    );
    let typed =
        client.query_one("SELECT host, channel, browser FROM events WHERE path = '/pricing'", &[]).await.unwrap();
    assert_eq!(typed.get::<_, String>(0), "shop.test");
    assert_eq!(typed.get::<_, String>(1), "direct", "an internal referrer is not a source");
}

#[tokio::test]
async fn eight_concurrent_writers_on_one_session_give_one_row_with_the_right_counts() {
    let app = TestApp::start("sessions_concurrent").await;
    let p = app.project.project_id;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..5 {
                let at = format!("2026-12-01T12:{:02}:{:02}Z", w, b * 10);
                let batch: Vec<EnrichedEvent> = (0..4)
                    .map(|i| {
                        let kind = if i == 0 { "page" } else { "track" };
                        session_event(kind, (i > 0).then_some("act"), &format!("/w{w}"), &at, "shared", None)
                    })
                    .collect();
                store::events::insert(&pool, &[(p, &batch[..])]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let client = app.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT pageviews, events, started_at::text, ended_at::text FROM sessions WHERE session_id = 'shared'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].get::<_, i32>(0), rows[0].get::<_, i32>(1)), (8 * 5, 8 * 5 * 4));
    assert_eq!(rows[0].get::<_, String>(2), "2026-12-01 12:00:00+00");
    assert_eq!(rows[0].get::<_, String>(3), "2026-12-01 12:07:40+00");
}

#[tokio::test]
async fn retention_deletes_only_what_is_older_than_the_projects_retention() {
    let app = TestApp::start("retention").await;
    let p = app.project.project_id;
    let old = (Utc::now() - Duration::days(40)).to_rfc3339();
    let recent = (Utc::now() - Duration::days(5)).to_rfc3339();
    let evs: Vec<EnrichedEvent> = [(&old, "s-old"), (&recent, "s-new")]
        .iter()
        .map(|(at, s)| session_event("page", None, "/", at, s, None))
        .collect();
    store::events::insert(&app.pool, &[(p, &evs[..])]).await.unwrap();
    let client = app.pool.get().await.unwrap();
    // No retention configured: nothing is deleted.
    client.execute("UPDATE jobs SET next_run_at = now() - interval '1 second'", &[]).await.unwrap();
    jobs::run_due(&app.pool, "r").await.unwrap();
    assert_eq!(app.stored().await, 2);
    client.execute("UPDATE projects SET retention_days = 30 WHERE project_id = $1", &[&p]).await.unwrap();
    client.execute("UPDATE jobs SET next_run_at = now() - interval '1 second'", &[]).await.unwrap();
    jobs::run_due(&app.pool, "r").await.unwrap();
    assert_eq!(app.stored().await, 1);
    let sessions: Vec<String> =
        client.query("SELECT session_id FROM sessions", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(sessions, ["s-new"]);
    let ids: i64 = client.query_one("SELECT count(*) FROM event_ids", &[]).await.unwrap().get(0);
    assert_eq!(ids, 1);
}

#[tokio::test]
async fn import_cli_loads_ndjson_through_the_pipeline_idempotently() {
    let app = TestApp::start("import_cli").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let mut lines: Vec<String> = (0..250)
        .map(|i| {
            let mut e = event(&format!("imported_{}", i % 5));
            e["timestamp"] = json!((Utc::now() - Duration::days(400 + i)).to_rfc3339());
            e.to_string()
        })
        .collect();
    lines.insert(10, "{not json".into());
    lines.insert(20, json!({"id": "x", "type": "track"}).to_string());
    lines.insert(30, String::new());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nexus-origin"))
            .args([
                "import",
                "--quiet",
                "--batch",
                "100",
                "--key",
                &app.project.write_key,
                "--database-url",
                &app.db_url,
            ])
            .arg("--file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first, json!({"lines": 253, "accepted": 250, "rejected": 2}));
    assert_eq!(app.stored().await, 250);
    let again = run();
    assert_eq!(again["accepted"], 250, "a re-run is acknowledged");
    assert_eq!(app.stored().await, 250, "and stores nothing twice");
    let client = app.pool.get().await.unwrap();
    let parts: i64 = client.query_one("SELECT count(DISTINCT tableoid) FROM events", &[]).await.unwrap().get(0);
    assert!(parts >= 8, "historical months got their partitions ({parts})");
}

#[tokio::test]
async fn concurrent_requests_written_as_one_group_keep_every_event_once_and_sessions_exact() {
    // 16 requests at once: the writer takes the waiting ones into shared transactions. Each
    // request repeats 10 ids of a common pool (so copies of one id meet inside one group and
    // across groups) and adds 10 of its own; all events belong to one session.
    let app = TestApp::start("group_commit").await;
    let now = Utc::now();
    let shared: Vec<Value> = (0..10)
        .map(|i| {
            let mut e = event(&format!("shared-{i}"));
            e["session_id"] = json!("sess-group");
            e["timestamp"] = json!((now - Duration::seconds(100 - i)).to_rfc3339());
            e
        })
        .collect();
    let mut tasks = Vec::new();
    for r in 0..16i64 {
        let mut events = shared.clone();
        events.extend((0..10).map(|i| {
            let mut e = event(&format!("own-{r}-{i}"));
            e["session_id"] = json!("sess-group");
            e["timestamp"] = json!((now - Duration::seconds(50 - i)).to_rfc3339());
            e
        }));
        let (http, url) = (app.http.clone(), app.url(&format!("/v1/batch?key={}", app.project.write_key)));
        let body = batch(&events);
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            read(res).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 20, "every event of a request is acknowledged, duplicates included");
    }
    assert_eq!(app.stored().await, 10 + 16 * 10);
    let client = app.pool.get().await.unwrap();
    let row = client
        .query_one("SELECT count(*), sum(events)::int8 FROM sessions WHERE project_id = $1", &[&app.project.project_id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "one session row");
    assert_eq!(row.get::<_, i64>(1), 170, "the session counts each stored event once");
    let dups: i64 = client
        .query_one(
            "SELECT coalesce(sum(count), 0)::int8 FROM ingestion_warnings WHERE project_id = $1 AND reason = 'duplicate'",
            &[&app.project.project_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dups, 15 * 10, "every repeated copy is counted as a duplicate");
}

#[tokio::test]
async fn concurrent_first_writers_of_new_months_all_get_their_partition() {
    // Eight writers ask for the same twelve new months at once, each on its own connection: the
    // partition DDL must be idempotent under that race (it once answered duplicate_table, a 500).
    let app = TestApp::start("partition_race").await;
    let months: Vec<DateTime<Utc>> = (0..12).map(|m| Utc::now() - Duration::days(3650 + 31 * m)).collect();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, months) = (app.pool.clone(), months.clone());
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await.unwrap();
            for m in &months {
                client.execute("SELECT nexus_ensure_event_partition($1)", &[m]).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let client = app.pool.get().await.unwrap();
    for m in &months {
        let name = format!("events_p{}", m.format("%Y%m"));
        let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await.unwrap().get(0);
        assert!(exists, "{name} exists");
    }
}
