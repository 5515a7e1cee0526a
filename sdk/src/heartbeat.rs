//! `worldland-provider-sdk run`: a signed heartbeat every interval. Each beat is built fresh when
//! it is sent, so an outage never leaves a backlog of stale heartbeats behind; a failed send is
//! retried with growing backoff (never slower than the interval) on a new connection. Every
//! command and connection attempt has a timeout ([`HeartbeatSettings::timeouts`]), so a Redis
//! that stops answering (a half-open socket after a failover) fails a beat instead of hanging
//! the loop.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, SecondsFormat, Utc};
use k256::ecdsa::SigningKey;
use tokio::sync::broadcast;
use worldland_core::messages::Heartbeat;
use worldland_core::signature::sign_personal;
use worldland_core::streams::StreamNames;

use crate::sequence::HeartbeatSequence;

/// Machine load at the moment of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub gpu: Vec<f64>,
    pub cpu: f64,
    pub memory: f64,
}

pub fn build_heartbeat(provider_id: &str, node_name: &str, status: &str, active_jobs: u32, usage: &Usage, now: DateTime<Utc>) -> Heartbeat {
    Heartbeat {
        provider_id: provider_id.into(),
        node_name: node_name.into(),
        status: status.into(),
        gpu_usage: usage.gpu.clone(),
        cpu_usage: usage.cpu,
        memory_usage: usage.memory,
        active_jobs,
        timestamp: now,
        seq: None,
    }
}

#[derive(Debug, Clone)]
pub struct HeartbeatSettings {
    pub redis_url: String,
    pub streams: StreamNames,
    pub provider_id: String,
    pub node_name: String,
    pub interval: Duration,
    /// Of the loop's connection: after a timed-out beat it is replaced, never waited on again.
    pub timeouts: worldland_redis::RedisTimeouts,
    /// Where the heartbeat sequence number is kept ([`crate::sequence`]); `None`: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatStats {
    pub sent: u64,
    pub failed: u64,
}

async fn send(
    conn: &mut redis::aio::ConnectionManager,
    s: &HeartbeatSettings,
    key: &SigningKey,
    usage: &Usage,
    seq: &mut HeartbeatSequence,
) -> redis::RedisResult<()> {
    let now = Utc::now();
    let hb = Heartbeat {
        seq: Some(seq.advance(now)),
        ..build_heartbeat(
            &s.provider_id,
            &s.node_name,
            worldland_core::messages::ProviderState::Available.as_str(),
            0,
            usage,
            now,
        )
    };
    let data = serde_json::to_string(&hb).expect("heartbeats serialise");
    redis::cmd("XADD")
        .arg(s.streams.heartbeat())
        .arg("*")
        .arg("data")
        .arg(&data)
        .arg("signature")
        .arg(sign_personal(key, data.as_bytes()))
        .arg("timestamp")
        .arg(now.to_rfc3339_opts(SecondsFormat::Secs, true))
        .query_async(conn)
        .await
}

/// The waits after consecutive failures to reach Redis (heartbeats, mining commands, the answer
/// wait): half a second, doubling each time, never longer
/// than the interval (except the first, which is always half a second), without end.
pub fn reconnect_backoff(interval: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_max_delay(interval)
        .without_max_times()
        .build()
}

/// Sends heartbeats until `shutdown` fires; returns what it did.
pub async fn run_heartbeats(
    s: HeartbeatSettings,
    key: SigningKey,
    mut usage: impl FnMut() -> Usage,
    mut shutdown: broadcast::Receiver<()>,
) -> HeartbeatStats {
    let mut stats = HeartbeatStats::default();
    let mut conn: Option<redis::aio::ConnectionManager> = None;
    let mut backoff = reconnect_backoff(s.interval);
    let mut next = tokio::time::Instant::now();
    let mut seq = HeartbeatSequence::open(s.state_dir.as_deref());
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let beat = async {
            let mut c = match conn.take() {
                Some(c) => c,
                None => worldland_redis::connect_with(&s.redis_url, s.timeouts).await?,
            };
            send(&mut c, &s, &key, &usage(), &mut seq).await?;
            redis::RedisResult::Ok(c)
        };
        // A beat in flight is finished, not dropped, on shutdown: it is bounded by the
        // connection's timeouts, and one that reached Redis is then counted as sent.
        match beat.await {
            Ok(c) => {
                // Kept only while beats go through: after a timed-out one the socket may be
                // half-open, and the manager does not replace it by itself.
                conn = Some(c);
                stats.sent += 1;
                backoff = reconnect_backoff(s.interval);
                next = tokio::time::Instant::now() + s.interval;
            }
            Err(e) => {
                stats.failed += 1;
                let retry_in = backoff.next().unwrap_or(s.interval);
                tracing::warn!(?retry_in, error = %e, "heartbeat not delivered; retrying on a new connection");
                next = tokio::time::Instant::now() + retry_in;
            }
        }
    }
    tracing::info!(?stats, "heartbeats stopped");
    stats
}

/// Reads CPU and memory load from /proc (CPU since the previous call) and GPU load from NVML.
pub struct UsageProbe {
    last_cpu: Option<(u64, u64)>,
    nvml: Option<nvml_wrapper::Nvml>,
}

impl Default for UsageProbe {
    fn default() -> Self {
        Self {
            last_cpu: None,
            nvml: nvml_wrapper::Nvml::init().ok(),
        }
    }
}

/// (busy, total) jiffies from the first line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let nums: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    let idle = nums.get(3)? + nums.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Percent of memory in use, from MemTotal and MemAvailable.
pub fn parse_memory_usage(text: &str) -> Option<f64> {
    let get = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
    };
    let (total, avail) = (get("MemTotal:")?, get("MemAvailable:")?);
    (total > 0.0).then(|| 100.0 * (total - avail) / total)
}

impl UsageProbe {
    pub fn sample(&mut self) -> Usage {
        let cpu_now = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_proc_stat);
        let cpu = match (self.last_cpu, cpu_now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        self.last_cpu = cpu_now;
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(parse_memory_usage)
            .unwrap_or(0.0);
        let gpu = self
            .nvml
            .as_ref()
            .and_then(|n| {
                let count = n.device_count().ok()?;
                (0..count)
                    .map(|i| n.device_by_index(i).ok()?.utilization_rates().ok().map(|u| f64::from(u.gpu)))
                    .collect()
            })
            .unwrap_or_default();
        Usage { gpu, cpu, memory }
    }
}

/// The systemd unit that keeps `run` going.
/// The systemd unit that runs `run`. The Redis URL carries the agent's password, so it is not on
/// the command line (world-readable in the unit and in `ps`): `run` reads it from `env_file`
/// (`WORLDLAND_REDIS_URL=…`, mode 0600; see [`environment_file`]).
pub fn systemd_unit(exe: &str, state_dir: &str, wallet_key: &str, env_file: &str) -> String {
    format!(
        "[Unit]\nDescription=WorldLand provider heartbeats\nAfter=network-online.target\nWants=network-online.target\n\n\
         [Service]\nEnvironmentFile={env_file}\nExecStart={exe} --state-dir {state_dir} run --wallet-key {wallet_key}\n\
         Restart=always\nRestartSec=5\nKillSignal=SIGTERM\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// The unit's environment file: the Redis URL (with its credentials).
pub fn environment_file(redis_url: &str) -> String {
    format!("WORLDLAND_REDIS_URL={redis_url}\n")
}

pub const UNIT_NAME: &str = "worldland-provider.service";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_heartbeats_back_off_from_half_a_second_up_to_the_interval() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let first = |interval: Duration, n: usize| reconnect_backoff(interval).take(n).collect::<Vec<_>>();
        assert_eq!(
            first(Duration::from_secs(30), 9),
            ms(&[500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
        );
        assert_eq!(first(Duration::from_secs(5), 6), ms(&[500, 1_000, 2_000, 4_000, 5_000, 5_000]));
        // A very short interval caps every wait after the first.
        assert_eq!(first(Duration::from_millis(300), 3), ms(&[500, 300, 300]));
        // The same schedule the loop used to compute by hand.
        for interval in [0, 1, 250, 500, 999, 1_000, 7_500, 10_000, 60_000, 3_600_000].map(Duration::from_millis) {
            let mut expected = Vec::new();
            let mut backoff = Duration::from_millis(500);
            for _ in 0..40 {
                expected.push(backoff);
                backoff = (backoff * 2).min(interval);
            }
            assert_eq!(first(interval, 40), expected, "interval {interval:?}");
        }
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n"),
            Some((200, 1000))
        );
        let mem = "MemTotal:       1000 kB\nMemFree: 100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_memory_usage(mem), Some(75.0));
        assert_eq!(parse_memory_usage("MemTotal: 0 kB\nMemAvailable: 0 kB"), None);
    }

    #[test]
    fn the_unit_runs_the_heartbeat_loop_and_restarts_it() {
        let unit = systemd_unit(
            "/usr/local/bin/worldland-provider-sdk",
            "/root/.worldland",
            "/root/key",
            "/root/.worldland/sdk.env",
        );
        assert!(unit.contains("ExecStart=/usr/local/bin/worldland-provider-sdk --state-dir /root/.worldland run --wallet-key /root/key\n"));
        assert!(unit.contains("EnvironmentFile=/root/.worldland/sdk.env"));
        let env = environment_file("redis://agent:s3cret@broker:6379");
        assert_eq!(env, "WORLDLAND_REDIS_URL=redis://agent:s3cret@broker:6379\n");
        assert!(
            !unit.contains("s3cret"),
            "the agent's password stays out of the unit and the command line"
        );
        assert!(unit.contains("Restart=always") && unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn heartbeats_have_the_agents_shape() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:30Z").unwrap().with_timezone(&Utc);
        let hb = build_heartbeat(
            "p",
            "gpu-01",
            "available",
            1,
            &Usage {
                gpu: vec![93.5, 0.0],
                cpu: 41.2,
                memory: 55.0,
            },
            now,
        );
        let v = serde_json::to_value(&hb).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"provider_id": "p", "node_name": "gpu-01", "status": "available", "gpu_usage": [93.5, 0.0],
                "cpu_usage": 41.2, "memory_usage": 55.0, "active_jobs": 1, "timestamp": "2026-01-01T00:00:30Z"})
        );
    }
}
