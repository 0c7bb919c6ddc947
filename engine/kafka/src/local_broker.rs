//! A local tansu broker for the demo and the integration tests: started on
//! a free loopback port with in-memory storage, stopped when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LocalBrokerError {
    #[error("the tansu broker is not installed at {0} (run scripts/setup.sh, or set RISKD_TANSU to its path)")]
    Missing(String),
    #[error("cannot start tansu: {0}")]
    Spawn(std::io::Error),
    #[error("tansu did not accept connections on {0} within 20 s")]
    Timeout(SocketAddr),
}

/// Where the tansu binary is: `RISKD_TANSU`, else the setup script's cached
/// root, else `tansu` on PATH.
pub fn tansu_path() -> PathBuf {
    if let Ok(p) = std::env::var("RISKD_TANSU") {
        return p.into();
    }
    let root = std::env::var("RISKD_TOOLS_ROOT").map(PathBuf::from).unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        PathBuf::from(home).join(".cache/riskd/tools")
    });
    let cached = root.join("bin/tansu");
    if cached.exists() {
        cached
    } else {
        "tansu".into()
    }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct LocalBroker {
    child: Child,
    addr: SocketAddr,
}

impl LocalBroker {
    /// Starts tansu with in-memory storage and waits until it accepts connections.
    pub fn start() -> Result<LocalBroker, LocalBrokerError> {
        let path = tansu_path();
        if path.components().count() > 1 && !path.exists() {
            return Err(LocalBrokerError::Missing(path.display().to_string()));
        }
        let port = free_port().map_err(LocalBrokerError::Spawn)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let url = format!("tcp://{addr}");
        let child = Command::new(&path)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    LocalBrokerError::Missing(path.display().to_string())
                } else {
                    LocalBrokerError::Spawn(e)
                }
            })?;
        let mut broker = LocalBroker { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || broker.child.try_wait().ok().flatten().is_some() {
                return Err(LocalBrokerError::Timeout(addr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
