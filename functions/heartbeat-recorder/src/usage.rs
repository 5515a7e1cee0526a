//! The agent's load as the provider's item stores it.

use worldland_core::messages::Heartbeat;
use worldland_core::validation::MAX_GPUS;

/// The agent's load as stored under `usage`: `{"cpu":…,"gpu":[…],"memory":…}`, keys sorted as
/// `serde_json::json!` sorted them, serialised straight from the heartbeat (no `Value` tree).
/// Bounded, since every recorded heartbeat rewrites it: at most [`MAX_GPUS`] GPUs, each figure
/// rounded to 0.1 (so at most about 1.5 KiB, whatever the heartbeat carried).
pub(crate) fn usage_json(hb: &Heartbeat) -> String {
    #[derive(serde::Serialize)]
    struct Usage {
        cpu: f64,
        gpu: Vec<f64>,
        memory: f64,
    }
    let usage = Usage {
        cpu: tenths(hb.cpu_usage),
        gpu: hb.gpu_usage.iter().take(MAX_GPUS as usize).copied().map(tenths).collect(),
        memory: tenths(hb.memory_usage),
    };
    serde_json::to_string(&usage).expect("numbers serialise")
}

fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_json_is_bounded_and_rounded() {
        let hb: Heartbeat = serde_json::from_value(serde_json::json!({
            "provider_id": "p", "node_name": "n", "timestamp": "2024-01-01T00:00:00Z",
        }))
        .unwrap();
        let table = [
            ((vec![], 0.0, 0.0), r#"{"cpu":0.0,"gpu":[],"memory":0.0}"#.to_string()),
            (
                (vec![0.54, 99.25], 12.5, 1e-3),
                r#"{"cpu":12.5,"gpu":[0.5,99.3],"memory":0.0}"#.to_string(),
            ),
            (
                (vec![f64::NAN], f64::INFINITY, -0.0),
                r#"{"cpu":null,"gpu":[null],"memory":-0.0}"#.to_string(),
            ),
            (
                (vec![12.345_678_901_234; 10_000], 1.0, 2.0),
                format!(r#"{{"cpu":1.0,"gpu":[{}],"memory":2.0}}"#, vec!["12.3"; 64].join(",")),
            ),
        ];
        for ((gpu, cpu, memory), want) in table {
            let hb = Heartbeat {
                gpu_usage: gpu,
                cpu_usage: cpu,
                memory_usage: memory,
                ..hb.clone()
            };
            assert_eq!(usage_json(&hb), want);
        }
        let most = Heartbeat {
            gpu_usage: vec![-1.2345e300; 64],
            cpu_usage: -1.2345e300,
            memory_usage: -1.2345e300,
            ..hb
        };
        assert!(usage_json(&most).len() < 1_700, "{}", usage_json(&most).len());
    }
}
