//! Measures the machine: GPUs through NVML (nvml-wrapper, loaded at run time), else by parsing
//! `nvidia-smi`; CPU, memory and disk from /proc and df; host name; public IP.

use std::net::{IpAddr, UdpSocket};
use std::process::Command;

use worldland_core::messages::{Gpu, Spec};

use crate::{Error, Result};

/// The query the fallback parser reads.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,name,memory.total,uuid,driver_version,pci.bus_id",
    "--format=csv,noheader,nounits",
];

fn field(raw: &str) -> Option<String> {
    let v = raw.trim();
    (!v.is_empty() && !v.starts_with("[N/A]") && !v.starts_with("[Not Supported]") && v != "N/A").then(|| v.to_string())
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid,driver_version,pci.bus_id
/// --format=csv,noheader,nounits`. Names may hold commas only at the end of the line, so the
/// name is everything between the first field and the last four.
pub fn parse_nvidia_smi(text: &str) -> std::result::Result<Vec<Gpu>, String> {
    let mut gpus = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split(',').collect();
        if parts.len() < 6 {
            return Err(format!("line {}: expected 6 fields, found {}", n + 1, parts.len()));
        }
        let tail = &parts[parts.len() - 4..];
        let name = parts[1..parts.len() - 4].join(",").trim().to_string();
        let index = field(parts[0]).and_then(|v| v.parse().ok());
        let memory_mb = field(tail[0]).and_then(|v| v.parse::<f64>().ok()).map(|m| m as u64).unwrap_or(0);
        gpus.push(Gpu {
            index,
            name: if name.is_empty() || name.starts_with("[N/A]") {
                "Unknown GPU".into()
            } else {
                name
            },
            memory_mb,
            uuid: field(tail[1]),
            driver_ver: field(tail[2]),
            cuda_version: None,
            pci_bus_id: field(tail[3]),
        });
    }
    Ok(gpus)
}

fn gpus_from_nvml() -> Option<Vec<Gpu>> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let count = nvml.device_count().ok()?;
    let driver = nvml.sys_driver_version().ok();
    let cuda = nvml
        .sys_cuda_driver_version()
        .ok()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    let mut out = vec![];
    for i in 0..count {
        let d = nvml.device_by_index(i).ok()?;
        out.push(Gpu {
            index: Some(i),
            name: d.name().unwrap_or_else(|_| "Unknown GPU".into()),
            memory_mb: d.memory_info().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
            uuid: d.uuid().ok(),
            driver_ver: driver.clone(),
            cuda_version: cuda.clone(),
            pci_bus_id: d.pci_info().ok().map(|p| p.bus_id),
        });
    }
    Some(out)
}

fn gpus_from_nvidia_smi() -> Option<Vec<Gpu>> {
    let out = Command::new("nvidia-smi").args(NVIDIA_SMI_ARGS).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)).ok()
}

/// Which source found the GPUs, for `status` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuSource {
    Nvml,
    NvidiaSmi,
}

pub fn detect_gpus() -> Result<(Vec<Gpu>, GpuSource)> {
    if let Some(g) = gpus_from_nvml().filter(|g| !g.is_empty()) {
        return Ok((g, GpuSource::Nvml));
    }
    if let Some(g) = gpus_from_nvidia_smi().filter(|g| !g.is_empty()) {
        return Ok((g, GpuSource::NvidiaSmi));
    }
    Err(Error::NoGpu)
}

/// Physical cores from /proc/cpuinfo (distinct physical id + core id), logical threads, model.
pub fn parse_cpuinfo(text: &str) -> (u32, u32, Option<String>) {
    let mut cores = std::collections::BTreeSet::new();
    let (mut threads, mut model, mut phys) = (0u32, None, String::new());
    for line in text.lines() {
        let (k, v) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        match k {
            "processor" => threads += 1,
            "model name" if model.is_none() => model = Some(v.to_string()),
            "physical id" => phys = v.to_string(),
            "core id" => {
                cores.insert((phys.clone(), v.to_string()));
            }
            _ => {}
        }
    }
    let physical = if cores.is_empty() { threads } else { cores.len() as u32 };
    (physical.max(1), threads.max(1), model)
}

pub fn parse_meminfo_total_mb(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// `df -Pk DIR`: (total GB, available GB).
pub fn parse_df(text: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
    let total_kb: u64 = fields.get(1)?.parse().ok()?;
    let avail_kb: u64 = fields.get(3)?.parse().ok()?;
    Some((total_kb / (1024 * 1024), avail_kb / (1024 * 1024)))
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The address this machine uses to reach the internet (no packet is sent: connecting a UDP
/// socket only picks the route). Behind NAT this is private, and the broker will say so.
pub fn detect_public_ip() -> Option<IpAddr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("1.1.1.1:53").ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The whole spec. GPUs are required.
pub fn detect_spec(public_ip: Option<String>, disk_dir: &str) -> Result<(Spec, GpuSource)> {
    let (gpus, source) = detect_gpus()?;
    let (cores, threads, cpu_model) = parse_cpuinfo(&read("/proc/cpuinfo").unwrap_or_default());
    let total_memory_mb = read("/proc/meminfo")
        .as_deref()
        .and_then(parse_meminfo_total_mb)
        .ok_or_else(|| Error::Detect("no MemTotal in /proc/meminfo".into()))?;
    let df = Command::new("df")
        .arg("-Pk")
        .arg(disk_dir)
        .output()
        .map_err(|e| Error::Detect(format!("df: {e}")))?;
    let (total_disk_gb, available_disk_gb) =
        parse_df(&String::from_utf8_lossy(&df.stdout)).ok_or_else(|| Error::Detect("cannot read df output".into()))?;
    let hostname = read("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Detect("no host name".into()))?;
    let os = read("/etc/os-release").and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
    });
    let public_ip = public_ip
        .or_else(|| detect_public_ip().map(|ip| ip.to_string()))
        .ok_or_else(|| Error::Detect("cannot find this machine's address; pass --public-ip".into()))?;
    let spec = Spec {
        hostname,
        os,
        kernel_ver: read("/proc/sys/kernel/osrelease").map(|v| v.trim().to_string()),
        architecture: Some(std::env::consts::ARCH.to_string()),
        cpu_model,
        cpu_cores: cores,
        cpu_threads: Some(threads),
        total_memory_mb,
        total_gpus: gpus.len() as u32,
        gpus,
        total_disk_gb: Some(total_disk_gb),
        available_disk_gb,
        public_ip,
        private_ip: None,
    };
    Ok((spec, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn one_gpu() {
        let g = parse_nvidia_smi(&fixture("nvidia-smi-1gpu.csv")).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].name.as_str(), g[0].memory_mb), ("NVIDIA GeForce RTX 4090", 24564));
        assert_eq!(g[0].pci_bus_id.as_deref(), Some("00000000:01:00.0"));
    }

    #[test]
    fn four_gpus() {
        let g = parse_nvidia_smi(&fixture("nvidia-smi-4gpu.csv")).unwrap();
        assert_eq!(g.len(), 4);
        assert!(g.iter().all(|g| g.name == "NVIDIA A100-SXM4-80GB" && g.memory_mb == 81920));
        assert_eq!(g.iter().map(|g| g.index.unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn eight_gpus_with_odd_names_and_na_fields() {
        let g = parse_nvidia_smi(&fixture("nvidia-smi-8gpu-odd.csv")).unwrap();
        assert_eq!(g.len(), 8);
        assert_eq!(g[1].name, "NVIDIA H100 80GB HBM3, rev. B");
        assert_eq!(g[2].uuid, None, "[N/A] uuid");
        assert_eq!(g[3].memory_mb, 0, "[N/A] memory is reported as 0 and refused by the broker");
        assert_eq!(g[4].driver_ver, None, "[Not Supported]");
        assert_eq!(g[5].name, "Unknown GPU");
    }

    #[test]
    fn malformed_output_is_an_error() {
        assert!(parse_nvidia_smi("0, only two").is_err());
        assert_eq!(parse_nvidia_smi("\n\n").unwrap(), vec![]);
    }

    #[test]
    fn proc_files() {
        let cpu = "processor\t: 0\nmodel name\t: AMD EPYC 7543\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7543\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 2\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(parse_cpuinfo(cpu), (2, 3, Some("AMD EPYC 7543".into())));
        assert_eq!(
            parse_meminfo_total_mb("MemTotal:       131072000 kB\nMemFree: 1 kB\n"),
            Some(128000)
        );
        assert_eq!(
            parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 1048576000 0 524288000 50% /\n"),
            Some((1000, 500))
        );
    }
}
