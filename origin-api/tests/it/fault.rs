//! Fault test: PostgreSQL stops in the middle of a steady ingest load and starts again. Every
//! event that got a 2xx must be stored, 503s (with Retry-After) must be answered meanwhile, and
//! the origin must recover without a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_origin::store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::json;

use crate::support::{event, TestApp};

#[tokio::test]
async fn postgres_outage_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::Builder::new().prefix("nexus-fault-").tempdir_in("/tmp").unwrap();
    let opts = EmbeddedOptions { data_dir: dir.path().to_path_buf(), no_fsync: true };
    let pg = EmbeddedPostgres::start(&opts).unwrap();
    let app = Arc::new(TestApp::start_on(&pg, "fault").await);

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let statuses: Arc<Mutex<Vec<(u16, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..3 {
        let (app, acked, statuses, stop) = (app.clone(), acked.clone(), statuses.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<_> = (0..10).map(|i| event(&format!("load{i}"))).collect();
                let ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
                let res = app
                    .http
                    .post(app.url(&format!("/v1/batch?key={}", app.project.write_key)))
                    .header("content-type", "application/json")
                    .body(json!({"batch": events}).to_string())
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let Ok(res) = res else { continue };
                let status = res.status().as_u16();
                let retry_after = res.headers().contains_key("retry-after");
                statuses.lock().unwrap().push((status, retry_after));
                if status == 200 {
                    acked.lock().unwrap().extend(ids);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_outage = acked.lock().unwrap().len();
    drop(pg); // stops the server (fast shutdown), releases the data directory
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pg = EmbeddedPostgres::start(&opts).unwrap();
    // Recovery: the same origin (same pool) answers 200 again within a few seconds.
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if statuses.lock().unwrap().last().is_some_and(|(s, _)| *s == 200) {
            recovered = true;
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }

    let statuses = statuses.lock().unwrap().clone();
    let unavailable = statuses.iter().filter(|(s, _)| *s == 503).count();
    assert!(before_outage > 0, "load was flowing before the outage");
    assert!(unavailable > 0, "503s during the outage: {statuses:?}");
    assert!(statuses.iter().filter(|(s, _)| *s == 503).all(|(_, ra)| *ra), "every 503 carries Retry-After");
    assert!(statuses.iter().all(|(s, _)| *s == 200 || *s == 503), "only 200 or 503: {statuses:?}");
    assert!(recovered, "the origin recovered without a restart");

    let acked = acked.lock().unwrap().clone();
    let client = app.pool.get().await.unwrap();
    let ids: Vec<uuid::Uuid> = acked.iter().map(|s| s.parse().unwrap()).collect();
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE project_id = $1 AND event_id = ANY($2)",
            &[&app.project.project_id, &ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, acked.len(), "every acknowledged event is stored");
    eprintln!(
        "fault test: {} requests, {} answered 503, {} events acknowledged and all stored",
        statuses.len(),
        unavailable,
        acked.len()
    );
    drop(client);
    drop(pg);
}
