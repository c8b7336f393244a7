//! A throwaway PostgreSQL cluster for tests.
//!
//! ```no_run
//! # async fn demo() {
//! use kuma_store::testing::TestPostgres;
//! let pg = TestPostgres::start();               // initdb + pg_ctl on a free loopback port
//! let config = pg.config();                     // database "kuma", ready for PostgresStore
//! kuma_store::migrate_up(&config).await.unwrap();
//! let store = kuma_store::PostgresStore::open(&config).await.unwrap();
//! let other = pg.create_database("second");     // another empty database, same cluster
//! # drop((store, other));
//! # }                                            // dropping `pg` stops the server and deletes its files
//! ```
//!
//! Binaries come from `PATH` (`initdb`, `pg_ctl`, `createdb`) or else the
//! newest `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so as
//! root the cluster runs as the `postgres` user (via `runuser`), in a
//! directory under `/tmp` owned by that user. Durability is off (`fsync`,
//! `synchronous_commit`, `full_page_writes`): this is for tests only.

use crate::PostgresConfig;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The OS user the cluster runs as when the tests run as root.
const ROOT_RUNS_AS: &str = "postgres";
const USER: &str = "kuma";

pub struct TestPostgres {
    // Dropped after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    run_as: Option<&'static str>,
    stopped: bool,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TestPostgres {
    /// Starts a cluster with an empty database `kuma`, or panics saying why.
    /// Blocks for a second or two; from async code prefer [`Self::start_async`].
    pub fn start() -> TestPostgres {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start a test PostgreSQL: {e}"))
    }

    /// [`Self::start`] on a blocking thread.
    pub async fn start_async() -> TestPostgres {
        tokio::task::spawn_blocking(Self::start)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub fn try_start() -> Result<TestPostgres, String> {
        let bin = find_bin_dir()?;
        let run_as = is_root().then_some(ROOT_RUNS_AS);
        let mut builder = tempfile::Builder::new();
        builder.prefix("kuma-test-pg-");
        // The server user must be able to reach the directory: /tmp always is.
        let dir = if run_as.is_some() {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .map_err(|e| format!("creating a temp dir: {e}"))?;
        let password = format!(
            "pw-{}-{}",
            std::process::id(),
            dir.path().display().to_string().len() ^ 0x5a5a
        );
        std::fs::write(dir.path().join("pwfile"), &password)
            .map_err(|e| format!("writing the password file: {e}"))?;
        if let Some(user) = run_as {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(dir.path()))?;
        }
        let mut pg = TestPostgres {
            dir,
            bin,
            port: 0,
            password,
            run_as,
            stopped: true,
        };
        pg.initdb()?;
        // Another process may grab the port between our probe and the bind: retry.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = kuma_testkit::free_port();
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.stopped = false;
                    pg.createdb("kuma")?;
                    return Ok(pg);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connection settings for the `kuma` database.
    pub fn config(&self) -> PostgresConfig {
        self.config_for("kuma")
    }

    /// Creates another empty database in this cluster and returns its settings.
    /// Panics if it exists or cannot be created.
    pub fn create_database(&self, name: &str) -> PostgresConfig {
        self.createdb(name)
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        self.config_for(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data in `data/`, server log in `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn config_for(&self, db: &str) -> PostgresConfig {
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: USER.into(),
            password: self.password.clone(),
            db_name: db.into(),
            connection_timeout: 10,
            max_open_connections: 20,
            ..PostgresConfig::default()
        }
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn initdb(&self) -> Result<(), String> {
        run(self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                USER,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!(
                "--pwfile={}",
                self.dir.path().join("pwfile").display()
            )))
        .map(drop)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB",
            self.port,
            self.dir.path().display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]))
        .map(drop)
        .map_err(|e| format!("{e}\nserver log:\n{}", self.log_tail()))
    }

    fn createdb(&self, name: &str) -> Result<(), String> {
        run(self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                name,
            ])
            .env("PGPASSWORD", &self.password))
        .map(drop)
    }

    /// Stops the server now (also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let result = run(self.command("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            "30",
            "stop",
        ]));
        if let Err(e) = result {
            eprintln!("TestPostgres: stopping the server failed: {e}");
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn is_root() -> bool {
    // /proc/self/status: "Uid:\t<real>\t<effective>..."
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The directory holding `initdb`, `pg_ctl` and `createdb`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "createdb"]
            .iter()
            .all(|t| d.join(t).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() {
                // A symlink farm (e.g. /usr/local/bin) may carry only some tools:
                // prefer the directory initdb really lives in.
                if let Ok(real) = std::fs::canonicalize(d.join("initdb"))
                    && let Some(parent) = real.parent()
                    && has_all(parent)
                {
                    return Ok(parent.to_path_buf());
                }
                if has_all(&d) {
                    return Ok(d);
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d).ok_or_else(|| {
        "initdb/pg_ctl/createdb not found on PATH nor in /usr/lib/postgresql/*/bin (install the `postgresql` package)".into()
    })
}
