//! `cargo xtask run`: the whole stack on this machine, until Ctrl-C.
//!
//! origin (embedded PostgreSQL) <- edge in `wrangler dev` (workerd) <- demo page with the npm
//! package. Ctrl-C stops everything it started, the embedded PostgreSQL included.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::cmd;

use crate::{edge, sdk, setup, Ctx};

/// Where each part listens.
const ORIGIN_ADDR: &str = "127.0.0.1:8700";
const EDGE_PORT: &str = "8787";
const DEMO_PORT: &str = "8080";

/// A random hex string from the kernel's generator (no extra crate for one call).
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The local edge secret, made once and kept (0600) in `.nexus/edge-secret`.
fn dev_secret(data_dir: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("edge-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = random_hex(32)?;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?.write_all(secret.as_bytes())?;
    Ok(secret)
}

fn wait_ready(url: &str, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up ({status})");
        }
        let ok = Command::new("curl")
            .args(["-fs", "-o", "/dev/null", url])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success());
        if ok.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not become ready at {url}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Builds everything and runs the stack until Ctrl-C.
pub fn run(ctx: &Ctx) -> Result<()> {
    setup::ensure_tools(ctx)?;
    sdk::build(ctx)?;
    edge::build(ctx)?;
    let sh = &ctx.sh;
    cmd!(sh, "cargo build --release --locked -p nexus-origin").run()?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the ctrl-c handler")?;

    let data_dir = ctx.root.join(".nexus");
    let secret = dev_secret(&data_dir)?;
    let mut children: Vec<(&str, Child)> = Vec::new();
    let result = (|| -> Result<()> {
        let origin = Command::new(ctx.root.join("target/release/nexus-origin"))
            .args(["serve", "--demo", "--listen", ORIGIN_ADDR, "--edge-secret", &secret])
            .arg("--data-dir")
            .arg(&data_dir)
            .spawn()
            .context("starting the origin")?;
        children.push(("origin", origin));
        wait_ready(&format!("http://{ORIGIN_ADDR}/ready"), &mut children[0].1, "the origin")?;

        let edge = Command::new(ctx.node_bin("wrangler"))
            .current_dir(ctx.root.join("edge-worker"))
            .args(["dev", "--ip", "127.0.0.1", "--port", EDGE_PORT, "--show-interactive-dev-session=false"])
            .args(["--var", &format!("ORIGIN_URL:http://{ORIGIN_ADDR}")])
            .args(["--var", &format!("ORIGIN_SECRET:{secret}")])
            .args(["--var", &format!("VISITOR_SALT:{}", random_hex(16)?)])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .spawn()
            .context("starting wrangler dev")?;
        children.push(("edge", edge));
        wait_ready(&format!("http://127.0.0.1:{EDGE_PORT}/health"), &mut children[1].1, "wrangler dev")?;

        let demo = Command::new("node")
            .arg(ctx.root.join("e2e/static-server.mjs"))
            .args(["--port", DEMO_PORT, "--root"])
            .arg(ctx.root.join("npm"))
            .spawn()
            .context("starting the demo page server")?;
        children.push(("demo", demo));
        wait_ready(&format!("http://127.0.0.1:{DEMO_PORT}/demo/index.html"), &mut children[2].1, "the demo server")?;

        let keys: String = std::fs::read_to_string(data_dir.join("demo-keys.json")).unwrap_or_default();
        let write_key = keys
            .lines()
            .find_map(|l| l.trim().strip_prefix("\"write_key\": \""))
            .map(|s| s.trim_end_matches(['"', ',']).to_owned())
            .unwrap_or_default();
        eprintln!(
            "\nNexus is running:\n  demo page  http://127.0.0.1:{DEMO_PORT}/demo/index.html?endpoint=http://127.0.0.1:{EDGE_PORT}&key={write_key}\n  edge       http://127.0.0.1:{EDGE_PORT}/v1/batch (wrangler dev, workerd)\n  origin     http://{ORIGIN_ADDR} (/health, /ready, /metrics, /v1/stats/events-per-day)\n  keys       {}\n{keys}\nCtrl-C stops everything.",
            data_dir.join("demo-keys.json").display()
        );
        while !stop.load(Ordering::SeqCst) {
            for (name, child) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited ({status})");
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })();
    // Stop in reverse order; the origin last, so it stops its PostgreSQL after the edge is gone.
    for (name, mut child) in children.into_iter().rev() {
        if child.try_wait()?.is_none() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait()?.is_none() {
                eprintln!("{name} did not stop in 30 s; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        eprintln!("stopped {name}");
    }
    result
}
