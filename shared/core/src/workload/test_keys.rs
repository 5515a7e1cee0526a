//! Real OpenSSH public keys, made with `ssh-keygen` (OpenSSH 9.2) and kept in `fixtures/`, for
//! tests here and in other crates (feature `test-support`): embedded at build time, so no test
//! reads a file outside its own crate. Each text ends with its newline, as the file did.

/// An ed25519 key.
pub const ED25519: &str = include_str!("fixtures/ed25519.pub");
/// An ECDSA P-256 key.
pub const ECDSA256: &str = include_str!("fixtures/ecdsa256.pub");
/// An ECDSA P-384 key.
pub const ECDSA384: &str = include_str!("fixtures/ecdsa384.pub");
/// An ECDSA P-521 key.
pub const ECDSA521: &str = include_str!("fixtures/ecdsa521.pub");
/// A 2048-bit RSA key: too weak.
pub const RSA2048: &str = include_str!("fixtures/rsa2048.pub");
/// A 3072-bit RSA key: the smallest accepted.
pub const RSA3072: &str = include_str!("fixtures/rsa3072.pub");
/// A 4096-bit RSA key.
pub const RSA4096: &str = include_str!("fixtures/rsa4096.pub");
/// A DSA key: too weak.
pub const DSA: &str = include_str!("fixtures/dsa.pub");
/// An ed25519 certificate: not a plain key.
pub const ED25519_CERT: &str = include_str!("fixtures/ed25519-cert.pub");
