//! Refusals: why a message was refused for good, with a stable code operators alert on.

/// Why a message was refused. `code()` is stable: operators alert on it, tests assert it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MissingData,
    NotUtf8,
    EntryTooLarge,
    MalformedJson,
    InvalidProviderId,
    InvalidWalletAddr,
    WalletChecksumMismatch,
    InvalidHostname,
    InvalidPublicIp,
    NonPublicIp,
    GpuCountOutOfRange,
    GpuCountMismatch,
    GpuNameMissing,
    GpuMemoryOutOfRange,
    CpuCoresOutOfRange,
    MemoryOutOfRange,
    DiskOutOfRange,
    CapacityAboveSpec,
    NoGpuOffered,
    InvalidPrice,
    PriceAboveCeiling,
    TimestampOutsideWindow,
    InvalidEncPubkey,
    SignatureMissing,
    SignatureMalformed,
    SignatureMismatch,
    WalletMismatch,
    UnknownProvider,
    NotApproved,
    NodeNameMismatch,
    NodeNotFound,
    StaleHeartbeat,
    InvalidRequest,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingData => "missing_data",
            Self::NotUtf8 => "not_utf8",
            Self::EntryTooLarge => "entry_too_large",
            Self::MalformedJson => "malformed_json",
            Self::InvalidProviderId => "invalid_provider_id",
            Self::InvalidWalletAddr => "invalid_wallet_addr",
            Self::WalletChecksumMismatch => "wallet_checksum_mismatch",
            Self::InvalidHostname => "invalid_hostname",
            Self::InvalidPublicIp => "invalid_public_ip",
            Self::NonPublicIp => "non_public_ip",
            Self::GpuCountOutOfRange => "gpu_count_out_of_range",
            Self::GpuCountMismatch => "gpu_count_mismatch",
            Self::GpuNameMissing => "gpu_name_missing",
            Self::GpuMemoryOutOfRange => "gpu_memory_out_of_range",
            Self::CpuCoresOutOfRange => "cpu_cores_out_of_range",
            Self::MemoryOutOfRange => "memory_out_of_range",
            Self::DiskOutOfRange => "disk_out_of_range",
            Self::CapacityAboveSpec => "capacity_above_spec",
            Self::NoGpuOffered => "no_gpu_offered",
            Self::InvalidPrice => "invalid_price",
            Self::PriceAboveCeiling => "price_above_ceiling",
            Self::TimestampOutsideWindow => "timestamp_outside_window",
            Self::InvalidEncPubkey => "invalid_enc_pubkey",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureMalformed => "signature_malformed",
            Self::SignatureMismatch => "signature_mismatch",
            Self::WalletMismatch => "wallet_mismatch",
            Self::UnknownProvider => "unknown_provider",
            Self::NotApproved => "not_approved",
            Self::NodeNameMismatch => "node_name_mismatch",
            Self::NodeNotFound => "node_not_found",
            Self::StaleHeartbeat => "stale_heartbeat",
            Self::InvalidRequest => "invalid_request",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the stable code and a message fit to show the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.message)
    }
}
