//! The embedded PostgreSQL through the real binary: fresh start, restart with data intact,
//! clean stop, and recovery after the origin was killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{batch, event, read};

struct Origin {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(data_dir: &Path) -> Origin {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-origin"))
        .args(["serve", "--demo", "--unsafe-no-fsync", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/ready")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "origin did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Origin { child, base }
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("pg/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // Signal 0 only checks that the process exists. A zombie counts as gone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !status.is_empty() && !status.contains(") Z ")
}

fn keys(data_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data_dir.join("demo-keys.json")).unwrap()).unwrap()
}

async fn count(o: &Origin, read_key: &str) -> i64 {
    let today = chrono::Utc::now().date_naive();
    let res = reqwest::Client::new()
        .get(format!("{}/v1/stats/events-per-day?from={today}&to={today}&include_bots=true", o.base))
        .bearer_auth(read_key)
        .send()
        .await
        .unwrap();
    let (_, v) = read(res).await;
    v["days"].as_array().unwrap().iter().map(|d| d["events"].as_i64().unwrap()).sum()
}

fn terminate(mut o: Origin) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(o.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = o.child.wait().unwrap();
    assert!(status.success(), "origin exit status {status}");
}

#[tokio::test]
async fn embedded_postgres_lifecycle() {
    let dir: PathBuf = tempfile::Builder::new().prefix("nexus-emb-").tempdir_in("/tmp").unwrap().keep();

    // 1. Fresh data directory: initdb, start, demo project with a private keys file.
    let o = start(&dir).await;
    let k = keys(&dir);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.join("demo-keys.json")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "keys file readable by its owner only");
    let write_key = k["write_key"].as_str().unwrap().to_owned();
    let read_key = k["read_key"].as_str().unwrap().to_owned();
    let res = reqwest::Client::new()
        .post(format!("{}/v1/batch?key={write_key}", o.base))
        .header("content-type", "application/json")
        .body(batch(&[event("a"), event("b")]))
        .send()
        .await
        .unwrap();
    assert_eq!(read(res).await.1["accepted"], 2);
    let pg = postmaster_pid(&dir).unwrap();
    assert!(alive(pg));

    // 2. Clean stop: no stray postgres.
    terminate(o);
    assert!(!alive(pg), "postgres {pg} still running after the origin stopped");
    assert!(postmaster_pid(&dir).is_none());

    // 3. Restart: same data, same demo project (not a second one).
    let o = start(&dir).await;
    assert_eq!(count(&o, &read_key).await, 2);
    assert_eq!(keys(&dir), k);

    // 4. SIGKILL leaves postgres running; the next origin takes over the same data.
    let pg = postmaster_pid(&dir).unwrap();
    let mut child = o.child;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive(pg), "postgres survives a SIGKILLed origin");
    let o = start(&dir).await;
    assert_eq!(count(&o, &read_key).await, 2, "data intact after SIGKILL");
    let new_pg = postmaster_pid(&dir).unwrap();
    assert!(!alive(pg) || new_pg == pg, "never two servers on one directory");
    terminate(o);
    assert!(!alive(new_pg));
    let _ = std::fs::remove_dir_all(&dir);
}
