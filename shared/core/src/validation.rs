//! Registration rules. Pure and table-tested: each rule has one stable reason code and a human
//! message, and the first rule a registration breaks is the one reported.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};

use crate::messages::Registration;
use crate::refusal::{Reason, Rejection};
use crate::signature::keccak256;

/// The operator's knobs for validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationPolicy {
    /// Accept private, loopback and link-local `public_ip`s (`WORLDLAND_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
    /// Highest accepted `gpu_price_per_hour` (`WORLDLAND_PRICE_CEILING`).
    pub price_ceiling: f64,
    /// How far a registration's `timestamp` may be from the broker's clock, either way (`WORLDLAND_REPLAY_WINDOW_S`).
    pub replay_window: Duration,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            price_ceiling: 100.0,
            replay_window: Duration::minutes(5),
        }
    }
}

/// Most GPUs one registration may list.
pub const MAX_GPUS: u32 = 64;
/// Least memory per GPU, in MiB (1 GiB).
pub const MIN_GPU_MEMORY_MB: u64 = 1024;
/// Most memory per GPU, in MiB (1 TiB).
pub const MAX_GPU_MEMORY_MB: u64 = 1024 * 1024;
/// Most bytes of a spec as stored (its JSON): it lives on the provider's item, and DynamoDB bills
/// every write to that item — each recorded heartbeat — by the whole item's size (1 write unit
/// per KiB). A real 64-GPU spec with every optional field is about 13 KiB.
pub const MAX_SPEC_BYTES: usize = 16 * 1024;
/// Most CPU cores a spec may claim.
pub const MAX_CPU_CORES: u32 = 1024;
/// Least machine memory, in MiB (1 GiB).
pub const MIN_MEMORY_MB: u64 = 1024;
/// Most machine memory, in MiB (64 TiB).
pub const MAX_MEMORY_MB: u64 = 64 * 1024 * 1024;

type Rule = std::result::Result<(), Rejection>;

fn refuse(reason: Reason, message: impl Into<String>) -> Rule {
    Err(Rejection::new(reason, message))
}

/// Most characters of a provider id: it is one DNS label, a label value and a stream name.
pub const MAX_PROVIDER_ID_LEN: usize = 63;

/// Whether `id` is a canonical provider id: 1–63 characters of `[a-z0-9-]` with a letter or
/// digit at both ends — `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`, an RFC 1123 label. A lower-case
/// UUID (`550e8400-e29b-41d4-a716-446655440000`) is one, and so is `sim-provider-00006`. Such an
/// id is its own label value ([`crate::labels::provider_node_labels`] writes it unchanged), so
/// two accepted ids never share a `worldland.io/provider-id` label. Refused: upper case, braces,
/// `urn:uuid:`, a leading or trailing `-`, anything `label_value` would have had to rewrite.
pub fn is_canonical_provider_id(id: &str) -> bool {
    let b = id.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let end = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=MAX_PROVIDER_ID_LEN).contains(&b.len()) && b.iter().all(inner) && end(b.first()) && end(b.last())
}

/// A canonical provider id (see [`is_canonical_provider_id`]), else `invalid_provider_id`.
pub fn check_provider_id(id: &str) -> Rule {
    if is_canonical_provider_id(id) {
        Ok(())
    } else {
        refuse(
            Reason::InvalidProviderId,
            "provider_id must be canonical: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (a lower-case UUID is one)",
        )
    }
}

/// `0x` + 40 hex digits; mixed case must carry a correct EIP-55 checksum.
pub fn check_wallet_addr(addr: &str) -> Rule {
    let Some(hex_part) = addr.strip_prefix("0x") else {
        return refuse(Reason::InvalidWalletAddr, "wallet_addr must start with 0x");
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(Reason::InvalidWalletAddr, "wallet_addr must be 0x followed by 40 hex digits");
    }
    let has_upper = hex_part.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = hex_part.bytes().any(|b| b.is_ascii_lowercase());
    if has_upper && has_lower && eip55_checksum(hex_part) != hex_part {
        return refuse(
            Reason::WalletChecksumMismatch,
            "wallet_addr has mixed case but its EIP-55 checksum is wrong",
        );
    }
    Ok(())
}

/// EIP-55 spelling of 40 hex digits (without `0x`).
pub fn eip55_checksum(hex40: &str) -> String {
    let lower = hex40.to_ascii_lowercase();
    let hash = keccak256(lower.as_bytes());
    lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// RFC 1123 host name: it becomes the Kubernetes node name (lower-cased).
pub fn check_hostname(host: &str) -> Rule {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        refuse(
            Reason::InvalidHostname,
            "hostname must be an RFC 1123 name: dot-separated labels of 1-63 letters, digits and '-', 253 characters at most",
        )
    }
}

/// Most characters of a node name's host part: with `-` and [`NODE_SUFFIX_HEX`] digits the
/// whole name is one RFC 1123 label (63 characters at most).
pub const NODE_HOST_PART_MAX: usize = 46;
/// Hex digits of the provider-id digest that end every node name (64 bits).
pub const NODE_SUFFIX_HEX: usize = 16;

/// The Kubernetes node name the broker assigns a provider, and passes in its answer
/// (`node_name`, for `kubeadm join --node-name`): the first label of its host name, lower-cased
/// and cut to [`NODE_HOST_PART_MAX`] characters, then `-` and the first [`NODE_SUFFIX_HEX`] hex
/// digits of SHA-256 over `worldland/node-name/v1\0` + the provider id. For example provider
/// `sim-provider-00006` on host `gpu-node-00006` joins as `gpu-node-00006-<16 hex digits>`.
///
/// Always one lower-case RFC 1123 label (1–63 characters, so also a valid label value);
/// deterministic, so a redelivery or a re-registration from the same host gets the same name;
/// and two providers that claim one host name get two different names. The name is still
/// reserved for its provider before approval (`state::nodes`), so even a suffix collision cannot
/// hand one provider's node to another.
pub fn node_name(provider_id: &str, hostname: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"worldland/node-name/v1\0");
    h.update(provider_id.as_bytes());
    let suffix = &hex::encode(h.finalize())[..NODE_SUFFIX_HEX];
    let first_label = hostname.split('.').next().unwrap_or_default();
    let host: String = first_label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(NODE_HOST_PART_MAX)
        .collect();
    let host = host.trim_matches('-');
    let host = if host.is_empty() { "node" } else { host };
    format!("{host}-{suffix}")
}

fn v4_is_private(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private() || ip.is_loopback() || ip.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

fn v6_is_private(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
}

/// A public IPv4 or IPv6 address; private, loopback and link-local only when the operator allows.
pub fn check_public_ip(ip: &str, allow_private_networks: bool) -> Rule {
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return refuse(Reason::InvalidPublicIp, "public_ip is not an IPv4 or IPv6 address");
    };
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let (never, private) = match addr {
        IpAddr::V4(v4) => (v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(), v4_is_private(v4)),
        IpAddr::V6(v6) => (v6.is_unspecified() || v6.is_multicast(), v6_is_private(v6)),
    };
    if never {
        return refuse(Reason::NonPublicIp, "public_ip is unspecified, multicast or broadcast");
    }
    if private && !allow_private_networks {
        return refuse(
            Reason::NonPublicIp,
            "public_ip is private, loopback or link-local; this network accepts public addresses only",
        );
    }
    Ok(())
}

/// Least accepted `gpu_price_per_hour`: one micro-unit, the broker's unit of account. A lower
/// price would be stored as 0 micro-units — always the cheapest, billing nothing.
pub const MIN_GPU_PRICE_PER_HOUR: f64 = 0.000_001;

fn check_price(price: f64, ceiling: f64) -> Rule {
    if !price.is_finite() || price <= 0.0 {
        return refuse(Reason::InvalidPrice, "gpu_price_per_hour must be a finite number above 0");
    }
    if price_to_micros(price) < 1 || price < MIN_GPU_PRICE_PER_HOUR {
        return refuse(
            Reason::PriceBelowFloor,
            format!("gpu_price_per_hour is below the floor of {MIN_GPU_PRICE_PER_HOUR} (one micro-unit)"),
        );
    }
    if price > ceiling {
        return refuse(
            Reason::PriceAboveCeiling,
            format!("gpu_price_per_hour is above this network's ceiling of {ceiling}"),
        );
    }
    Ok(())
}

/// The timestamp, when present, must lie within the replay window around `now`.
pub fn check_timestamp(ts: Option<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> Rule {
    match ts {
        Some(ts) if (ts - now).abs() > window => refuse(
            Reason::TimestampOutsideWindow,
            format!("timestamp is more than {} s away from the broker's clock", window.num_seconds()),
        ),
        _ => Ok(()),
    }
}

fn check_enc_pubkey(key: Option<&str>) -> Rule {
    match key {
        None => Ok(()),
        Some(k) => match base64::engine::general_purpose::STANDARD.decode(k) {
            Ok(bytes) if bytes.len() == 32 => Ok(()),
            _ => refuse(Reason::InvalidEncPubkey, "enc_pubkey must be a base64 X25519 public key (32 bytes)"),
        },
    }
}

/// Every rule, in a fixed order; the first broken one is reported.
pub fn validate_registration(reg: &Registration, policy: &ValidationPolicy, now: DateTime<Utc>) -> Rule {
    check_provider_id(&reg.provider_id)?;
    check_wallet_addr(&reg.wallet_addr)?;
    let spec = &reg.spec;
    check_hostname(&spec.hostname)?;
    check_public_ip(&spec.public_ip, policy.allow_private_networks)?;
    if !(1..=MAX_GPUS).contains(&spec.total_gpus) {
        return refuse(Reason::GpuCountOutOfRange, format!("total_gpus must be between 1 and {MAX_GPUS}"));
    }
    if spec.gpus.len() != spec.total_gpus as usize {
        return refuse(
            Reason::GpuCountMismatch,
            format!("total_gpus is {} but {} GPUs are listed", spec.total_gpus, spec.gpus.len()),
        );
    }
    for (i, gpu) in spec.gpus.iter().enumerate() {
        if gpu.name.trim().is_empty() || gpu.name.len() > 256 {
            return refuse(Reason::GpuNameMissing, format!("GPU {i} has no name (or one over 256 characters)"));
        }
        if !(MIN_GPU_MEMORY_MB..=MAX_GPU_MEMORY_MB).contains(&gpu.memory_mb) {
            return refuse(
                Reason::GpuMemoryOutOfRange,
                format!("GPU {i} memory must be between 1 GiB and 1 TiB (in MiB)"),
            );
        }
    }
    if !(1..=MAX_CPU_CORES).contains(&spec.cpu_cores) {
        return refuse(
            Reason::CpuCoresOutOfRange,
            format!("cpu_cores must be between 1 and {MAX_CPU_CORES}"),
        );
    }
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&spec.total_memory_mb) {
        return refuse(
            Reason::MemoryOutOfRange,
            "total_memory_mb must be between 1 GiB and 64 TiB (in MiB)",
        );
    }
    if spec.available_disk_gb < 1 {
        return refuse(Reason::DiskOutOfRange, "available_disk_gb must be at least 1");
    }
    let spec_bytes = serde_json::to_string(spec).map_or(usize::MAX, |j| j.len());
    if spec_bytes > MAX_SPEC_BYTES {
        return refuse(
            Reason::SpecTooLarge,
            format!("spec is {spec_bytes} bytes as JSON; the limit is {MAX_SPEC_BYTES}"),
        );
    }
    let cap = &reg.capacity;
    if cap.gpu_count.is_some_and(|n| n > spec.total_gpus)
        || cap.cpu_cores.is_some_and(|n| n > spec.cpu_cores)
        || cap.memory_mb.is_some_and(|n| n > spec.total_memory_mb)
    {
        return refuse(
            Reason::CapacityAboveSpec,
            "capacity offers more GPUs, CPU cores or memory than the spec has",
        );
    }
    if cap.gpu_count == Some(0) {
        return refuse(Reason::NoGpuOffered, "capacity offers no GPU");
    }
    if let Some(mining) = &reg.mining_config {
        if mining.gpu_count > cap.gpu_count.unwrap_or(spec.total_gpus) {
            return refuse(Reason::CapacityAboveSpec, "mining_config uses more GPUs than the capacity offers");
        }
    }
    check_price(cap.gpu_price_per_hour, policy.price_ceiling)?;
    if cap.cpu_price_per_hour.is_some_and(|p| !p.is_finite() || p < 0.0) {
        return refuse(Reason::InvalidPrice, "cpu_price_per_hour must be a finite number, 0 or above");
    }
    check_timestamp(reg.timestamp, now, policy.replay_window)?;
    check_enc_pubkey(reg.enc_pubkey.as_deref())?;
    Ok(())
}

/// A price per GPU-hour in integer micro-units, so that sums are exact (what is stored and
/// billed; a price that rounds to 0 is refused as `price_below_floor`).
pub fn price_to_micros(price: f64) -> i64 {
    (price * 1_000_000.0).round() as i64
}

#[cfg(test)]
mod tests;
