//! Start the real `realmhost` binary and talk to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token";

/// The compiled-plugin cache (`--plugin-cache`, here through its variable
/// `REALMHOST_PLUGIN_CACHE`) of every node these tests start: each built-in
/// plugin is compiled once per run instead of once per data directory.
pub fn plugin_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-plugin-cache")
}

/// A running node process.
pub struct NodeProc {
    pub child: Child,
    pub url: String,
}

impl NodeProc {
    /// Start `realmhost serve` on `data_dir`, on a free port, and wait until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                TOKEN,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--plugins-dir"])
            .arg(data_dir.join("no-plugins"))
            .args(extra)
            .env("REALMHOST_LOG", "error")
            .env("REALMHOST_PLUGIN_CACHE", plugin_cache())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start realmhost serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            assert!(Instant::now() < deadline, "node did not start in time");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("realmhost listening on ") {
                        break u.trim().to_owned();
                    }
                }
                _ => panic!("node exited before listening: {:?}", child.try_wait()),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// GET as an operator (with the admin token, which every scope accepts).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, Some(TOKEN))
    }

    /// GET with the given bearer token, or none.
    pub fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = Self::agent().get(&format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call().expect("GET");
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = Self::agent().post(&format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.send_json(body).expect("POST");
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    pub fn post_raw(&self, path: &str, body: &[u8], content_type: &str) -> (u16, Value) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.url))
            .header("Content-Type", content_type)
            .send(body)
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    /// Run a CLI command against this node.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_realmhost"))
            .args(args)
            .args(["--node", &self.url, "--token", TOKEN])
            .env("REALMHOST_LOG", "error")
            .output()
            .expect("run realmhost");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the crash path.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
