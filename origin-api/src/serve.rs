//! Start-up and shutdown: database (embedded or external), migrations, demo project, HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use tokio::net::TcpListener;

use crate::config::{Cli, Command, CreateProjectArgs, DatabaseConfig, ServeArgs};
use crate::http::{self, AppState};
use crate::store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::store::{self, projects::NewProject};

/// Database name used on the embedded server.
const EMBEDDED_DB: &str = "nexus";

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::CreateProject(args) => rt.block_on(create_project(args)),
        Command::Import(args) => rt.block_on(import(args)),
        Command::Generate(args) => generate(&args),
    }
}

/// `generate`: synthetic events as NDJSON on stdout, in batches of 100, each person's in time order.
fn generate(args: &crate::config::GenerateArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let midnight = chrono::Utc::now().date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let end = args.end.or(midnight).unwrap_or_else(chrono::Utc::now);
    let cfg = crate::synth::SynthConfig { seed: args.seed, days: args.days, end };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    for batch in crate::synth::Synth::new(cfg, args.events) {
        for e in batch {
            serde_json::to_writer(&mut out, &e.event)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// A connected, migrated database, and the embedded server behind it when there is one.
pub struct Database {
    /// The pool.
    pub pool: Pool,
    /// Kept alive for as long as the pool is used; stopped on drop.
    pub embedded: Option<EmbeddedPostgres>,
}

/// Connects to `DATABASE_URL`, or starts the embedded server; applies migrations.
pub async fn open_database(cfg: &DatabaseConfig) -> anyhow::Result<Database> {
    let (url, embedded) = match &cfg.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let opts = EmbeddedOptions { data_dir: cfg.data_dir.clone(), no_fsync: cfg.unsafe_no_fsync };
            let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&opts)).await??;
            store::ensure_database(&pg.connection_string("postgres"), EMBEDDED_DB).await?;
            (pg.connection_string(EMBEDDED_DB), Some(pg))
        }
    };
    let pool = store::pool(&url, cfg.pool_size)?;
    store::migrate(&pool).await.context("applying migrations")?;
    Ok(Database { pool, embedded })
}

async fn create_project(args: CreateProjectArgs) -> anyhow::Result<()> {
    let db = open_database(&args.db).await?;
    let p = store::projects::create_project(&db.pool, &args.name, &args.timezone, &args.allowed_origins).await?;
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}

/// `import`: streams an NDJSON file through the ingest pipeline in batches. Idempotent: a
/// re-run stores nothing twice (event ids are the dedup key).
async fn import(args: crate::config::ImportArgs) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let db = open_database(&args.db).await?;
    let project = crate::ingest::authorize_write(store::projects::resolve_key(&db.pool, &args.key).await?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let writer = crate::ingest::writer::Writer::start(db.pool.clone(), Default::default());
    let (reader, total): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let f = tokio::fs::File::open(&args.file).await.with_context(|| format!("opening {}", args.file.display()))?;
        let len = f.metadata().await?.len();
        (Box::new(f), Some(len))
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = total.map(indicatif::ProgressBar::new).unwrap_or_else(indicatif::ProgressBar::new_spinner);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let (mut accepted, mut rejected, mut line_no, mut bad_lines) = (0usize, 0usize, 0usize, Vec::new());
    let batch_size = args.batch.clamp(1, protocol::limits::MAX_EVENTS_PER_BATCH);
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        while batch.len() < batch_size {
            let Some(line) = lines.next_line().await? else { break };
            line_no += 1;
            bar.inc(line.len() as u64 + 1);
            if line.trim().is_empty() {
                continue;
            }
            let verdict = protocol::validate::validate_event_json(&line);
            if let Err(r) = &verdict {
                if bad_lines.len() < 10 {
                    bad_lines.push(format!("line {line_no}: {}", r.code));
                }
            }
            batch.push(verdict);
        }
        if batch.is_empty() {
            break;
        }
        let (a, r) = crate::ingest::ingest_import(&writer, &project, batch, chrono::Utc::now())
            .await
            .map_err(|e| anyhow::anyhow!("writing a batch failed: {e}"))?;
        accepted += a;
        rejected += r;
        bar.set_message(format!("{accepted} accepted, {rejected} rejected"));
    }
    bar.finish_and_clear();
    for l in &bad_lines {
        eprintln!("rejected {l}");
    }
    println!("{}", serde_json::json!({"lines": line_no, "accepted": accepted, "rejected": rejected}));
    Ok(())
}

fn demo_keys_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-keys.json")
}

/// Writes the demo keys to a file only its owner can read.
fn write_demo_keys(path: &Path, p: &NewProject) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(serde_json::to_string_pretty(p)?.as_bytes())?;
    Ok(())
}

async fn ensure_demo_project(pool: &Pool, data_dir: &Path) -> anyhow::Result<()> {
    let path = demo_keys_path(data_dir);
    if store::projects::count_projects(pool).await? == 0 {
        let p = store::projects::create_project(pool, "Demo", "UTC", &[]).await?;
        write_demo_keys(&path, &p).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "created the demo project");
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => eprintln!("demo project keys (from {}):\n{text}", path.display()),
        Err(_) => eprintln!("no demo keys file at {} (projects already existed)", path.display()),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
    let mut db = open_database(&args.db).await?;
    if args.ingest.demo {
        ensure_demo_project(&db.pool, &args.db.data_dir).await?;
    }
    let state = AppState {
        pool: db.pool.clone(),
        writer: crate::ingest::writer::Writer::start(db.pool.clone(), args.ingest.writer()),
        edge_secret: args.ingest.edge_secret.clone().map(|s| Arc::new(s.into_bytes())),
        signature_window_secs: args.ingest.signature_window_secs,
        metrics,
        trusted_proxies: Arc::new(args.ingest.trusted_proxies.clone()),
        // Twice the pool: enough to keep every connection busy while the next batches parse.
        ingest_permits: Arc::new(tokio::sync::Semaphore::new(args.db.pool_size * 2)),
        geoip: match &args.ingest.geoip_db {
            Some(path) => Some(Arc::new(crate::ingest::geoip::GeoIp::open(path)?)),
            None => None,
        },
    };
    // Jobs run on every replica; the jobs table makes sure each due job runs once.
    let runner = format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "origin".into()), std::process::id());
    let jobs = tokio::spawn(crate::jobs::scheduler(db.pool.clone(), runner, args.jobs.interval()));
    let listener =
        TcpListener::bind(args.http.listen).await.with_context(|| format!("binding {}", args.http.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "nexus origin listening");
    eprintln!("nexus origin listening on http://{addr}");
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    jobs.abort();
    db.pool.close();
    if let Some(pg) = db.embedded.as_mut() {
        let stop = pg.stop();
        if let Err(e) = stop {
            tracing::error!(error = %e, "stopping embedded postgresql failed");
        }
    }
    served?;
    Ok(())
}
