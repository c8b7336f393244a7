//! Test harness: a real `kuma-cp run` (embedded SQLite store, loopback, free
//! ports, temp work dir; killed on drop) and the real `kumactl` binary with
//! its own `--config-file` and `HOME`.
//!
//! kuma-cp is `$KUMA_CP_BIN` when set, else it is built once per test binary
//! with `cargo build --bin kuma-cp` (a no-op when fresh) next to kumactl in
//! the shared target dir, so a stale kuma-cp is never tested.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub const KUMACTL: &str = env!("CARGO_BIN_EXE_kumactl");

fn kuma_cp_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KUMA_CP_BIN") {
            return PathBuf::from(bin);
        }
        let kumactl = Path::new(KUMACTL);
        let release = kumactl.parent().is_some_and(|dir| dir.ends_with("release"));
        kuma_testkit::bin_dir(release).join("kuma-cp")
    })
}

pub use kuma_testkit::free_port;

/// A minimal HTTP/1.0 request to 127.0.0.1; `None` when nothing answers.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// One running kuma-cp; killed (and reaped) when dropped, also on panic.
pub struct ControlPlane {
    child: Child,
    pub api_port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts kuma-cp on free ports. A port picked as free can be taken by a
    /// test running in parallel before kuma-cp binds it; then try new ports.
    pub fn start() -> ControlPlane {
        for _ in 0..5 {
            match Self::try_start() {
                Ok(cp) => return cp,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("kuma-cp exited:\n{log}"),
            }
        }
        panic!("kuma-cp could not find free ports in 5 attempts");
    }

    fn try_start() -> Result<ControlPlane, String> {
        let dir = tempfile::tempdir().unwrap();
        let api_port = free_port();
        let diag_port = free_port();
        let dp_port = free_port();
        let log = std::fs::File::create(dir.path().join("kuma-cp.log")).unwrap();
        let child = Command::new(kuma_cp_bin())
            .arg("run")
            .env("KUMA_GENERAL_WORK_DIR", dir.path())
            .env("KUMA_API_SERVER_HTTP_INTERFACE", "127.0.0.1")
            .env("KUMA_API_SERVER_HTTP_PORT", api_port.to_string())
            .env("KUMA_DIAGNOSTICS_SERVER_PORT", diag_port.to_string())
            .env("KUMA_DP_SERVER_PORT", dp_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kuma-cp");
        let mut cp = ControlPlane {
            child,
            api_port,
            url: format!("http://127.0.0.1:{api_port}"),
            dir,
        };
        // Wait for readiness; give up (with the log) if kuma-cp exits or
        // never becomes ready. This bounds a hang, it asserts no timing.
        for _ in 0..1200 {
            if let Some(status) = cp.child.try_wait().unwrap() {
                return Err(format!("exit status {status}:\n{}", cp.log()));
            }
            if http(diag_port, "GET", "/ready", None).is_some_and(|(s, _)| s == 200)
                && http(api_port, "GET", "/", None).is_some_and(|(s, _)| s == 200)
            {
                return Ok(cp);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("kuma-cp never became ready:\n{}", cp.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kuma-cp.log")).unwrap_or_default()
    }

    /// The admin user token kuma-cp bootstraps (GlobalSecret `admin-user-token`).
    pub fn admin_token(&self) -> String {
        let (status, body) = http(
            self.api_port,
            "GET",
            "/global-secrets/admin-user-token",
            None,
        )
        .expect("kuma-cp answers");
        assert_eq!(status, 200, "{body}");
        let secret: serde_json::Value = serde_json::from_str(&body).unwrap();
        let data = secret["data"].as_str().unwrap();
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
        )
        .unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one kumactl run printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts success and gives stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "kumactl failed: {self:#?}");
        self.stdout
    }

    /// Asserts exit code 1 and gives stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert_eq!(self.code, 1, "kumactl should have failed: {self:#?}");
        self.stderr
    }
}

/// kumactl with a private HOME and config file.
pub struct Kumactl {
    pub home: tempfile::TempDir,
    pub config: PathBuf,
}

impl Kumactl {
    /// A kumactl whose config file exists and is empty (no control planes).
    pub fn new() -> Kumactl {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("kumactl-config");
        std::fs::write(&config, "").unwrap();
        Kumactl { home, config }
    }

    /// A kumactl whose active control plane is `cp` (added through kumactl).
    pub fn for_cp(cp: &ControlPlane) -> Kumactl {
        let k = Kumactl::new();
        k.run(&[
            "config",
            "control-planes",
            "add",
            "--name",
            "test",
            "--address",
            &cp.url,
        ])
        .ok();
        k
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(KUMACTL)
            .arg("--config-file")
            .arg(&self.config)
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("KUMACTL_CONFIG_FILE")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kumactl");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Writes a file in this kumactl's temp dir and gives its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// Replaces the AGE column (the last one, `42s`, `3m`, …) with `<age>`.
pub fn normalise_ages(table: &str) -> String {
    table
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                return line.to_owned();
            }
            match line.rsplit_once(' ') {
                Some((head, last))
                    if last.len() > 1
                        && last[..last.len() - 1].chars().all(|c| c.is_ascii_digit())
                        && last.ends_with(['s', 'm', 'h', 'd', 'y']) =>
                {
                    format!("{head} <age>")
                }
                _ => line.to_owned(),
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// Compares with `ctl/tests/golden/<name>`; `KUMACTL_GOLDEN_UPDATE=1` rewrites it.
#[track_caller]
pub fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KUMACTL_GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with KUMACTL_GOLDEN_UPDATE=1",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs (KUMACTL_GOLDEN_UPDATE=1 refreshes it)",
        path.display()
    );
}

/// The payload of a JWT, decoded (not verified).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The valid resource fixtures the model crate keeps, with their paths.
pub fn valid_fixtures() -> Vec<(PathBuf, serde_yaml::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/model/tests/fixtures/valid");
    let mut out: Vec<(PathBuf, serde_yaml::Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let value = serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
