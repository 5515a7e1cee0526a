//! CPU time of the process and of a thread, and work run on a thread of its own.

use std::time::Duration;

/// This process's CPU time (user + system), from /proc/self/stat.
pub(super) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// The CPU time of the calling thread (user + system): its run time from
/// /proc/thread-self/schedstat (nanoseconds), else its ticks from /proc/thread-self/stat.
pub(super) fn thread_cpu_time() -> Duration {
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
    {
        return Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// Runs `work` on a thread of its own, on a current-thread runtime made there (so whatever it
/// connects is driven on that thread too): its result and the thread's CPU time.
pub(super) fn on_own_thread<F, Fut, T>(name: &str, work: F) -> std::thread::JoinHandle<anyhow::Result<(T, Duration)>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let cpu0 = thread_cpu_time();
            let out = rt.block_on(work())?;
            drop(rt);
            Ok((out, thread_cpu_time().saturating_sub(cpu0)))
        })
        .expect("spawning a bench thread")
}

pub(super) async fn join_thread<T: Send + 'static>(h: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || h.join())
        .await?
        .map_err(|_| anyhow::anyhow!("a bench thread panicked"))?
}
