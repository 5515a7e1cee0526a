//! A private `redis-server` for one test: its own spare port on 127.0.0.1, its own temporary
//! data directory and, optionally, its own `--aclfile`. It is stopped (by its PID) and its
//! directory removed when dropped, even after a panic.
//!
//! [`PrivateRedis::with_shipped_acl`] loads a copy of `infra/redis/users.acl` with the test's
//! stream prefix put in front of every `provider:` key pattern and the password placeholders
//! replaced by hashes of fresh passwords, plus a test-only superuser ([`ADMIN`]) to set up and
//! inspect what the other users may not. The shipped file keeps the production names.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k256::sha2::{Digest, Sha256};

/// The users of `infra/redis/users.acl`.
pub const AGENT: &str = "agent";
pub const BROKER: &str = "broker";
/// Added to the test's copy only: every command on every key, for set-up and inspection.
pub const ADMIN: &str = "wltest-admin";

/// The placeholders an operator replaces in the shipped file.
pub const AGENT_PLACEHOLDER: &str = "#AGENT_PASSWORD_SHA256";
pub const BROKER_PLACEHOLDER: &str = "#BROKER_PASSWORD_SHA256";

/// The shipped ACL file.
pub fn shipped_acl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/redis/users.acl")
}

/// `infra/redis/redis.conf`: the limits the agents' Redis runs with.
pub fn shipped_conf_path() -> PathBuf {
    shipped_acl_path().with_file_name("redis.conf")
}

/// The shipped config without its `aclfile` line (a test server gets its own ACL file).
pub fn conf_for_test(shipped: &str) -> String {
    shipped
        .lines()
        .filter(|l| !l.trim_start().starts_with("aclfile"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The server binary: `WORLDLAND_TEST_REDIS_SERVER`, else `/usr/bin/redis-server` when it exists,
/// else `redis-server` on the PATH.
pub fn server_binary() -> String {
    if let Ok(b) = std::env::var("WORLDLAND_TEST_REDIS_SERVER") {
        return b;
    }
    if Path::new("/usr/bin/redis-server").exists() {
        return "/usr/bin/redis-server".into();
    }
    "redis-server".into()
}

/// `sha256(password)` as lowercase hex: the `#<hash>` form of an ACL password.
pub fn password_hash(password: &str) -> String {
    Sha256::digest(password.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The shipped ACL text for a test: every key pattern `~provider:…` becomes
/// `~<prefix>provider:…`, the placeholders become `#<sha256>` of the given passwords, and the
/// test-only [`ADMIN`] user is appended.
pub fn acl_for_test(shipped: &str, prefix: &str, agent_password: &str, broker_password: &str, admin_password: &str) -> String {
    let mut text = shipped
        .replace("~provider:", &format!("~{prefix}provider:"))
        .replace(AGENT_PLACEHOLDER, &format!("#{}", password_hash(agent_password)))
        .replace(BROKER_PLACEHOLDER, &format!("#{}", password_hash(broker_password)));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("user {ADMIN} reset on #{} ~* &* +@all\n", password_hash(admin_password)));
    text
}

pub struct PrivateRedis {
    pub port: u16,
    /// Put in front of the stream names (and of the ACL's key patterns).
    pub prefix: String,
    /// Passwords by user; empty when the server runs without an ACL file.
    passwords: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// A server loaded with the test's copy of `infra/redis/users.acl`.
    pub fn with_shipped_acl() -> Self {
        let prefix = format!("wlacl-{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let shipped = std::fs::read_to_string(shipped_acl_path()).expect("infra/redis/users.acl");
        let passwords: Vec<(String, String)> = [AGENT, BROKER, ADMIN]
            .iter()
            .map(|u| (u.to_string(), uuid::Uuid::new_v4().simple().to_string()))
            .collect();
        let acl = acl_for_test(&shipped, &prefix, &passwords[0].1, &passwords[1].1, &passwords[2].1);
        let limits = conf_for_test(&std::fs::read_to_string(shipped_conf_path()).expect("infra/redis/redis.conf"));
        let mut server = Self::start_with(Some(&acl), Some(&limits))
            .unwrap_or_else(|log| panic!("redis-server with the test ACL and the shipped limits did not start:\n{log}"));
        server.prefix = prefix;
        server.passwords = passwords;
        server
    }

    /// A server without an ACL file: every connection is the all-powerful default user, as on a
    /// Redis nobody locked down. Attack tests run their attacks here too, to show they would work.
    pub fn without_acl() -> Self {
        let mut server = Self::start(None).unwrap_or_else(|log| panic!("redis-server did not start:\n{log}"));
        server.prefix = format!("wlacl-{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        server
    }

    /// Starts `redis-server` with `acl` (the text of an ACL file) or none. Err holds its log when
    /// it exits instead of serving (after a few tries on other ports when the port was taken).
    pub fn start(acl: Option<&str>) -> Result<Self, String> {
        Self::start_with(acl, None)
    }

    /// [`Self::start`], with `conf` (the text of a config file) loaded first.
    pub fn start_with(acl: Option<&str>, conf: Option<&str>) -> Result<Self, String> {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!("wl-redis-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let port = crate::spare_port();
            let mut cmd = Command::new(server_binary());
            if let Some(text) = conf {
                let file = dir.join("redis.conf");
                std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
                cmd.arg(&file);
            }
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(&dir)
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--daemonize")
                .arg("no")
                .arg("--logfile")
                .arg(dir.join("redis.log"));
            if let Some(text) = acl {
                let file = dir.join("users.acl");
                std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
                cmd.arg("--aclfile").arg(&file);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{}: {e}", server_binary()))?;
            let mut server = Self {
                port,
                prefix: String::new(),
                passwords: vec![],
                dir,
                child: Some(child),
            };
            match server.wait_until_serving(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(log) => {
                    let port_taken = log.contains("Address already in use");
                    last_log = log;
                    if !port_taken {
                        return Err(last_log);
                    }
                }
            }
        }
        Err(last_log)
    }

    fn wait_until_serving(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(format!("redis-server exited ({status}):\n{stderr}{}", self.log()));
            }
            // Its own log says so (a connect alone could reach another server that took the
            // port first), and it answers.
            if self.log().contains("Ready to accept connections") && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server not serving on {} after {limit:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// The password of `user` in the test's ACL copy.
    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no user {user} on this server"))
    }

    /// `redis://user:password@127.0.0.1:port` for `user`; without an ACL file every user is the
    /// default one, and the URL carries no credentials.
    pub fn url(&self, user: &str) -> String {
        if self.passwords.is_empty() {
            format!("redis://127.0.0.1:{}", self.port)
        } else {
            format!("redis://{user}:{}@127.0.0.1:{}", self.password(user), self.port)
        }
    }

    /// The URL with no credentials at all.
    pub fn anonymous_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The stream names under this server's prefix.
    pub fn streams(&self) -> worldland_core::streams::StreamNames {
        worldland_core::streams::StreamNames::new(self.prefix.clone())
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals this server's own PID (SIGKILL): nothing else is touched.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
