//! Storage: dedup across partitions, historical events, concurrent writers, background jobs
//! that never run twice across replicas.

use chrono::{DateTime, Duration, Utc};
use nexus_origin::{jobs, store};
use protocol::forward::{enrich, EnrichedEvent, RequestContext};
use serde_json::json;

use crate::support::{event, TestApp};

fn enriched(raw: serde_json::Value, sent_at: &str, received_at: &str) -> EnrichedEvent {
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
        new_ids += store::events::insert(&app.pool, app.project.project_id, &[e]).await.unwrap().len();
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
        tasks.push(tokio::spawn(async move { store::events::insert(&pool, project, &batch).await.unwrap().len() }));
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
