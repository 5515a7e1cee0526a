//! A private RabbitMQ node for one test: its own node name, AMQP and distribution ports on
//! 127.0.0.1, its own mnesia, log and config files in a temporary directory, no plugins. It runs
//! `/usr/lib/rabbitmq/bin/rabbitmq-server` directly (the `/usr/sbin` wrapper switches users) in a
//! process group of its own, so [`PrivateRabbit::kill9`] signals exactly that group (by the PID
//! this helper started) and never the shared broker on 5672. [`PrivateRabbit::restart`] starts it
//! again on the same ports and data: durable quorum queues survive. Dropped: killed, directory
//! removed, even after a panic.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// How long a start may take (RabbitMQ needs ~6–10 s; more on a busy 2-core machine).
pub const START_WITHIN: Duration = Duration::from_secs(60);

pub struct PrivateRabbit {
    pub port: u16,
    pub dist_port: u16,
    /// `RABBITMQ_NODENAME`, for `rabbitmqctl -n`.
    pub node: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRabbit {
    /// Starts a fresh node and waits (bounded) until it has booted.
    pub fn start() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let dir = std::env::temp_dir().join(format!("wl-rabbit-{id}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("rabbit dirs");
        }
        let mut me = Self {
            port: crate::spare_port(),
            dist_port: crate::spare_port(),
            node: format!("wlfault{id}@localhost"),
            dir,
            child: None,
        };
        std::fs::write(
            me.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{}\nloopback_users.guest = true\n", me.port),
        )
        .expect("rabbitmq.conf");
        std::fs::write(me.dir.join("rabbitmq-env.conf"), "").expect("env file");
        std::fs::write(me.dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        me.launch();
        me
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn env(&self, cmd: &mut Command) {
        let d = &self.dir;
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbit.pid"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"));
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(SERVER);
        self.env(&mut cmd);
        let log = std::fs::File::create(self.dir.join("server.out")).expect("server.out");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{SERVER}: {e}"));
        self.child = Some(child);
        self.await_startup();
    }

    /// `rabbitmqctl -n <node> …` with this node's environment; stdout, or Err with both outputs.
    pub fn ctl(&self, args: &[&str], timeout_s: u64) -> Result<String, String> {
        let mut cmd = Command::new("timeout");
        cmd.arg(timeout_s.to_string()).arg(CTL).arg("-n").arg(&self.node).args(args);
        self.env(&mut cmd);
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn await_startup(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("private rabbitmq-server exited ({status}):\n{}", self.log_tail());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            if left == 0 {
                panic!(
                    "private RabbitMQ {} not up within {START_WITHIN:?}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            if self
                .ctl(&["await_startup", "--timeout", &left.min(20).to_string()], left.min(20) + 5)
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines the server printed.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL to the node's whole process group (the group this helper started); waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = Command::new("kill").args(["-9", "--", &format!("-{pgid}")]).status();
            let _ = child.kill();
            let _ = child.wait();
            // The beam may take a moment to let go of its ports.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the node again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Writes the node's Raft metadata to disk now. RabbitMQ 3.10 keeps a quorum queue's term and
    /// vote in dets tables that are saved every few minutes: a kill -9 within that window after a
    /// queue is declared brings the queue back at term 0, a follower that never calls an election
    /// (no leader, publishes unconfirmed and consumers unanswered, forever). A broker that has been
    /// up for minutes has saved them; a test that kills one seconds after declaring its queues calls
    /// this first.
    pub fn sync_metadata(&self) {
        self.ctl(&["eval", "[{T, dets:sync(T)} || T <- dets:all()]."], 30)
            .unwrap_or_else(|e| panic!("syncing the private node's metadata: {e}"));
    }

    /// `(queue, messages ready + unacknowledged)` for every queue on the node.
    pub fn queue_counts(&self) -> Result<Vec<(String, u64)>, String> {
        let out = self.ctl(&["list_queues", "-q", "--no-table-headers", "name", "messages"], 30)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let name = parts.next()?.to_string();
                let n = parts.next()?.parse().ok()?;
                Some((name, n))
            })
            .collect())
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
