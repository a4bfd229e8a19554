//! Ingest benchmark: sustained events/s over HTTP (batches of 100 realistic events) into
//! PostgreSQL, side by side in the same run with the raw limit, a `COPY ... FROM STDIN (FORMAT
//! text)` of the very same rows into the same table with the same indexes and server settings.
//!
//! Run with `cargo xtask bench-ingest` (or `cargo bench -p nexus-origin --bench ingest -- ARGS`).
//! Prints a table: events/s, CPU seconds per 1,000 events of each process (origin, PostgreSQL,
//! load generator), storage bytes per event, and the 2xx-to-visible latency. HTTP and COPY
//! alternate in `--rounds` rounds (3), each COPY taking the rows its round stored.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::SinkExt;
use nexus_origin::store::{
    self,
    embedded::{EmbeddedOptions, EmbeddedPostgres},
};
use serde_json::{json, Value};

/// CPU time (user + system) of a set of processes, in seconds.
fn cpu_of(pids: &[i32]) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            (ut + st) / tick
        })
        .sum()
}

/// The processes of the benchmark's own PostgreSQL: the postmaster (first line of
/// `postmaster.pid`) and its children. Other clusters on the machine (another benchmark, a test
/// run) are not counted.
fn postgres_pids(cluster_dir: &std::path::Path) -> Vec<i32> {
    let Some(postmaster) = std::fs::read_to_string(cluster_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    else {
        return Vec::new();
    };
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The field after the state, which follows the parenthesised command name.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid == postmaster || parent_of(*pid) == Some(postmaster))
        .collect()
}

/// Postgres backends come and go; sampling the set before and after keeps what both saw, plus
/// the CPU of processes that appeared (a new backend started from zero).
struct CpuSample {
    origin: f64,
    postgres: Vec<(i32, f64)>,
    me: f64,
}

fn sample(origin_pid: i32, cluster_dir: &std::path::Path) -> CpuSample {
    CpuSample {
        origin: cpu_of(&[origin_pid]),
        postgres: postgres_pids(cluster_dir).into_iter().map(|p| (p, cpu_of(&[p]))).collect(),
        me: cpu_of(&[std::process::id() as i32]),
    }
}

fn delta(before: &CpuSample, after: &CpuSample) -> (f64, f64, f64) {
    let pg: f64 = after
        .postgres
        .iter()
        .map(|(pid, t)| t - before.postgres.iter().find(|(p, _)| p == pid).map(|(_, t0)| *t0).unwrap_or(0.0))
        .sum();
    (after.origin - before.origin, pg, after.me - before.me)
}

/// The server's current WAL position, in bytes.
async fn wal_position(pool: &deadpool_postgres::Pool) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT (pg_current_wal_lsn() - '0/0')::int8", &[]).await?.get(0))
}

/// Visitors active at once.
const ACTIVE_VISITORS: usize = 3000;
/// Batches a visitor appears in before a new visitor takes its place.
const VISITS: usize = 3;

/// Event `i` of the run. A batch holds the events of `sessions` visitors, each contributing a
/// run of consecutive events of its one session: what the edge's queue consumer forwards when it
/// merges SDK batches (one SDK batch is one browser, one session). A visitor comes back in
/// [`VISITS`] batches, so sessions grow across batches like real ones, and is then replaced by a
/// new one: new persons and sessions arrive all through the run (one per ~30 events, as on a
/// site whose visitors make ~30 events each), not only at its start.
fn realistic_event(i: usize, now: &str, sessions: usize) -> Value {
    let per_session = (BATCH / sessions.clamp(1, BATCH)).max(1);
    let slot = (i / BATCH) * sessions + (i % BATCH) / per_session;
    let visitor = slot / (ACTIVE_VISITORS * VISITS) * ACTIVE_VISITORS + slot % ACTIVE_VISITORS;
    let pages = ["/", "/pricing", "/docs/getting-started", "/blog/launch", "/signup", "/app/dashboard"];
    let path = pages[i % pages.len()];
    let page = i.is_multiple_of(3);
    let name = if page { Value::Null } else { json!(["signup_clicked", "plan_selected", "video_played"][i % 3]) };
    let plan = ["free", "pro", "team"][i % 3];
    let price = (i % 7) * 10;
    json!({
        "id": uuid::Uuid::now_v7(),
        "type": if page { "page" } else { "track" },
        "name": name,
        "anonymous_id": format!("anon-{visitor}"),
        "session_id": format!("sess-{visitor}"),
        "timestamp": now,
        "properties": {"plan": plan, "price": price, "experiment": "hero-b", "logged_in": i.is_multiple_of(2)},
        "context": {
            "url": format!("https://shop.example.com{path}?utm_source=newsletter&utm_medium=email"),
            "path": path,
            "title": "Shop - the best things",
            "referrer": "https://www.google.com/",
            "utm": {"source": "newsletter", "medium": "email", "campaign": "december"},
            "screen": {"width": 1440, "height": 900},
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "library": {"name": "nexus-js", "version": "0.1.0"}
        }
    })
}

/// Events per request.
const BATCH: usize = 100;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; only our flags matter.
    let total = arg("--events", 400_000);
    // 16 requests in flight: an origin behind the edge receives the batches of many worker
    // isolates at once. With 8, ~13% of the 2 cores stayed idle between round trips.
    let concurrency = arg("--concurrency", 16);
    let sessions = arg("--sessions-per-batch", 10);
    // HTTP and COPY alternate in rounds, so that the machine's speed drifting during a run (it
    // does, on a shared host) weighs on both sides alike; the ratio is taken per round.
    let rounds = arg("--rounds", 4).max(1);
    let batch_size = BATCH;
    let dir = tempfile::Builder::new().prefix("nexus-bench-").tempdir_in("/tmp")?;
    // Default (durable) server settings: fsync on, synchronous commit on.
    let opts = EmbeddedOptions { data_dir: dir.path().to_path_buf(), no_fsync: false };
    let mut pg = EmbeddedPostgres::start(&opts)?;
    // Diagnosis only (off by default, changes nothing else): per-statement time and WAL.
    let pg_stats = std::env::var_os("NEXUS_BENCH_PG_STATS").is_some();
    if pg_stats {
        let (c, conn) = tokio_postgres::connect(&pg.connection_string("postgres"), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'").await?;
        drop(c);
        drop(pg);
        pg = EmbeddedPostgres::start(&opts)?;
    }
    store::ensure_database(&pg.connection_string("postgres"), "bench").await?;
    let url = pg.connection_string("bench");
    let pool = store::pool(&url, 4)?;
    store::migrate(&pool).await?;
    if pg_stats {
        pool.get().await?.batch_execute("CREATE EXTENSION pg_stat_statements").await?;
    }
    let project = store::projects::create_project(&pool, "bench", "UTC", &[]).await?;

    // Where `EmbeddedPostgres` keeps the cluster (its `postmaster.pid` names the server).
    let cluster_dir = dir.path().join("pg");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut origin = std::process::Command::new(env!("CARGO_BIN_EXE_nexus-origin"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &url])
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting the origin")?;
    let origin_pid = origin.id() as i32;
    // A panic below must not leave the origin running (it would hold the caller's locks).
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(origin_pid);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/ready")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "origin not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let now = chrono::Utc::now().to_rfc3339();
    // Events are numbered across the whole run (warm-up and rounds), so visitors keep being
    // replaced from round to round.
    let mut made = 0;
    let mut make_batches = |n: usize| -> Vec<String> {
        let start = made;
        made += n / batch_size * batch_size;
        (0..n / batch_size)
            .map(|b| {
                let events: Vec<Value> =
                    (0..batch_size).map(|i| realistic_event(start + b * batch_size + i, &now, sessions)).collect();
                json!({"sent_at": now, "batch": events}).to_string()
            })
            .collect()
    };
    let send_all = |batches: Arc<Vec<String>>| {
        let http = http.clone();
        let url = format!("{base}/v1/batch?key={}", project.write_key);
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (http, url, next, batches) = (http.clone(), url.clone(), next.clone(), batches.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = batches.get(i) else { break };
                        let res = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap_or_default());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };

    // Warm-up: connections, prepared statements, partitions, every backend's caches. With 2,000
    // events the first round was still ~10 points of ratio below the others; the figure is the
    // sustained rate.
    send_all(Arc::new(make_batches(20_000))).await;
    let per_round = (total / rounds / batch_size).max(1) * batch_size;
    let events = per_round * rounds;
    if pg_stats {
        pool.get().await?.batch_execute("SELECT pg_stat_statements_reset()").await?;
    }
    let client = pool.get().await?;
    // One round: the HTTP ingest of `per_round` new events, then the COPY of exactly the rows it
    // stored, appended to the same table (both sides write into a table of the same size).
    let mut results: Vec<Round> = Vec::new();
    for round in 0..rounds {
        let batches = Arc::new(make_batches(per_round));
        // Both sides start from a checkpoint: clean buffers, and the same full-page writes to
        // pay (the COPY always had one; the HTTP side had the previous COPY's dirty pages).
        client.batch_execute("CHECKPOINT").await?;
        let wal_http = wal_position(&pool).await?;
        let round_start: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
        let before = sample(origin_pid, &cluster_dir);
        let started = Instant::now();
        send_all(batches).await;
        let http_secs = started.elapsed().as_secs_f64();
        let (origin_cpu, pg_cpu, me_cpu) = delta(&before, &sample(origin_pid, &cluster_dir));
        let wal_http = wal_position(&pool).await? - wal_http;
        let round_end: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
        if round == 0 {
            first_round_checks(&client, &http, &base, &project, sessions, pg_stats, per_round).await?;
        }
        let mut rows = Vec::new();
        {
            let sql = format!(
                "COPY (SELECT * FROM events WHERE received_at >= '{}' AND received_at <= '{}') TO STDOUT (FORMAT text)",
                round_start.to_rfc3339(),
                round_end.to_rfc3339()
            );
            let stream = client.copy_out(sql.as_str()).await?;
            futures_util::pin_mut!(stream);
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                rows.extend_from_slice(&chunk?);
            }
        }
        client.batch_execute("CHECKPOINT").await?;
        let wal_copy = wal_position(&pool).await?;
        let before = sample(origin_pid, &cluster_dir);
        let started = Instant::now();
        let sink = client.copy_in("COPY events FROM STDIN (FORMAT text)").await?;
        futures_util::pin_mut!(sink);
        for chunk in rows.chunks(256 * 1024) {
            sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
        }
        let copied = sink.finish().await?;
        let copy_secs = started.elapsed().as_secs_f64();
        let (_, copy_pg_cpu, copy_me_cpu) = delta(&before, &sample(origin_pid, &cluster_dir));
        let wal_copy = wal_position(&pool).await? - wal_copy;
        anyhow::ensure!(copied as usize == per_round, "round {round}: {copied} rows copied of {per_round} sent");
        let r = Round {
            http_secs,
            origin_cpu,
            pg_cpu,
            me_cpu,
            wal_http,
            copy_secs,
            copy_pg_cpu,
            copy_me_cpu,
            wal_copy,
            events: per_round as f64,
        };
        println!(
            "round {}: HTTP {:.0} events/s, COPY {:.0} events/s, ratio {:.1}%",
            round + 1,
            r.events / r.http_secs,
            r.events / r.copy_secs,
            r.copy_secs / r.http_secs * 100.0
        );
        results.push(r);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(origin_pid), nix::sys::signal::Signal::SIGTERM);
    let _ = origin.wait();
    drop(client);
    pool.close();
    drop(pg);

    let sum = |f: fn(&Round) -> f64| results.iter().map(f).sum::<f64>();
    let (n, http_secs, copy_secs) = (sum(|r| r.events), sum(|r| r.http_secs), sum(|r| r.copy_secs));
    let rate = n / http_secs;
    let copy_rate = n / copy_secs;
    let mut ratios: Vec<f64> = results.iter().map(|r| r.copy_secs / r.http_secs * 100.0).collect();
    ratios.sort_by(f64::total_cmp);
    let per_k = |cpu: f64| cpu / n * 1000.0;
    println!(
        "\ningest benchmark: {events} events in batches of {batch_size} ({sessions} sessions per batch), {concurrency} connections, durable settings, {rounds} rounds"
    );
    println!(
        "{:<34} {:>12} {:>14} {:>14} {:>14}",
        "path", "events/s", "origin cpu-s/k", "postgres cpu-s/k", "loadgen cpu-s/k"
    );
    println!(
        "{:<34} {:>12.0} {:>14.4} {:>14.4} {:>14.4}",
        "HTTP /v1/batch (origin enriches)",
        rate,
        per_k(sum(|r| r.origin_cpu)),
        per_k(sum(|r| r.pg_cpu)),
        per_k(sum(|r| r.me_cpu))
    );
    println!(
        "{:<34} {:>12.0} {:>14} {:>14.4} {:>14.4}",
        "COPY (FORMAT text), same rows",
        copy_rate,
        "-",
        per_k(sum(|r| r.copy_pg_cpu)),
        per_k(sum(|r| r.copy_me_cpu))
    );
    println!(
        "ratio HTTP / COPY: {:.1}% over all rounds; per round {} (median {:.1}%)",
        rate / copy_rate * 100.0,
        ratios.iter().map(|r| format!("{r:.1}%")).collect::<Vec<_>>().join(", "),
        ratios[ratios.len() / 2]
    );
    println!(
        "WAL: {:.0} bytes per event over HTTP, {:.0} by COPY",
        sum(|r| r.wal_http as f64) / n,
        sum(|r| r.wal_copy as f64) / n
    );
    Ok(())
}

/// One round's measurements: seconds, CPU seconds (origin, PostgreSQL, load generator), WAL bytes.
struct Round {
    http_secs: f64,
    origin_cpu: f64,
    pg_cpu: f64,
    me_cpu: f64,
    wal_http: i64,
    copy_secs: f64,
    copy_pg_cpu: f64,
    copy_me_cpu: f64,
    wal_copy: i64,
    events: f64,
}

/// After the first round's HTTP ingest (before any COPY): the statement statistics when asked
/// for, storage per event, and the time from a 2xx to the event being visible.
async fn first_round_checks(
    client: &deadpool_postgres::Client,
    http: &reqwest::Client,
    base: &str,
    project: &store::projects::NewProject,
    sessions: usize,
    pg_stats: bool,
    events: usize,
) -> anyhow::Result<()> {
    if pg_stats {
        let rows = client
            .query(
                "SELECT calls, total_exec_time, wal_records, wal_bytes::float8, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25",
                &[],
            )
            .await?;
        println!(
            "{:>8} {:>10} {:>8} {:>8} {:>9} query (per 1k events: ms, WAL records, WAL KB)",
            "calls", "ms", "rec", "walKB", "rows"
        );
        let k = events as f64 / 1000.0;
        for r in rows {
            let (calls, ms, rec, wal, n, q): (i64, f64, i64, f64, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get::<_, f64>(3), r.get(4), r.get(5));
            println!("{calls:>8} {:>10.2} {:>8.0} {:>8.1} {n:>9} {q}", ms / k, rec as f64 / k, wal / 1024.0 / k);
        }
        for r in client
            .query(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid)
                 FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd > 1000 ORDER BY relname",
                &[],
            )
            .await?
        {
            let (t, i, u, h, b): (String, i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            println!("{t}: {i} inserted, {u} updated ({h} HOT), {b} bytes");
        }
    }
    let stored: i64 = client.query_one("SELECT count(*) FROM events", &[]).await?.get(0);
    let bytes: i64 = client
        .query_one(
            "SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits
                     WHERE inhparent = 'events'::regclass)::int8
                  + pg_total_relation_size('event_ids')::int8",
            &[],
        )
        .await?
        .get(0);

    // 2xx -> visible to a query, one event at a time.
    let mut visible = Vec::new();
    for i in 0..200 {
        let ev = realistic_event(i, &chrono::Utc::now().to_rfc3339(), sessions);
        let id: uuid::Uuid = ev["id"].as_str().unwrap().parse()?;
        let res = http
            .post(format!("{base}/v1/batch?key={}", project.write_key))
            .header("content-type", "application/json")
            .body(json!({"batch": [ev]}).to_string())
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success());
        let acked = Instant::now();
        loop {
            let found = client
                // Through the id table's key, then the (project_id, timestamp) index: an indexed
                // lookup, so the figure is visibility, not a scan.
                .query_opt(
                    "SELECT 1 FROM event_ids i JOIN events e ON e.project_id = i.project_id
                       AND e.\"timestamp\" = i.\"timestamp\" AND e.event_id = i.event_id
                     WHERE i.project_id = $1 AND i.event_id = $2",
                    &[&project.project_id, &id],
                )
                .await?
                .is_some();
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        visible.push(acked.elapsed().as_secs_f64() * 1000.0);
    }
    visible.sort_by(f64::total_cmp);

    println!(
        "storage: {:.0} bytes per event (events + indexes + event_ids, {stored} rows)",
        bytes as f64 / stored as f64
    );
    println!(
        "2xx -> visible: p50 {:.2} ms, p95 {:.2} ms (n = {})",
        percentile(&visible, 0.5),
        percentile(&visible, 0.95),
        visible.len()
    );
    Ok(())
}
