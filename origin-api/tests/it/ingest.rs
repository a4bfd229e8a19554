//! Ingest through the real HTTP stack into PostgreSQL: idempotency, partial batches, and every
//! kind of bad input answered with a 4xx and a stable code.

use std::io::Write;

use protocol::forward::{ForwardBatch, KeyLookupRequest, RequestContext};
use protocol::signing;
use serde_json::{json, Value};

use crate::support::{batch, event, read, TestApp, EDGE_SECRET};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn same_batch_twice_stores_each_event_once() {
    let app = TestApp::start("same_batch_twice").await;
    let body = batch(&[event("a"), event("b"), event("c")]);
    let (s1, r1) = app.post_batch(body.clone(), "application/json").await;
    let (s2, r2) = app.post_batch(body, "text/plain;charset=UTF-8").await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(r1, json!({"accepted": 3, "rejected": []}));
    assert_eq!(r2, json!({"accepted": 3, "rejected": []}), "a retry is acknowledged");
    assert_eq!(app.stored().await, 3);
}

#[tokio::test]
async fn two_valid_two_invalid() {
    let app = TestApp::start("two_valid_two_invalid").await;
    let mut bad_ts = event("bad_ts");
    bad_ts["timestamp"] = json!("last tuesday");
    let mut long_name = event("x");
    long_name["name"] = json!("n".repeat(protocol::limits::MAX_NAME_LEN + 1));
    let (status, body) =
        app.post_batch(batch(&[event("ok1"), bad_ts, event("ok2"), long_name]), "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"accepted": 2, "rejected": [
            {"index": 1, "code": "invalid_timestamp", "field": "timestamp"},
            {"index": 3, "code": "name_too_long", "field": "name"}
        ]})
    );
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn hostile_and_malformed_envelopes_get_stable_4xx() {
    let app = TestApp::start("hostile_envelopes").await;
    let big = format!("{{\"batch\": [\"{}\"]}}", "x".repeat(2 * 1024 * 1024));
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{\"batch\": [".to_vec(), "application/json", 400, "malformed_json"),
        (b"not json at all".to_vec(), "text/plain", 400, "malformed_json"),
        (big.into_bytes(), "application/json", 413, "payload_too_large"),
        (batch(&[event("a")]).into_bytes(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"{\"batch\": [\"\xff\xfe\"]}".to_vec(), "application/json", 400, "invalid_utf8"),
        (b"{\"batch\": []}".to_vec(), "application/json", 400, "empty_batch"),
    ];
    for (body, ct, status, expected) in cases {
        let (s, v) = app.post_batch(body, ct).await;
        assert_eq!((s, code(&v)), (status, expected), "content type {ct}");
    }
    // Deep nesting and injection strings cost at most their own event, never the batch.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let mut sql = event("'; DROP TABLE events; --");
    sql["properties"] = json!({"q": "' OR 1=1 --", "x": "<script>alert(1)</script>", "u": "\u{0000}\u{ffff}"});
    let body = format!("{{\"batch\": [{}, {deep}, {}]}}", sql, event("fine"));
    let (s, v) = app.post_batch(body, "application/json").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"][0]["index"], 1);
    let client = app.pool.get().await.unwrap();
    let row = client.query_one("SELECT properties->>'q', name FROM events WHERE name LIKE '''%'", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "' OR 1=1 --", "stored verbatim, not executed");
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn keys_unknown_revoked_missing() {
    let app = TestApp::start("keys").await;
    let body = batch(&[event("a")]);
    let post = |url: String| {
        let http = app.http.clone();
        let body = body.clone();
        async move { read(http.post(url).header("content-type", "application/json").body(body).send().await.unwrap()).await }
    };
    let (s, v) = post(app.url("/v1/batch")).await;
    assert_eq!((s, code(&v)), (401, "missing_key"));
    let (s, v) = post(app.url("/v1/batch?key=nx_w_00000000000000000000000000000000")).await;
    assert_eq!((s, code(&v)), (401, "invalid_key"));
    let (s, v) = post(app.url(&format!("/v1/batch?key={}", app.project.read_key))).await;
    assert_eq!((s, code(&v)), (403, "insufficient_scope"));
    // Accepted once, so the ingest path has the key in its cache; the revocation must still
    // take effect at once.
    let (s, v) = post(app.url(&format!("/v1/batch?key={}", app.project.write_key))).await;
    assert_eq!(s, 200, "{v}");
    assert!(nexus_origin::store::projects::revoke_key(&app.pool, &app.project.write_key).await.unwrap());
    let (s, v) = post(app.url(&format!("/v1/batch?key={}", app.project.write_key))).await;
    assert_eq!((s, code(&v)), (403, "revoked_key"));
    assert_eq!(app.stored().await, 1);
}

#[tokio::test]
async fn gzip_body_by_header_and_by_query() {
    let app = TestApp::start("gzip").await;
    let gz = |s: String| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(s.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={}", app.project.write_key)))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz(batch(&[event("a")])))
        .send()
        .await
        .unwrap();
    assert_eq!(read(res).await.1["accepted"], 1);
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={}&compression=gzip", app.project.write_key)))
        .header("content-type", "text/plain")
        .body(gz(batch(&[event("b")])))
        .send()
        .await
        .unwrap();
    assert_eq!(read(res).await.1["accepted"], 1);
    // A bomb: 64 MiB of spaces in ~64 KiB, cut off at the body limit.
    let bomb = gz(" ".repeat(64 * 1024 * 1024));
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={}&compression=gzip", app.project.write_key)))
        .header("content-type", "text/plain")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let (s, v) = read(res).await;
    assert_eq!((s, code(&v)), (413, "payload_too_large"));
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn cors_preflight_follows_allowed_origins() {
    let app = TestApp::start("cors").await;
    let url = app.url(&format!("/v1/batch?key={}", app.project.write_key));
    let ok =
        app.http.request(reqwest::Method::OPTIONS, &url).header("origin", "https://shop.test").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://shop.test");
    let bad =
        app.http.request(reqwest::Method::OPTIONS, &url).header("origin", "https://evil.test").send().await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    let (s, v) = read(bad).await;
    assert_eq!((s, code(&v)), (403, "origin_not_allowed"));
}

fn forward_body(app: &TestApp, events: &[Value]) -> Vec<u8> {
    let ctx = RequestContext {
        received_at: chrono::Utc::now(),
        sent_at: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        geo: protocol::forward::Geo { country: Some("DE".into()), ..Default::default() },
        visitor_hash: Some("abc".into()),
        bot: false,
        user_agent: Some("UA".into()),
    };
    let events = events
        .iter()
        .map(|e| protocol::forward::enrich(protocol::validate::validate_event(e.clone()).unwrap(), &ctx))
        .collect();
    serde_json::to_vec(&ForwardBatch { write_key: app.project.write_key.clone(), events }).unwrap()
}

async fn post_signed(app: &TestApp, path: &str, body: Vec<u8>, ts: i64, secret: &[u8]) -> (u16, Value) {
    let sig = signing::sign(secret, ts, &body);
    let res = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .header(signing::TIMESTAMP_HEADER, ts.to_string())
        .header(signing::SIGNATURE_HEADER, sig)
        .body(body)
        .send()
        .await
        .unwrap();
    read(res).await
}

#[tokio::test]
async fn signed_forwarding_from_the_edge() {
    let app = TestApp::start("signed_forwarding").await;
    let now = chrono::Utc::now().timestamp();
    let path = protocol::forward::INGEST_PATH;
    let body = forward_body(&app, &[event("a"), event("b")]);

    let (s, v) = post_signed(&app, path, body.clone(), now, b"wrong secret").await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"));
    let (s, v) = post_signed(&app, path, body.clone(), now - 3600, EDGE_SECRET.as_bytes()).await;
    assert_eq!((s, code(&v)), (401, "signature_expired"));
    let unsigned = app.http.post(app.url(path)).body(body.clone()).send().await.unwrap();
    let (s, v) = read(unsigned).await;
    assert_eq!((s, code(&v)), (401, "invalid_signature"));
    assert_eq!(app.stored().await, 0);

    let (s, v) = post_signed(&app, path, body.clone(), now, EDGE_SECRET.as_bytes()).await;
    assert_eq!((s, v), (200, json!({"accepted": 2, "rejected": []})));
    let (s, _) = post_signed(&app, path, body, now, EDGE_SECRET.as_bytes()).await;
    assert_eq!(s, 200);
    assert_eq!(app.stored().await, 2, "a re-forwarded batch is stored once");
    let client = app.pool.get().await.unwrap();
    let row =
        client.query_one("SELECT country, \"timestamp\" > client_timestamp FROM events LIMIT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "DE");
    assert!(row.get::<_, bool>(1), "skew-corrected by an hour");

    let lookup = serde_json::to_vec(&KeyLookupRequest { write_key: app.project.write_key.clone() }).unwrap();
    let (s, v) = post_signed(&app, protocol::forward::KEY_LOOKUP_PATH, lookup, now, EDGE_SECRET.as_bytes()).await;
    assert_eq!(s, 200);
    assert_eq!(v["project_id"], app.project.project_id);
    assert_eq!(v["allowed_origins"], json!(["https://shop.test"]));
    let lookup = serde_json::to_vec(&KeyLookupRequest { write_key: app.project.read_key.clone() }).unwrap();
    let (s, v) = post_signed(&app, protocol::forward::KEY_LOOKUP_PATH, lookup, now, EDGE_SECRET.as_bytes()).await;
    assert_eq!((s, code(&v)), (401, "invalid_key"), "secret keys are not resolvable by the edge");
}

#[tokio::test]
async fn events_per_day_counts_with_the_read_key() {
    let app = TestApp::start("events_per_day").await;
    let mut old = event("old");
    old["timestamp"] = json!("2026-01-15T12:00:00Z");
    let body = json!({"batch": [event("a"), event("b"), old]}).to_string();
    app.post_batch(body, "application/json").await;
    let today = chrono::Utc::now().date_naive();
    let url = app.url(&format!("/v1/stats/events-per-day?from=2026-01-01&to={today}"));
    let res = app.http.get(&url).bearer_auth(&app.project.read_key).send().await.unwrap();
    let (s, v) = read(res).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["days"], json!([{"day": "2026-01-15", "events": 1}, {"day": today.to_string(), "events": 2}]));
    let res = app.http.get(&url).bearer_auth(&app.project.write_key).send().await.unwrap();
    assert_eq!(code(&read(res).await.1), "insufficient_scope");
    let res = app
        .http
        .get(app.url("/v1/stats/events-per-day?from=x&to=y"))
        .bearer_auth(&app.project.read_key)
        .send()
        .await
        .unwrap();
    let (s, v) = read(res).await;
    assert_eq!((s, code(&v)), (400, "invalid_query"));
    let res = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(code(&read(res).await.1), "not_found");
}

#[tokio::test]
async fn drops_are_visible_to_the_project_as_ingestion_warnings() {
    let app = TestApp::start("warnings").await;
    let mut bad = event("bad");
    bad["timestamp"] = json!("not a time");
    let good = event("good");
    app.post_batch(batch(&[good.clone(), bad.clone(), bad]), "application/json").await;
    app.post_batch(batch(&[good]), "application/json").await; // a re-delivery: one duplicate
    let res = app.http.get(app.url("/v1/ingestion/warnings")).bearer_auth(&app.project.read_key).send().await.unwrap();
    let (s, v) = read(res).await;
    assert_eq!(s, 200, "{v}");
    let warnings = v["warnings"].as_array().unwrap();
    let by_reason =
        |r: &str| warnings.iter().find(|w| w["reason"] == r).cloned().unwrap_or_else(|| panic!("{r} in {v}"));
    assert_eq!(by_reason("invalid_timestamp")["count"], 2);
    assert_eq!(by_reason("invalid_timestamp")["examples"][0]["field"], "timestamp");
    assert_eq!(by_reason("duplicate")["count"], 1);
    assert_eq!(by_reason("duplicate")["examples"][0]["name"], "good");
    let res = app.http.get(app.url("/v1/ingestion/warnings")).bearer_auth(&app.project.write_key).send().await.unwrap();
    assert_eq!(code(&read(res).await.1), "insufficient_scope");
}

#[tokio::test]
async fn direct_ingest_geo_from_maxmind_through_trusted_proxies_only() {
    let app = TestApp::start("geo_direct").await;
    // The test origin trusts 127.0.0.1 (the test client's address) as a proxy.
    let post = |xff: &'static str, name: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url(&format!("/v1/batch?key={}", app.project.write_key)))
                .header("content-type", "application/json")
                .header("x-forwarded-for", xff)
                .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36")
                .body(batch(&[event(name)]))
                .send()
                .await
                .unwrap()
        }
    };
    // 1.1.1.1 (Cloudflare, AU in DB-IP), forged left part ignored; 8.8.8.8 is Google (US).
    post("8.8.8.8, 1.1.1.1", "via_proxy").await;
    let client = app.pool.get().await.unwrap();
    let row = client.query_one("SELECT country, visitor_hash FROM events WHERE name = 'via_proxy'", &[]).await.unwrap();
    let country: Option<String> = row.get(0);
    assert!(country.is_some(), "a country from the mmdb");
    assert_ne!(country.as_deref(), Some("US"), "the forged left-most hop is not believed");
    let raw_ip_stored: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE geo::text LIKE '%1.1.1.1%' OR properties::text LIKE '%1.1.1.1%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw_ip_stored, 0);
}

#[tokio::test]
async fn a_saturated_ingest_buffer_answers_503_with_retry_after() {
    let app = TestApp::start("saturated").await;
    // Every place in the buffer is taken (as by 16 slow batches while PostgreSQL stalls).
    let held = app.permits.clone().acquire_many_owned(16).await.unwrap();
    let started = std::time::Instant::now();
    let res = app
        .http
        .post(app.url(&format!("/v1/batch?key={}", app.project.write_key)))
        .header("content-type", "application/json")
        .body(batch(&[event("waiting")]))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    let (s, v) = read(res).await;
    assert_eq!((s, code(&v)), (503, "unavailable"));
    assert!(started.elapsed() >= nexus_origin::http::INGEST_WAIT, "it waited for a place first");
    drop(held);
    let (s, _) = app.post_batch(batch(&[event("later")]), "application/json").await;
    assert_eq!(s, 200, "a place frees up: accepted again");
    assert_eq!(app.stored().await, 1, "the refused batch was not stored (the sender retries it)");
}

#[tokio::test]
async fn cookieless_events_use_the_visitor_hash_as_the_person() {
    let app = TestApp::start("cookieless").await;
    let strip = |mut e: Value| {
        e.as_object_mut().unwrap().remove("anonymous_id");
        e
    };
    let (s, v) = app.post_batch(batch(&[strip(event("a")), strip(event("b"))]), "application/json").await;
    assert_eq!((s, v["accepted"].as_i64()), (200, Some(2)), "{v}");
    let client = app.pool.get().await.unwrap();
    let rows = client.query("SELECT DISTINCT distinct_id, visitor_hash FROM events", &[]).await.unwrap();
    assert_eq!(rows.len(), 1, "same visitor (ip + user agent) on the same day");
    let (distinct, hash): (String, String) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(distinct, hash);
    assert!(nexus_origin::store::persons::person_of(&app.pool, app.project.project_id, &hash).await.unwrap().is_some());
}
