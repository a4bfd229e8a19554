//! The embedded PostgreSQL: `initdb` once, `pg_ctl start` on a private unix socket, stop on exit.
//!
//! Hand-written rather than a crate (postgresql_embedded and friends download binaries from
//! GitHub, which this project's machines cannot reach): it drives the system's own PostgreSQL.
//! When we run as root, PostgreSQL (which refuses root) runs as the `postgres` user.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Uid, User};

/// What can go wrong with the embedded PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL binaries were found.
    #[error("postgresql was not found (looked for pg_ctl on PATH and in /usr/lib/postgresql/*/bin); install it (debian: apt-get install postgresql) or set DATABASE_URL to use an existing server")]
    NotInstalled,
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error("running as root, but there is no postgres user to run postgresql as (postgresql refuses root); create one or set DATABASE_URL")]
    NoPostgresUser,
    /// The `postgres` user cannot reach the data directory.
    #[error("the postgres user cannot reach {dir}: {blocker} is not searchable by it (mode {mode:o}); choose a --data-dir outside it (e.g. /var/lib/nexus) or set DATABASE_URL")]
    Unreachable {
        /// The data directory.
        dir: PathBuf,
        /// The ancestor that blocks access.
        blocker: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another origin holds the data directory.
    #[error("another nexus origin is running on {0}; stop it or choose another --data-dir")]
    Locked(PathBuf),
    /// A PostgreSQL tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// Which tool.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (and the server log tail, for start).
        stderr: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we tried.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + 'a {
    move |source| EmbeddedError::Io { what, path: path.to_path_buf(), source }
}

/// A running embedded PostgreSQL. Stopped by [`EmbeddedPostgres::stop`] (also on drop).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<User>,
    stopped: bool,
    // Held for our lifetime so that two origins never share a data directory. The OS releases it
    // when we die, even by SIGKILL, so a killed origin never blocks the next one.
    _lock: Flock<File>,
}

/// Options of [`EmbeddedPostgres::start`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Data directory (the cluster lives in `<data_dir>/pg`).
    pub data_dir: PathBuf,
    /// `fsync=off`: for throw-away test clusters only.
    pub no_fsync: bool,
}

/// Port number in the socket file name; nothing listens on TCP.
const PORT: u16 = 5432;

impl EmbeddedPostgres {
    /// Initialises the cluster if needed and starts it. A server left running by an origin that
    /// was killed is found through `postmaster.pid` and stopped first: never two on one directory.
    pub fn start(opts: &EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::NotInstalled)?;
        fs::create_dir_all(&opts.data_dir).map_err(io("create", &opts.data_dir))?;
        let data_dir = fs::canonicalize(&opts.data_dir).map_err(io("resolve", &opts.data_dir))?;
        let lock_path = data_dir.join("origin.lock");
        let lock_file = File::create(&lock_path).map_err(io("create", &lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| EmbeddedError::Locked(data_dir.clone()))?;

        let run_as = if Uid::effective().is_root() {
            let user = User::from_name("postgres").ok().flatten().ok_or(EmbeddedError::NoPostgresUser)?;
            check_reachable(&data_dir, &user)?;
            // The data directory is ours: let postgres pass through it (not list it) to reach
            // its own subdirectories. Our files in it (the demo keys) stay 0600.
            let meta = fs::metadata(&data_dir).map_err(io("inspect", &data_dir))?;
            if meta.mode() & 0o001 == 0 {
                let mode = (meta.mode() & 0o7777) | 0o001;
                fs::set_permissions(&data_dir, fs::Permissions::from_mode(mode)).map_err(io("chmod", &data_dir))?;
            }
            Some(user)
        } else {
            None
        };
        let cluster_dir = data_dir.join("pg");
        let socket_dir = socket_dir_for(&data_dir);
        for dir in [&cluster_dir, &socket_dir] {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))?;
            if let Some(user) = &run_as {
                std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .map_err(io("chown", dir))?;
            }
        }

        let pg = EmbeddedPostgres { bin_dir, cluster_dir, socket_dir, run_as, stopped: false, _lock: lock };
        if !pg.cluster_dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %pg.cluster_dir.display(), "initialising embedded postgresql");
            pg.tool(
                "initdb",
                &[
                    "-D".into(),
                    pg.cluster_dir.clone().into(),
                    "-U".into(),
                    "postgres".into(),
                    "--auth=trust".into(),
                    "-E".into(),
                    "UTF8".into(),
                    "--no-locale".into(),
                ],
            )?;
        }
        if pg.cluster_dir.join("postmaster.pid").exists() && pg.is_running() {
            // We hold the directory lock, so no live origin owns this server: it was left behind
            // by one that was killed. Stop it and start our own with our settings.
            tracing::warn!(dir = %pg.cluster_dir.display(), "stopping a postgresql left running by a previous origin");
            pg.pg_ctl_stop()?;
        }
        let mut server_opts = format!("-k {} -p {PORT} -c listen_addresses=''", pg.socket_dir.display());
        if opts.no_fsync {
            server_opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = data_dir.join("postgres.log");
        if let Some(user) = &pg.run_as {
            // The log file is written by the server process, as postgres.
            let _ = File::create(&log);
            let _ = std::os::unix::fs::chown(&log, Some(user.uid.as_raw()), Some(user.gid.as_raw()));
        }
        let started = pg.tool(
            "pg_ctl",
            &[
                "-D".into(),
                pg.cluster_dir.clone().into(),
                "-l".into(),
                log.clone().into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-o".into(),
                server_opts.into(),
                "start".into(),
            ],
        );
        if let Err(EmbeddedError::Tool { tool, status, stderr }) = started {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: String =
                tail.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(EmbeddedError::Tool { tool, status, stderr: format!("{stderr}\n{tail}") });
        }
        started?;
        tracing::info!(socket = %pg.socket_dir.display(), "embedded postgresql started");
        Ok(pg)
    }

    /// A libpq-style connection string for the `postgres` database on our socket.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!("host={} port={PORT} user=postgres dbname={dbname}", self.socket_dir.display())
    }

    /// Stops the server (fast mode: running transactions are rolled back, no data is lost).
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if !self.is_running() {
            return Ok(());
        }
        self.pg_ctl_stop()?;
        tracing::info!("embedded postgresql stopped");
        Ok(())
    }

    /// For test harnesses that keep one server for a whole test binary (a static is never
    /// dropped): a detached watcher stops the server and deletes `remove_dir` once process
    /// `pid` has exited, however it exits.
    pub fn stop_when_process_exits(&self, pid: u32, remove_dir: &Path) -> Result<(), EmbeddedError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let runner = match &self.run_as {
            Some(user) => format!("runuser -u {} -- ", user.name),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {runner}'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
            pg_ctl.display(),
            self.cluster_dir.display(),
            remove_dir.display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(io("spawn watcher for", &self.cluster_dir))?;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.tool("pg_ctl", &["-D".into(), self.cluster_dir.clone().into(), "status".into()]).is_ok()
    }

    fn pg_ctl_stop(&self) -> Result<(), EmbeddedError> {
        self.tool(
            "pg_ctl",
            &[
                "-D".into(),
                self.cluster_dir.clone().into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-m".into(),
                "fast".into(),
                "stop".into(),
            ],
        )
        .map(|_| ())
    }

    fn tool(&self, tool: &'static str, args: &[OsString]) -> Result<Output, EmbeddedError> {
        let program = self.bin_dir.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(&user.name).arg("--").arg(&program);
                c
            }
            None => Command::new(&program),
        };
        // Run from a directory postgres can read: runuser keeps our cwd, which may be private.
        cmd.args(args).current_dir("/");
        let out = cmd.output().map_err(io("run", &program))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(EmbeddedError::Tool {
                tool,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "stopping embedded postgresql failed");
        }
    }
}

/// Finds the directory with `pg_ctl`: PATH first, then the newest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|d| d.join("pg_ctl").is_file() && d.join("initdb").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("pg_ctl").is_file().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

/// Unix socket paths are limited to 107 bytes; a deep data directory gets its socket in /tmp.
fn socket_dir_for(data_dir: &Path) -> PathBuf {
    let own = data_dir.join("run");
    if own.as_os_str().len() + "/.s.PGSQL.5432.lock".len() < 100 {
        own
    } else {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        PathBuf::from(format!("/tmp/nexus-pg-{}", hex::encode(&digest[..6])))
    }
}

/// Checks that `user` can traverse every ancestor of `dir` (a 0700 /root blocks it).
fn check_reachable(dir: &Path, user: &User) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(io("inspect", ancestor))?;
        let mode = meta.mode() & 0o777;
        let searchable = if meta.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(EmbeddedError::Unreachable { dir: dir.to_path_buf(), blocker: ancestor.to_path_buf(), mode });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_dirs_get_a_short_socket_dir() {
        assert_eq!(socket_dir_for(Path::new("/srv/nexus")), PathBuf::from("/srv/nexus/run"));
        let deep = PathBuf::from(format!("/srv/{}", "d".repeat(120)));
        let s = socket_dir_for(&deep);
        assert!(s.to_string_lossy().starts_with("/tmp/nexus-pg-"), "{}", s.display());
        assert_eq!(s, socket_dir_for(&deep), "stable across starts");
    }
}
