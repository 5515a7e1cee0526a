//! A private dynalite for one test: its own spare port on 127.0.0.1 and its own data directory
//! (`--path`, so a restart on the same port keeps the tables), stopped by the PID this test
//! started — never the shared one scripts/test starts — and its directory removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateDynalite {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// dynalite's `cli.js`, where scripts/services.sh installs it (`TOOLS_DIR`, else `.tools`).
pub fn dynalite_cli() -> PathBuf {
    let tools = std::env::var("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let cli = tools.join("node_modules/dynalite/cli.js");
    assert!(cli.exists(), "{} missing: scripts/services.sh installs dynalite", cli.display());
    cli
}

pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Polls until `port` is open (or closed), panicking after `within`.
pub fn wait_port(port: u16, open: bool, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while port_open(port) != open {
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} not {} within {within:?}",
            if open { "open" } else { "closed" }
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Kills a private service's process (kill -9) and reaps it.
pub fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl PrivateDynalite {
    /// Started and listening (blocking: call it under `block_in_place` in a runtime).
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("wl-dynalite-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut me = Self {
            port: crate::spare_port(),
            dir,
            child: None,
        };
        me.launch();
        me
    }

    /// Starts the server on this port and data (again, after [`Self::kill9`]).
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("dynalite.log")).unwrap();
        let child = Command::new("node")
            .arg(dynalite_cli())
            .args(["--port", &self.port.to_string(), "--host", "127.0.0.1"])
            .args(["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0", "--path"])
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("node dynalite");
        self.child = Some(child);
        wait_port(self.port, true, Duration::from_secs(20), "dynalite");
    }

    /// kill -9, and waits until the port is closed.
    pub fn kill9(&mut self) {
        stop(&mut self.child);
        wait_port(self.port, false, Duration::from_secs(10), "dynalite after kill");
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }
}

impl Drop for PrivateDynalite {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
