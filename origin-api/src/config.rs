//! Command line and environment configuration, parsed once at start (clap).
//!
//! One typed struct per section; every default is documented on its field.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The `nexus-origin` command line.
#[derive(Debug, Parser)]
#[command(name = "nexus-origin", version, about = "Nexus origin: ingest, storage and queries")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (ingest, queries, health).
    Serve(ServeArgs),
    /// Create a project and print its keys (shown once: only their hashes are stored).
    CreateProject(CreateProjectArgs),
    /// Load historical events (NDJSON, one protocol event per line) through the ingest pipeline.
    Import(ImportArgs),
    /// Write deterministic synthetic events (NDJSON, one protocol event per line) to stdout.
    Generate(GenerateArgs),
}

/// `generate` options: `nexus-origin generate --events 1000000 --seed 1 | nexus-origin import --file -`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Events to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Seed: the same seed and end give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of history, ending at `--end`. Default 90.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// End of the window (RFC 3339, exclusive). Default: today's midnight, UTC.
    #[arg(long)]
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

/// `import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The project's write key.
    #[arg(long, env = "NEXUS_WRITE_KEY")]
    pub key: String,
    /// NDJSON file, one event per line (`-` for standard input).
    #[arg(long)]
    pub file: PathBuf,
    /// Events per write. Default 500.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Hide the progress bar (logs and scripts).
    #[arg(long, default_value_t = false)]
    pub quiet: bool,
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseConfig,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP settings.
    #[command(flatten)]
    pub http: HttpConfig,
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseConfig,
    /// Ingest settings.
    #[command(flatten)]
    pub ingest: IngestConfig,
    /// Background job settings.
    #[command(flatten)]
    pub jobs: JobsConfig,
}

/// `[jobs]`: the background job scheduler.
#[derive(Debug, Clone, Args)]
pub struct JobsConfig {
    /// How often each replica looks for due jobs, in seconds. Default 60.
    #[arg(long = "jobs-tick-secs", env = "NEXUS_JOBS_TICK_SECS", default_value_t = 60)]
    pub tick_secs: u64,
}

impl JobsConfig {
    /// The tick as a duration (at least one second).
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.tick_secs.max(1))
    }
}

/// `create-project` options.
#[derive(Debug, Args)]
pub struct CreateProjectArgs {
    /// Project name.
    #[arg(long)]
    pub name: String,
    /// IANA timezone of the project.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Browser origins allowed to send events (repeatable); none means any origin.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// Database settings.
    #[command(flatten)]
    pub db: DatabaseConfig,
}

/// `[http]`: where the service listens.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:8700`.
    #[arg(long, env = "NEXUS_LISTEN", default_value = "127.0.0.1:8700")]
    pub listen: SocketAddr,
}

/// `[database]`: which PostgreSQL to use.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection string. Without it an embedded PostgreSQL runs in `--data-dir`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory of the embedded PostgreSQL and the demo keys file. Default `./.nexus`.
    #[arg(long, env = "NEXUS_DATA_DIR", default_value = ".nexus")]
    pub data_dir: PathBuf,
    /// Run the embedded PostgreSQL with `fsync=off` (tests only: a crash can lose data).
    #[arg(long, env = "NEXUS_UNSAFE_NO_FSYNC", default_value_t = false)]
    pub unsafe_no_fsync: bool,
    /// Largest number of pooled connections. Default 16.
    #[arg(long, env = "NEXUS_DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
}

/// `[ingest]`: how events are taken in.
#[derive(Debug, Clone, Args)]
pub struct IngestConfig {
    /// Shared secret of the edge's HMAC signatures. Without it the signed endpoints answer 401.
    #[arg(long, env = "NEXUS_EDGE_SECRET")]
    pub edge_secret: Option<String>,
    /// Accepted distance between a signature's timestamp and our clock, in seconds. Default 300.
    #[arg(long, env = "NEXUS_SIGNATURE_WINDOW_SECS", default_value_t = protocol::limits::SIGNATURE_WINDOW_SECS)]
    pub signature_window_secs: i64,
    /// Create a demo project on first start and keep its keys in `<data-dir>/demo-keys.json`.
    #[arg(long, env = "NEXUS_DEMO", default_value_t = false)]
    pub demo: bool,
    /// Proxies (CIDR, repeatable or comma-separated) whose `X-Forwarded-For` is believed for direct
    /// ingest. Default: none (the peer address is the client).
    #[arg(long = "trusted-proxy", env = "NEXUS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// MaxMind-format database (GeoLite2, DB-IP) for the geo of direct ingest. Default: no geo.
    #[arg(long, env = "NEXUS_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// Write transactions running at once (each takes the requests waiting: a group commit).
    /// Default 4: enough to keep PostgreSQL busy while others wait for their commit's WAL flush.
    #[arg(long = "ingest-writers", env = "NEXUS_INGEST_WRITERS", default_value_t = 4)]
    pub writers: usize,
    /// Largest number of events one write transaction takes. Default 2000.
    #[arg(long = "ingest-group-events", env = "NEXUS_INGEST_GROUP_EVENTS", default_value_t = 2000)]
    pub max_group_events: usize,
}

impl IngestConfig {
    /// The writer's settings.
    pub fn writer(&self) -> crate::ingest::writer::WriterConfig {
        crate::ingest::writer::WriterConfig {
            writers: self.writers,
            max_group_events: self.max_group_events,
            ..Default::default()
        }
    }
}
