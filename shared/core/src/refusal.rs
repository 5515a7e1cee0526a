//! Refusals: why a message was refused for good, with a stable code operators alert on.

/// Why a message was refused. `code()` is stable: operators alert on it, tests assert it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The stream entry has no `data` field, or was deleted before the bridge could forward it.
    MissingData,
    /// `data` (or the signature or timestamp) is not UTF-8 text.
    NotUtf8,
    /// The entry is over [`MAX_ENTRY_BYTES`](crate::messages::MAX_ENTRY_BYTES) (64 KiB).
    EntryTooLarge,
    /// `data` is not JSON of the expected message shape.
    MalformedJson,
    /// `provider_id` is not canonical: 1–63 characters of `[a-z0-9-]`, a letter or digit at both
    /// ends (a lower-case UUID is one such id). Its label value, node-name suffix and stream
    /// name are the id itself, so two accepted ids never share one.
    InvalidProviderId,
    /// `wallet_addr` is not `0x` followed by 40 hex digits.
    InvalidWalletAddr,
    /// `wallet_addr` is in mixed case, but its EIP-55 checksum is wrong.
    WalletChecksumMismatch,
    /// `spec.hostname` is not an RFC 1123 host name.
    InvalidHostname,
    /// `spec.public_ip` is not an IPv4 or IPv6 address.
    InvalidPublicIp,
    /// `spec.public_ip` is unspecified, multicast or broadcast, or private where the operator does not allow private networks.
    NonPublicIp,
    /// `spec.total_gpus` is not between 1 and 64.
    GpuCountOutOfRange,
    /// `spec.total_gpus` differs from the number of GPUs listed.
    GpuCountMismatch,
    /// A GPU has no name, or one over 256 characters.
    GpuNameMissing,
    /// A GPU's memory is outside 1 GiB – 1 TiB.
    GpuMemoryOutOfRange,
    /// `spec.cpu_cores` is not between 1 and 1024.
    CpuCoresOutOfRange,
    /// `spec.total_memory_mb` is outside 1 GiB – 64 TiB.
    MemoryOutOfRange,
    /// `spec.available_disk_gb` is 0.
    DiskOutOfRange,
    /// The spec, as JSON, is over 16 KiB (it is stored on the item every heartbeat rewrites).
    SpecTooLarge,
    /// The capacity, or the mining config, uses more GPUs, CPU cores or memory than there are.
    CapacityAboveSpec,
    /// `capacity.gpu_count` is 0.
    NoGpuOffered,
    /// `gpu_price_per_hour` is not a finite number above 0, or `cpu_price_per_hour` is not finite or is below 0.
    InvalidPrice,
    /// `gpu_price_per_hour` is above the operator's price ceiling.
    PriceAboveCeiling,
    /// `gpu_price_per_hour` is below one micro-unit (it would be stored, and billed, as 0).
    PriceBelowFloor,
    /// The `timestamp` is further from the broker's clock than the replay window.
    TimestampOutsideWindow,
    /// `enc_pubkey` is not a base64 X25519 public key (32 bytes).
    InvalidEncPubkey,
    /// No signature, where the policy requires one.
    SignatureMissing,
    /// The signature is not 65 bytes of hex (r, s, v).
    SignatureMalformed,
    /// The signature was not made by the wallet it must come from.
    SignatureMismatch,
    /// The `provider_id` is already registered to another wallet.
    WalletMismatch,
    /// No provider with that id is stored.
    UnknownProvider,
    /// A heartbeat from a provider that is pending, rejected or expired.
    NotApproved,
    /// A heartbeat's `node_name` is not the provider's node.
    NodeNameMismatch,
    /// The provider's node has not joined the cluster (on the first heartbeat after approval).
    NodeNotFound,
    /// The provider's node name is reserved by another provider (its `node#<name>` item names
    /// another owner): it is neither approved nor joined on that name.
    NodeNameTaken,
    /// The provider's node already carries another provider's `worldland.io/provider-id` label:
    /// the recorder neither joins nor labels it, and the provider stays unschedulable.
    NodeOwnedByAnotherProvider,
    /// The registering wallet already holds its limit of live join tokens
    /// (`WORLDLAND_MAX_PENDING_JOINS_PER_WALLET`) for providers that have not joined: no token is
    /// created until one of them joins or its token expires.
    TooManyPendingJoins,
    /// A heartbeat older than one already recorded: late or replayed.
    StaleHeartbeat,
    /// A job request that breaks the allocator's rules (ids, counts, model, price, reason).
    InvalidRequest,
    /// A job request without an `image` (a request from before workloads, or one that left it out).
    ImageMissing,
    /// `image` is not an OCI image reference, or is over 255 characters.
    InvalidImage,
    /// `command` or `args` break their bounds: too many items, an item or the whole too large, a
    /// NUL, or an empty program name.
    InvalidCommand,
    /// `env` breaks its rules: too many, a name that is not a C identifier or is reserved
    /// (`NVIDIA_*`, `WORLDLAND_*`), a duplicate, a value or the whole too large, a NUL.
    InvalidEnv,
    /// `ssh_public_key` is not one OpenSSH public key line of an accepted type (ed25519, ECDSA,
    /// RSA): a private key, a certificate, options, several lines, a blob that does not match
    /// its type, or over 16 KiB.
    InvalidSshKey,
    /// `ssh_public_key` is a well-formed key too weak to accept: RSA under 3072 bits, or DSA.
    SshKeyTooWeak,
    /// A stored record the worker cannot read: retrying will not mend it.
    CorruptRecord,
    /// The Kubernetes API said 401 or 403: the worker's credentials or RBAC are wrong.
    ClusterForbidden,
    /// The Kubernetes API said 422: the object the worker sent is invalid.
    ClusterInvalid,
    /// Any other refusal by the Kubernetes API (or a malformed answer such as a cluster-info
    /// without a CA).
    ClusterRefused,
}

impl Reason {
    /// The stable snake_case code: in logs, metrics, dead-letter headers and answers.
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
            Self::SpecTooLarge => "spec_too_large",
            Self::CapacityAboveSpec => "capacity_above_spec",
            Self::NoGpuOffered => "no_gpu_offered",
            Self::InvalidPrice => "invalid_price",
            Self::PriceAboveCeiling => "price_above_ceiling",
            Self::PriceBelowFloor => "price_below_floor",
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
            Self::NodeNameTaken => "node_name_taken",
            Self::NodeOwnedByAnotherProvider => "node_owned_by_another_provider",
            Self::TooManyPendingJoins => "too_many_pending_joins",
            Self::StaleHeartbeat => "stale_heartbeat",
            Self::InvalidRequest => "invalid_request",
            Self::ImageMissing => "image_missing",
            Self::InvalidImage => "invalid_image",
            Self::InvalidCommand => "invalid_command",
            Self::InvalidEnv => "invalid_env",
            Self::InvalidSshKey => "invalid_ssh_key",
            Self::SshKeyTooWeak => "ssh_key_too_weak",
            Self::CorruptRecord => "corrupt_record",
            Self::ClusterForbidden => "cluster_forbidden",
            Self::ClusterInvalid => "cluster_invalid",
            Self::ClusterRefused => "cluster_refused",
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
    /// Why: the stable code.
    pub reason: Reason,
    /// Explanation fit to show the provider (or the customer).
    pub message: String,
}

impl Rejection {
    /// A refusal with its reason and message.
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
