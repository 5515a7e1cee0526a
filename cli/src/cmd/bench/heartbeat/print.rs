//! The figures of `bench heartbeat`, printed.

use super::{EmbeddedFigures, PathFigures};

pub fn print(a: Option<&EmbeddedFigures>, b: Option<&PathFigures>) {
    println!("worldland bench heartbeat ({})", super::super::build_kind());
    if let Some(a) = a {
        print_embedded(a);
    }
    if let Some(b) = b {
        print_path(b);
    }
}

fn print_embedded(a: &EmbeddedFigures) {
    println!();
    println!("(a) embedded store, one task, signature verified on every heartbeat");
    println!("  {:<44} {:>14}", "providers (one heartbeat each)", a.providers);
    println!("  {:<44} {:>14.0}", "heartbeats per second sustained", a.per_second);
    println!("  {:<44} {:>14.1}", "CPU µs per heartbeat", a.cpu_us_per_heartbeat);
    println!("  {:<44} {:>14.0}", "needed: providers / 30 s", a.needed_per_second);
    println!(
        "  {:<44} {:>13.1}%  {}",
        "share of one core for the fleet",
        a.core_share * 100.0,
        if a.core_share <= 1.0 {
            "(target: within one core — met)"
        } else {
            "(target: within one core — NOT met)"
        }
    );
    print_write_units(&a.write_units);
}

fn print_write_units(w: &super::units::WriteUnitFigures) {
    println!("  DynamoDB write units per recorded heartbeat (1 per KiB of the provider's item)");
    let typical = format!("{} ({} B)", w.typical_write_units_per_heartbeat, w.typical_item_bytes);
    println!("  {:<44} {:>14}", "  typical provider", typical);
    let largest = format!("{} ({} B)", w.largest_write_units_per_heartbeat, w.largest_item_bytes);
    println!("  {:<44} {:>14}", "  largest the bounds allow", largest);
    let flood = format!("{} heartbeats 1 ms apart", w.flood_heartbeats);
    let cost = format!("{} w, {} r, {} WCU", w.flood_store_writes, w.flood_store_reads, w.flood_write_units);
    println!("  {:<44} {:>14}", format!("  flood: {flood}"), cost);
}

fn print_path(b: &PathFigures) {
    println!();
    println!("(b) through real Redis and RabbitMQ ({} heartbeats)", b.heartbeats);
    println!(
        "  {:<66} {:>8.0}",
        "heartbeat path: XADD → bridge → RabbitMQ → recorder, per s", b.path_per_second
    );
    println!(
        "  {:<66} {:>8.0}",
        format!("raw, pipelined as the bridge (batch {}): XADD → XREADGROUP →", b.batch),
        b.raw_per_second
    );
    println!("    publish all, confirms together → one XACK → consume, per s");
    println!(
        "  {:<66} {:>8.2}  {}",
        "ratio",
        b.ratio,
        if b.ratio >= 0.5 {
            "(target ≥ 0.5 — met)"
        } else {
            "(target ≥ 0.5 — NOT met)"
        }
    );
    println!(
        "  {:<66} {:>8.1}",
        "bridge CPU µs per heartbeat (its thread)", b.bridge_cpu_us_per_heartbeat
    );
    println!(
        "  {:<66} {:>8.1}",
        "recorder CPU µs per heartbeat (its thread)", b.recorder_cpu_us_per_heartbeat
    );
    println!(
        "  {:<66} {:>8.1}",
        "whole process CPU µs per heartbeat (+ AMQP I/O threads, XADD writer)", b.process_cpu_us_per_heartbeat
    );
    println!(
        "  {:<66} {:>8.2}",
        "cores for 1,000,000 providers (33,333/s): bridge", b.bridge_cores_per_million
    );
    println!(
        "  {:<66} {:>8.2}",
        "cores for 1,000,000 providers (33,333/s): recorder", b.recorder_cores_per_million
    );
    for p in &b.parallel {
        println!(
            "  {:<66} {:>8.0}",
            format!(
                "heartbeat path, {} bridges and {} recorders, per s",
                p.bridges_and_recorders, p.bridges_and_recorders
            ),
            p.path_per_second
        );
    }
}
