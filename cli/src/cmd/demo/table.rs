//! The demo's summary as a table.

use super::lifecycle::{LifecycleSummary, Market};
use super::DemoSummary;

pub fn print_table(s: &DemoSummary) {
    println!("\nWorldLand demo — {}", s.backend);
    println!(
        "{} providers, {} bad registrations, {:.0} ms\n",
        s.providers, s.bad_registrations, s.elapsed_ms
    );
    println!("{:<28} {:>8}", "providers per state", "count");
    for (state, n) in &s.providers_per_state {
        println!("  {state:<26} {n:>8}");
    }
    println!("\n{:<28} {:>8}", "rejections per reason", "count");
    for (reason, n) in &s.rejections_per_reason {
        println!("  {reason:<26} {n:>8}");
    }
    println!(
        "\nsealed join commands opened by their provider: {}/{}",
        s.sealed_joins_opened, s.providers
    );
    println!("\n{:<56} {:>9} {:>9} {:>9}", "stage", "median ms", "p95 ms", "max ms");
    for (name, t) in &s.stage_times {
        println!("  {name:<54} {:>9.2} {:>9.2} {:>9.2}", t.median_ms, t.p95_ms, t.max_ms);
    }
    if let Some(l) = &s.lifecycle {
        print_lifecycle(l);
        print_market(&l.market);
    }
    if !s.unanswered.is_empty() {
        println!("\nNEITHER APPROVED NOR REJECTED: {:?}", s.unanswered);
    }
}

fn print_lifecycle(l: &LifecycleSummary) {
    println!(
        "\nLifecycle, {} virtual minutes on a virtual clock ({} heartbeats)",
        l.virtual_minutes, l.heartbeats
    );
    println!("{:<28} {:>8}", "providers per state", "count");
    for (state, n) in &l.providers_per_state {
        println!("  {state:<26} {n:>8}");
    }
    println!(
        "  died at minute 7: {}, detected offline: {}, came back at minute 12: {}, available again: {}",
        l.died, l.detected_offline, l.came_back, l.back_available
    );
    let t = &l.offline_detection_latency_s;
    println!(
        "  offline-detection latency: median {:.0} s, max {:.0} s (bound: threshold + one sweep = {} s)",
        t.median, t.max, l.detection_bound_s
    );
    println!(
        "  Kubernetes writes per provider per minute (steady state): {:.3}",
        l.kubernetes_writes_per_provider_minute
    );
}

fn print_market(m: &Market) {
    println!(
        "\nCustomers, from minute 2: {} jobs requested, {} allocated",
        m.jobs_requested, m.jobs_allocated
    );
    println!("  rejected per reason: {:?}", m.rejected_per_reason);
    println!("  closed per reason:   {:?}", m.jobs_closed_per_reason);
    let pct = |v: &[f64]| v.iter().map(|x| format!("{:.0}%", x * 100.0)).collect::<Vec<_>>().join(" ");
    println!("  GPU utilisation per minute: {}", pct(&m.utilisation_per_minute));
    println!("  mining share per minute:    {}", pct(&m.mining_share_per_minute));
    println!(
        "  rentals that took GPUs from mining: {}, mining resumed: {}",
        m.mining_stops, m.mining_resumes
    );
    println!("  revenue: {:.6} WL", m.revenue_wl);
    if m.audit_violations.is_empty() {
        println!("  audit: clean");
    } else {
        println!("  AUDIT VIOLATIONS: {:#?}", m.audit_violations);
    }
}
