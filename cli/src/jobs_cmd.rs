//! `worldland jobs …`, `worldland capacity`, `worldland audit`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use worldland_core::bus::Bus;
use worldland_core::ledger::{job, Ledger, ModelCounts};
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest};
use worldland_core::messages::topics;
use worldland_core::state::{Item, ItemStore, Table, Value};

fn s<'a>(item: &'a Item, a: &str) -> &'a str {
    item.get(a).and_then(Value::as_str).unwrap_or("-")
}

fn n(item: &Item, a: &str) -> Option<i64> {
    item.get(a).and_then(Value::as_i64)
}

/// Waits (bounded) until the job item leaves `pending` (or appears at all).
async fn wait_settled(store: &dyn ItemStore, job_id: &str, done: &[&str]) -> anyhow::Result<Item> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(item) = store.get(Table::Jobs, job_id).await? {
            if done.contains(&s(&item, job::attr::STATE)) {
                return Ok(item);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no answer for {job_id} within 30 s: is the allocator running?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn allocate(store: &dyn ItemStore, bus: &dyn Bus, req: AllocateRequest) -> anyhow::Result<()> {
    bus.publish(topics::JOB_ALLOCATE, &format!("cli/{}", req.job_id), &serde_json::to_vec(&req)?)
        .await?;
    let item = wait_settled(store, &req.job_id, &["allocated", "rejected", "released", "cancelled"]).await?;
    show_item(&item);
    Ok(())
}

pub async fn release(store: &dyn ItemStore, bus: &dyn Bus, job_id: String, reason: String) -> anyhow::Result<()> {
    let req = ReleaseRequest {
        job_id: job_id.clone(),
        reason,
    };
    bus.publish(topics::JOB_RELEASE, &format!("cli/release/{job_id}"), &serde_json::to_vec(&req)?)
        .await?;
    let item = wait_settled(store, &job_id, &["released", "cancelled", "rejected"]).await?;
    show_item(&item);
    Ok(())
}

pub async fn list(store: &dyn ItemStore, state: Option<String>) -> anyhow::Result<()> {
    println!(
        "{:<24} {:<10} {:<24} {:>5} {:>12} {:>14}",
        "job", "state", "provider", "gpus", "minutes", "cost"
    );
    for item in store.scan(Table::Jobs).await? {
        if state.as_deref().is_some_and(|st| st != s(&item, job::attr::STATE)) {
            continue;
        }
        let gpus = s(&item, job::attr::ALLOCATION);
        let gpus = serde_json::from_str::<serde_json::Value>(gpus)
            .ok()
            .and_then(|v| v["gpus"].as_u64())
            .map(|g| g.to_string())
            .unwrap_or("-".into());
        let minutes = n(&item, job::attr::DURATION_MS)
            .map(|d| format!("{:.1}", d as f64 / 60_000.0))
            .unwrap_or("-".into());
        let cost = n(&item, job::attr::COST_MICROS)
            .map(|c| format!("{:.6}", c as f64 / 1e6))
            .unwrap_or("-".into());
        println!(
            "{:<24} {:<10} {:<24} {:>5} {:>12} {:>14}",
            s(&item, "id"),
            s(&item, job::attr::STATE),
            s(&item, job::attr::PROVIDER),
            gpus,
            minutes,
            cost
        );
    }
    Ok(())
}

fn show_item(item: &Item) {
    for (k, v) in item {
        let shown = match v {
            Value::S(s) => s.clone(),
            Value::N(n) => n.to_string(),
            Value::B(b) => b.to_string(),
            Value::M(m) => format!("{m:?}"),
        };
        println!("{k:<18} {shown}");
    }
}

pub async fn show(store: &dyn ItemStore, job_id: &str) -> anyhow::Result<()> {
    let item = store.get(Table::Jobs, job_id).await?.with_context(|| format!("no job {job_id}"))?;
    show_item(&item);
    Ok(())
}

/// Per-model totals across every provider with a ledger, and how many of those are available.
pub async fn capacity(store: &dyn ItemStore) -> anyhow::Result<()> {
    let mut per_model: BTreeMap<String, ModelCounts> = BTreeMap::new();
    let (mut cpu, mut mem) = ((0, 0), (0, 0));
    for item in store.scan(Table::Providers).await? {
        if s(&item, "state") != "available" {
            continue;
        }
        let Some(l) = Ledger::from_item(&item) else { continue };
        for (m, c) in l.models {
            let e = per_model.entry(m).or_default();
            e.total += c.total;
            e.free += c.free;
            e.used += c.used;
            e.mining += c.mining;
        }
        cpu = (cpu.0 + l.cpu_total, cpu.1 + l.cpu_free);
        mem = (mem.0 + l.mem_total, mem.1 + l.mem_free);
    }
    println!("available providers' capacity");
    println!("{:<28} {:>7} {:>7} {:>7} {:>7}", "GPU model", "total", "free", "in use", "mining");
    for (m, c) in &per_model {
        println!("{m:<28} {:>7} {:>7} {:>7} {:>7}", c.total, c.free, c.used, c.mining);
    }
    println!("CPU cores free {} of {}; memory free {} MiB of {}", cpu.1, cpu.0, mem.1, mem.0);
    Ok(())
}

/// Exits non-zero on any violation.
pub async fn audit(store: &dyn ItemStore) -> anyhow::Result<bool> {
    let violations = worldland_core::jobs::audit(store).await?;
    for v in &violations {
        println!("VIOLATION: {v}");
    }
    println!("audit: {} violation(s)", violations.len());
    Ok(violations.is_empty())
}
