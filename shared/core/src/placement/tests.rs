use super::*;
use crate::ledger::{commit_allocation, init_ledger_ops, release_allocation};
use crate::messages::Capacity;
use crate::state::expr::{apply, eval};
use crate::state::Op;

/// Labeler and selector agree, and two accepted ids that a collapsing label function would
/// merge (`a--b` and `a-b`) select different nodes.
#[test]
fn the_selector_matches_exactly_the_providers_own_node_labels() {
    for id in [
        "550e8400-e29b-41d4-a716-446655440000",
        "550e8400--e29b-41d4-a716-446655440000",
        "sim-provider-00001",
    ] {
        crate::validation::check_provider_id(id).unwrap();
        let node = crate::labels::provider_node_labels(id, "NVIDIA GeForce RTX 4090", 4);
        let model_key = node[GPU_MODEL].replace('.', "_");
        let selector = node_selector(id, &model_key);
        for (k, v) in &selector {
            assert_eq!(node.get(k), Some(v), "{id}: {k}");
        }
    }
    let a = node_selector("550e8400-e29b-41d4-a716-446655440000", "RTX-4090");
    let b = node_selector("550e8400--e29b-41d4-a716-446655440000", "RTX-4090");
    assert_ne!(a[PROVIDER_ID], b[PROVIDER_ID]);
}

fn req(gpus: u32, model: Option<&str>, cap: Option<f64>) -> AllocateRequest {
    AllocateRequest {
        job_id: "job-1".into(),
        customer_id: "c".into(),
        gpu_model: model.map(str::to_string),
        gpus,
        cpu_cores: 4,
        memory_mb: 8192,
        max_price_per_gpu_hour: cap,
        duration_s: None,
        workload: crate::messages::jobs::Workload::of_image("docker.io/library/python:3.12-slim"),
    }
}

fn cand(id: &str, model: &str, free: i64, mining: i64, price: f64) -> Candidate {
    Candidate {
        provider_id: id.into(),
        node_name: id.into(),
        price_micros: crate::provider::price_to_micros(price),
        ledger: Ledger {
            models: BTreeMap::from([(
                model.into(),
                ModelCounts {
                    total: free + mining,
                    free,
                    used: 0,
                    mining,
                },
            )]),
            cpu_total: 32,
            cpu_free: 32,
            mem_total: 65536,
            mem_free: 65536,
            ..Default::default()
        },
    }
}

#[test]
fn placement_order_and_reasons() {
    let c = vec![
        cand("expensive", "RTX-4090", 8, 0, 2.0),
        cand("cheap-big", "RTX-4090", 8, 0, 0.5),
        cand("cheap-tight", "RTX-4090", 2, 0, 0.5),
        cand("cheap-mining", "RTX-4090", 0, 2, 0.5),
        cand("t4", "T4", 4, 0, 0.1),
    ];
    let order = |r: &AllocateRequest| rank(&c, r).unwrap().into_iter().map(|ch| ch.provider_id).collect::<Vec<_>>();
    let table: Vec<(AllocateRequest, Result<Vec<&str>, NoPlacement>)> = vec![
        // Cheapest, then least left over, then free before mining.
        (
            req(2, Some("NVIDIA GeForce RTX 4090"), None),
            Ok(vec!["cheap-tight", "cheap-mining", "cheap-big", "expensive"]),
        ),
        (
            req(2, Some("rtx-4090"), Some(1.0)),
            Ok(vec!["cheap-tight", "cheap-mining", "cheap-big"]),
        ),
        (req(4, Some("RTX 4090"), None), Ok(vec!["cheap-big", "expensive"])),
        (
            req(1, None, None),
            Ok(vec!["t4", "cheap-tight", "cheap-mining", "cheap-big", "expensive"]),
        ),
        (req(2, Some("A100"), None), Err(NoPlacement::UnknownModel)),
        (req(2, Some("RTX-4090"), Some(0.25)), Err(NoPlacement::PriceTooLow)),
        (req(9, Some("RTX-4090"), None), Err(NoPlacement::NoCapacity)),
    ];
    for (r, want) in table {
        let got = match rank(&c, &r) {
            Ok(_) => Ok(order(&r)),
            Err(e) => Err(e),
        };
        assert_eq!(got, want.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>()), "{r:?}");
    }
    let mining = rank(&c, &req(2, Some("RTX-4090"), None))
        .unwrap()
        .into_iter()
        .find(|ch| ch.provider_id == "cheap-mining")
        .unwrap();
    assert_eq!((mining.take_free, mining.take_mining), (0, 2));
}

#[test]
fn the_best_few_are_the_head_of_the_whole_order() {
    // Ties on price and fit among many, so the order's later keys decide too.
    let fleet: Vec<Candidate> = (0..300)
        .map(|n| {
            cand(
                &format!("p{:03}", (n * 7919) % 300),
                "RTX-4090",
                1 + n % 4,
                n % 3,
                1.0 + (n % 5) as f64,
            )
        })
        .collect();
    for r in [req(1, None, None), req(2, Some("RTX-4090"), Some(3.0)), req(4, None, None)] {
        let all = rank(&fleet, &r).unwrap();
        for k in [0, 1, 5, 299, 10_000] {
            let best = rank_best(&fleet, &r, k).unwrap();
            let head: Vec<_> = all.iter().take(k).map(|c| (&c.provider_id, c.take_mining)).collect();
            let got: Vec<_> = best.iter().map(|c| (&c.provider_id, c.take_mining)).collect();
            assert_eq!(got, head, "k {k} {r:?}");
        }
        // The placement index's filter agrees with the ranking, one candidate at a time.
        let wants = Wants::of(&r);
        for c in &fleet {
            assert_eq!(
                wants.fit(c),
                rank_best(std::slice::from_ref(c), &r, 1).is_ok(),
                "{} {r:?}",
                c.provider_id
            );
        }
    }
}

#[test]
fn allocate_and_release_keep_the_invariants() {
    use crate::messages::MiningConfig;
    // 4 GPUs, 32 cores, 128 GiB.
    let spec = crate::messages::sample_registration("p", "0x0", 4).spec;
    let cap = Capacity {
        gpu_count: Some(4),
        cpu_cores: Some(24),
        memory_mb: Some(100_000),
        gpu_price_per_hour: 0.5,
        cpu_price_per_hour: None,
    };
    let mining = MiningConfig {
        image: None,
        gpu_count: 1,
        cpu_cores: None,
        memory_mb: None,
        wallet_address: None,
    };
    let mut item = apply(None, "id", "p", &[Op::set("state", "available")]).unwrap();
    item = apply(Some(&item), "id", "p", &init_ledger_ops(&spec, &cap, Some(&mining))).unwrap();
    let l = Ledger::from_item(&item).unwrap();
    assert_eq!(
        l.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 3,
            used: 0,
            mining: 1
        }
    );
    assert_eq!((l.cpu_free, l.mem_free), (24, 100_000));
    assert!(l.violations().is_empty());
    let c = Candidate {
        provider_id: "p".into(),
        node_name: "h".into(),
        price_micros: 500_000,
        ledger: l,
    };
    let r = AllocateRequest {
        gpus: 4,
        ..req(4, None, None)
    };
    let choice = rank(&[c], &r).unwrap().remove(0);
    assert_eq!((choice.take_free, choice.take_mining), (3, 1), "rentals take GPUs back from mining");
    let t = commit_allocation(&choice.allocation(&r, "owner-1", Utc::now()));
    assert!(eval(&t.cond, Some(&item)));
    let after = apply(Some(&item), "id", "p", &t.ops).unwrap();
    assert!(!eval(&t.cond, Some(&after)), "the same job cannot be allocated twice");
    let l = Ledger::from_item(&after).unwrap();
    assert_eq!(
        l.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 0,
            used: 4,
            mining: 0
        }
    );
    assert!(l.violations().is_empty(), "{:?}", l.violations());
    let alloc = l.allocs["job-1"].clone();
    let rel = release_allocation(&alloc);
    let back = apply(Some(&after), "id", "p", &rel.ops).unwrap();
    assert!(!eval(&rel.cond, Some(&back)), "release is once");
    let l = Ledger::from_item(&back).unwrap();
    assert_eq!(
        l.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 3,
            used: 0,
            mining: 1
        },
        "mining resumes on what was taken"
    );
    assert!(l.violations().is_empty());
}
