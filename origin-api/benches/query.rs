//! Analytics benchmark: the synthetic data set (`nexus_origin::synth`) loaded through the real
//! pipeline, then each dashboard query timed over HTTP against the plain SQL a straightforward
//! implementation would run over the raw events, in the same run, on the same database.
//!
//! Run with `cargo xtask bench-query [--events 1000000]` (or `cargo bench -p nexus-origin --bench
//! query -- ARGS`). With `--load-only` it only loads (`cargo xtask load-synthetic`): into a
//! running origin (`--url`, `--write-key`, `--edge-secret`), or into an embedded PostgreSQL kept
//! in `--data-dir` that `nexus-origin serve --data-dir DIR` serves afterwards.
//!
//! Loading goes through the edge's path: signed `POST /internal/v1/ingest` bodies of enriched
//! events (each with its own country, user agent and bot flag, as the edge tags them), several
//! requests in flight, written by the origin's group-commit writer.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use nexus_origin::store::{
    self,
    embedded::{EmbeddedOptions, EmbeddedPostgres},
};
use nexus_origin::synth::{Synth, SynthConfig};
use serde_json::{json, Value};
use tokio::sync::Mutex;

fn args() -> Vec<String> {
    std::env::args().collect()
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let a = args();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn opt(name: &str) -> Option<String> {
    let a = args();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).cloned()
}

fn flag(name: &str) -> bool {
    args().iter().any(|x| x == name)
}

/// A running origin process, killed when dropped (a panic must not leave it holding ports).
struct Origin {
    child: std::process::Child,
    base: String,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

async fn start_origin(url: &str, secret: &str) -> anyhow::Result<Origin> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nexus-origin"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", url, "--edge-secret", secret])
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the origin")?;
    let origin = Origin { child, base: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{}/ready", origin.base)).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "origin not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(origin)
}

/// Loads `total` synthetic events; returns (accepted, seconds).
async fn load(
    base: &str,
    write_key: &str,
    secret: &str,
    cfg: SynthConfig,
    total: usize,
    concurrency: usize,
    per_request: usize,
) -> anyhow::Result<(usize, f64)> {
    // The generator runs on its own thread, a few requests ahead of the senders.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(concurrency * 4);
    let key = write_key.to_owned();
    let producer = tokio::task::spawn_blocking(move || {
        let mut synth = Synth::new(cfg, total);
        loop {
            let mut events = Vec::with_capacity(per_request);
            while events.len() < per_request {
                match synth.next() {
                    Some(batch) => events.extend(batch),
                    None => break,
                }
            }
            if events.is_empty() {
                break;
            }
            let body = serde_json::to_vec(&protocol::forward::ForwardBatch { write_key: key.clone(), events });
            if tx.blocking_send(body.unwrap()).is_err() {
                break;
            }
        }
        synth.persons()
    });
    let rx = Arc::new(Mutex::new(rx));
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let url = format!("{base}{}", protocol::forward::INGEST_PATH);
    let secret = secret.as_bytes().to_vec();
    let started = Instant::now();
    // The first request alone: its events span the window's months, so the origin creates the
    // missing monthly partitions before requests race on them.
    let mut first = 0;
    let next = rx.lock().await.recv().await;
    if let Some(body) = next {
        first = send(&http, &url, &secret, body).await?;
    }
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (rx, http, url, secret) = (rx.clone(), http.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let next = rx.lock().await.recv().await;
                let Some(body) = next else { break };
                accepted += send(&http, &url, &secret, body).await?;
            }
            Ok::<_, anyhow::Error>(accepted)
        }));
    }
    let mut accepted = first;
    for t in tasks {
        accepted += t.await??;
    }
    let persons = producer.await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {accepted} events of {persons} persons in {secs:.1} s: {:.0} events/s ({concurrency} requests in flight, {per_request} events each)",
        accepted as f64 / secs
    );
    Ok((accepted, secs))
}

/// Posts one forward body, signed at the moment of sending as the edge does; retries a 5xx a few
/// times (safe: storage is idempotent on event ids). Returns the events accepted.
async fn send(http: &reqwest::Client, url: &str, secret: &[u8], body: Vec<u8>) -> anyhow::Result<usize> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ts = Utc::now().timestamp();
        let res = http
            .post(url)
            .header("content-type", "application/json")
            .header(protocol::signing::TIMESTAMP_HEADER, ts.to_string())
            .header(protocol::signing::SIGNATURE_HEADER, protocol::signing::sign(secret, ts, &body))
            .body(body.clone())
            .send()
            .await?;
        let status = res.status();
        let answer: Value = res.json().await?;
        if status.is_server_error() && attempt < 4 {
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            continue;
        }
        anyhow::ensure!(status.is_success(), "ingest answered {status}: {answer}");
        return Ok(answer["accepted"].as_u64().unwrap_or(0) as usize);
    }
}

/// The generator's window ends at today's midnight (UTC): every figure of one day is reproducible.
fn synth_config() -> SynthConfig {
    let today = Utc::now().date_naive();
    let end = today.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(Utc::now);
    SynthConfig { seed: arg("--seed", 1), days: arg("--days", 90), end }
}

fn random_secret() -> String {
    format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>())
}

async fn load_only(cfg: SynthConfig, total: usize, concurrency: usize, per_request: usize) -> anyhow::Result<()> {
    if let Some(base) = opt("--url") {
        let key = opt("--write-key").context("--write-key is needed with --url")?;
        let secret =
            opt("--edge-secret").context("--edge-secret (the origin's NEXUS_EDGE_SECRET) is needed with --url")?;
        load(base.trim_end_matches('/'), &key, &secret, cfg, total, concurrency, per_request).await?;
        return Ok(());
    }
    let dir = std::path::PathBuf::from(opt("--data-dir").unwrap_or_else(|| ".nexus-synthetic".into()));
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let pg = EmbeddedPostgres::start(&EmbeddedOptions { data_dir: dir.clone(), no_fsync: false })?;
    store::ensure_database(&pg.connection_string("postgres"), "nexus").await?;
    let url = pg.connection_string("nexus");
    let pool = store::pool(&url, 2)?;
    store::migrate(&pool).await?;
    let project = store::projects::create_project(&pool, &format!("synthetic seed {}", cfg.seed), "UTC", &[]).await?;
    let secret = random_secret();
    let origin = start_origin(&url, &secret).await?;
    load(&origin.base, &project.write_key, &secret, cfg, total, concurrency, per_request).await?;
    drop(origin);
    pool.close();
    drop(pg);
    println!(
        "project {} in {}: serve it with `nexus-origin serve --data-dir {}`",
        project.project_id,
        dir.display(),
        dir.display()
    );
    println!("{}", serde_json::to_string_pretty(&project)?);
    Ok(())
}

/// One dashboard question: the body for our endpoint and the plain SQL over raw events.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Value,
    /// Binds `$1` project, `$2` range start, `$3` range end (exclusive).
    sql: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// A person, the straightforward way: the merged person when the distinct id has one.
const PERSON: &str = "coalesce(p.person_id::text, e.distinct_id)";
const FROM_EVENTS: &str =
    "events e LEFT JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id";

fn sql(template: &str) -> &'static str {
    Box::leak(template.replace("{PERSON}", PERSON).replace("{FROM}", FROM_EVENTS).into_boxed_str())
}

fn cases(end: NaiveDate) -> Vec<Case> {
    let day = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap();
    // The last 30 whole days.
    let (from30, to30) = (end - chrono::Days::new(30), end - chrono::Days::new(1));
    let range30 = json!({"from": from30.to_string(), "to": to30.to_string()});
    // The last 8 whole ISO weeks.
    let last_sunday = end - chrono::Days::new(u64::from(end.weekday().number_from_monday()));
    let from8w = last_sunday - chrono::Days::new(55);
    let range8w = json!({"from": from8w.to_string(), "to": last_sunday.to_string()});
    let (f30, t30, f8, t8) = (day(from30), day(end), day(from8w), day(last_sunday + chrono::Days::new(1)));
    let steps = json!([{"name": "$pageview"}, {"name": "signed_up"}, {"name": "activated"}, {"name": "purchased"}]);
    vec![
        Case {
            name: "daily unique persons, 30 days",
            path: "/v1/query/trends",
            body: json!({"date_range": range30, "interval": "day", "metrics": ["unique_persons"]}),
            sql: sql("SELECT date_trunc('day', e.\"timestamp\" AT TIME ZONE 'UTC') AS day, count(DISTINCT {PERSON})
                      FROM {FROM} WHERE e.project_id = $1 AND e.\"timestamp\" >= $2 AND e.\"timestamp\" < $3
                      AND NOT e.is_bot GROUP BY 1 ORDER BY 1"),
            from: f30,
            to: t30,
        },
        Case {
            name: "top pages, 30 days",
            path: "/v1/query/top",
            body: json!({"date_range": range30, "dimension": "event.path", "limit": 10,
                         "filters": {"field": "event.type", "op": "eq", "value": "page"}}),
            sql: sql("SELECT e.path, count(DISTINCT {PERSON}) AS persons, count(*) AS views
                      FROM {FROM} WHERE e.project_id = $1 AND e.\"timestamp\" >= $2 AND e.\"timestamp\" < $3
                      AND NOT e.is_bot AND e.event_type = 'page' GROUP BY 1 ORDER BY 2 DESC, 3 DESC LIMIT 10"),
            from: f30,
            to: t30,
        },
        Case {
            name: "events per day by country, 30 days",
            path: "/v1/query/trends",
            body: json!({"date_range": range30, "interval": "day", "metrics": ["count"],
                         "breakdown": {"field": "event.country", "limit": 10}}),
            sql: sql("SELECT date_trunc('day', e.\"timestamp\" AT TIME ZONE 'UTC') AS day, e.country, count(*)
                      FROM events e WHERE e.project_id = $1 AND e.\"timestamp\" >= $2 AND e.\"timestamp\" < $3
                      AND NOT e.is_bot GROUP BY 1, 2 ORDER BY 1, 3 DESC"),
            from: f30,
            to: t30,
        },
        Case {
            name: "4-step funnel, 7-day window, 30 days",
            path: "/v1/query/funnel",
            body: json!({"date_range": range30, "steps": steps, "window_days": 7}),
            // One self-join per step: each person's first entry, then the first next step
            // within 7 days of it.
            // `ev` NOT MATERIALIZED: each step reads the events itself, with the table's column
            // statistics (a materialised CTE has none: the planner guessed 200 persons per step and
            // chose nested loops over the CTE, which ran for over 14 minutes at 10M events).
            sql: sql("WITH ev AS NOT MATERIALIZED (
                        SELECT {PERSON} AS person, e.name, e.\"timestamp\" AS ts FROM {FROM}
                        WHERE e.project_id = $1 AND e.\"timestamp\" >= $2 AND e.\"timestamp\" < $3::timestamptz + interval '7 days'
                          AND NOT e.is_bot AND e.name IN ('$pageview', 'signed_up', 'activated', 'purchased')),
                      s1 AS (SELECT person, min(ts) AS t FROM ev WHERE name = '$pageview' AND ts < $3 GROUP BY person),
                      s2 AS (SELECT s1.person, s1.t AS t0, min(ev.ts) AS t FROM s1 JOIN ev ON ev.person = s1.person
                             AND ev.name = 'signed_up' AND ev.ts >= s1.t AND ev.ts <= s1.t + interval '7 days' GROUP BY 1, 2),
                      s3 AS (SELECT s2.person, s2.t0, min(ev.ts) AS t FROM s2 JOIN ev ON ev.person = s2.person
                             AND ev.name = 'activated' AND ev.ts >= s2.t AND ev.ts <= s2.t0 + interval '7 days' GROUP BY 1, 2),
                      s4 AS (SELECT s3.person, min(ev.ts) AS t FROM s3 JOIN ev ON ev.person = s3.person
                             AND ev.name = 'purchased' AND ev.ts >= s3.t AND ev.ts <= s3.t0 + interval '7 days' GROUP BY 1)
                      SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM s3), (SELECT count(*) FROM s4)"),
            from: f30,
            to: t30,
        },
        Case {
            name: "weekly retention, 8 weeks",
            path: "/v1/query/retention",
            body: json!({"date_range": range8w, "interval": "week", "mode": "first_time", "start": {"name": "$pageview"}}),
            // First-time cohorts: a person's first page view ever, then the weeks they came back.
            sql: sql("WITH ev AS (
                        SELECT {PERSON} AS person, date_trunc('week', e.\"timestamp\" AT TIME ZONE 'UTC') AS wk FROM {FROM}
                        WHERE e.project_id = $1 AND e.\"timestamp\" < $3 AND NOT e.is_bot AND e.name = '$pageview'),
                      firsts AS (SELECT person, min(wk) AS cohort FROM ev GROUP BY person),
                      active AS (SELECT DISTINCT person, wk FROM ev WHERE wk >= ($2::timestamptz AT TIME ZONE 'UTC'))
                      SELECT f.cohort, (extract(epoch FROM a.wk - f.cohort) / 604800)::int8 AS offset_weeks, count(*) FROM firsts f JOIN active a USING (person)
                      WHERE f.cohort >= ($2::timestamptz AT TIME ZONE 'UTC') AND a.wk >= f.cohort GROUP BY 1, 2 ORDER BY 1, 2"),
            from: f8,
            to: t8,
        },
        Case {
            name: "paths from the home page, 5 steps",
            path: "/v1/query/paths",
            body: json!({"date_range": range30, "values": "pages", "anchor": "/", "steps": 5}),
            // Window functions: collapse repeats, number each person's pages, count per step
            // after their first home page view.
            sql: sql("WITH pv AS (
                        SELECT {PERSON} AS person, e.path, e.\"timestamp\" AS ts, e.event_id FROM {FROM}
                        WHERE e.project_id = $1 AND e.\"timestamp\" >= $2 AND e.\"timestamp\" < $3 AND NOT e.is_bot
                          AND e.event_type = 'page'),
                      collapsed AS (SELECT person, path, ts, event_id,
                                    lag(path) OVER (PARTITION BY person ORDER BY ts, event_id) AS prev FROM pv),
                      seq AS (SELECT person, path, row_number() OVER (PARTITION BY person ORDER BY ts, event_id) AS n
                              FROM collapsed WHERE prev IS DISTINCT FROM path),
                      anchor AS (SELECT person, min(n) AS n0 FROM seq WHERE path = '/' GROUP BY person)
                      SELECT s.n - a.n0 AS step, s.path, count(*) FROM seq s JOIN anchor a USING (person)
                      WHERE s.n BETWEEN a.n0 AND a.n0 + 5 GROUP BY 1, 2 ORDER BY 1, 3 DESC"),
            from: f30,
            to: t30,
        },
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The sum of a metric over every bucket of every series.
fn sum_series(http: &Value, metric: &str) -> u64 {
    let series = http["series"].as_array().cloned().unwrap_or_default();
    let values = series.iter().flat_map(|s| s["metrics"][metric].as_array().cloned().unwrap_or_default());
    values.filter_map(|v| v.as_f64()).sum::<f64>() as u64
}

/// A short digest of an answer, to show both sides answered the same question.
fn digest(name: &str, http: &Value, rows: &[tokio_postgres::Row]) -> String {
    match name {
        n if n.starts_with("daily unique") => {
            let ours = sum_series(http, "unique_persons");
            let sql: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
            format!("sum of days: {ours} vs {sql}")
        }
        n if n.starts_with("top pages") => {
            let ours = &http["rows"][0];
            let sql = rows.first().map(|r| (r.get::<_, Option<String>>(0), r.get::<_, i64>(1)));
            format!("top: {} {} vs {:?}", ours["value"], ours["metrics"]["unique_persons"], sql)
        }
        n if n.contains("funnel") => {
            let ours: Vec<u64> = http["total"]["steps"]
                .as_array()
                .map(|s| s.iter().filter_map(|s| s["count"].as_u64()).collect())
                .unwrap_or_default();
            let sql: Vec<i64> = rows.first().map(|r| (0..4).map(|i| r.get::<_, i64>(i)).collect()).unwrap_or_default();
            format!("steps: {ours:?} vs {sql:?}")
        }
        n if n.contains("retention") => {
            let ours: u64 =
                http["cohorts"].as_array().map(|c| c.iter().filter_map(|c| c["size"].as_u64()).sum()).unwrap_or(0);
            let sql: i64 = rows.iter().filter(|r| r.get::<_, i64>(1) == 0).map(|r| r.get::<_, i64>(2)).sum();
            format!("cohort persons: {ours} vs {sql}")
        }
        n if n.starts_with("paths") => {
            let ours = http["persons"].as_u64().unwrap_or(0);
            let sql: i64 = rows.iter().filter(|r| r.get::<_, i64>(0) == 0).map(|r| r.get::<_, i64>(2)).sum();
            format!("persons at the anchor: {ours} vs {sql}")
        }
        n if n.contains("country") => {
            let sql: i64 = rows.iter().map(|r| r.get::<_, i64>(2)).sum();
            format!("events: {} vs {sql}", sum_series(http, "count"))
        }
        _ => format!("{} rows", rows.len()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let total: usize = arg("--events", 1_000_000);
    let concurrency: usize = arg("--concurrency", 4);
    let per_request: usize = arg("--per-request", 500);
    let runs: usize = arg("--runs", 5).max(1);
    let cfg = synth_config();
    if flag("--load-only") {
        return load_only(cfg, total, concurrency, per_request).await;
    }

    // `--keep DIR`: the cluster lives in DIR and the loaded data set is reused by later runs
    // (same seed and size), so changes to the read side can be timed without loading again;
    // migrations added since are applied and the rollup job catches up, as in a deployment.
    let keep = opt("--keep").map(std::path::PathBuf::from);
    let tmp = tempfile::Builder::new().prefix("nexus-bench-query-").tempdir_in("/tmp")?;
    let data_dir = match &keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => tmp.path().to_path_buf(),
    };
    // fsync off: only the load is faster; the queries read the same pages either way.
    let pg = EmbeddedPostgres::start(&EmbeddedOptions { data_dir: data_dir.clone(), no_fsync: true })?;
    store::ensure_database(&pg.connection_string("postgres"), "bench").await?;
    let url = pg.connection_string("bench");
    let pool = store::pool(&url, 2)?;
    store::migrate(&pool).await?;
    let saved = data_dir.join(format!("bench-{total}-seed{}.json", cfg.seed));
    let secret = random_secret();
    let origin = start_origin(&url, &secret).await?;
    let (project, loaded, cfg) = match std::fs::read(&saved) {
        Ok(bytes) if keep.is_some() => {
            let (project, loaded, end): (store::projects::NewProject, usize, DateTime<Utc>) =
                serde_json::from_slice(&bytes)?;
            println!("reusing {loaded} events loaded earlier into {}", data_dir.display());
            (project, loaded, SynthConfig { end, ..cfg })
        }
        _ => {
            let project = store::projects::create_project(&pool, "bench", "UTC", &[]).await?;
            let loaded = load(&origin.base, &project.write_key, &secret, cfg, total, concurrency, per_request).await;
            let (loaded, _) = loaded.inspect_err(|_| {
                // The origin logs storage errors without their detail; the server's log has it.
                let log = std::fs::read_to_string(data_dir.join("postgres.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("postgresql log, last lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            })?;
            if keep.is_some() {
                std::fs::write(&saved, serde_json::to_vec(&(&project, loaded, cfg.end))?)?;
            }
            (project, loaded, cfg)
        }
    };

    let started = Instant::now();
    bring_rollups_up_to_date(&pool).await?;
    let client = pool.get().await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    println!("rollups and VACUUM ANALYZE: {:.1} s", started.elapsed().as_secs_f64());

    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", project.read_key);
    let mut table = Vec::new();
    for case in cases(cfg.end.date_naive()) {
        let ask = || async {
            let res = http
                .post(format!("{}{}", origin.base, case.path))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(case.body.to_string())
                .send()
                .await?;
            let status = res.status();
            let answer: Value = res.json().await?;
            anyhow::ensure!(status.is_success(), "{} answered {status}: {answer}", case.path);
            Ok(answer)
        };
        let stmt = client.prepare(case.sql).await.with_context(|| format!("preparing the sql of {}", case.name))?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&project.project_id, &case.from, &case.to];
        // Warm-up: caches, plans, connections.
        // An answer that is not a 2xx (a statement timeout at 10M events, say) is reported in
        // the table, and the other questions still run.
        let mut answer = ask().await;
        let mut rows = client.query(&stmt, &params).await?;
        let (mut ours, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            if answer.is_ok() {
                let t = Instant::now();
                answer = ask().await;
                ours.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let t = Instant::now();
            rows = client.query(&stmt, &params).await?;
            plain.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (ours, plain) = (if ours.len() == runs { median(ours) } else { f64::NAN }, median(plain));
        let check = match &answer {
            Ok(answer) => digest(case.name, answer, &rows),
            Err(e) => format!("our endpoint failed: {e}"),
        };
        println!("{:<40} nexus {ours:>9.1} ms   plain SQL {plain:>9.1} ms   {check}", case.name);
        table.push((case.name, ours, plain, check));
    }
    drop(origin);
    drop(client);
    pool.close();
    drop(pg);

    println!(
        "\nanalytics benchmark: {loaded} events (seed {}, {} days), median of {runs} runs after a warm-up",
        cfg.seed, cfg.days
    );
    println!("{:<40} {:>12} {:>14} {:>9}", "query", "nexus ms", "plain SQL ms", "speed-up");
    for (name, ours, plain, _) in &table {
        println!("{name:<40} {ours:>12.1} {plain:>14.1} {:>8.1}x", plain / ours);
    }
    Ok(())
}

/// Brings the rollups (and the per-person sequences they rebuild) up to date before timing, as
/// the background job would between ingest and the dashboards' reads.
async fn bring_rollups_up_to_date(pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    // The origin's own job may hold some marks (run_pending skips those): wait until none is left.
    let mut marks = 0;
    loop {
        marks += store::rollups::run_pending(pool).await?;
        let left: i64 = pool.get().await?.query_one("SELECT count(*) FROM rollup_dirty", &[]).await?.get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("rollups: {marks} dirty marks recomputed here (the rest by the origin's job)");
    Ok(())
}
