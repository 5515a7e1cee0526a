//! EIP-191 (`personal_sign`) signatures over the exact bytes of a stream entry's `data`.
//! Cryptography from maintained crates only: k256 (secp256k1 ECDSA, pure Rust) signs, and the
//! `secp256k1` crate (bindings to Bitcoin Core's libsecp256k1) recovers signers on the hot paths
//! — about five times cheaper than k256's recovery. Both backends parse and refuse signatures
//! the same way; [`recover_personal_with`] picks one, and the tests hold them to each other.
//! Keccak-256 comes from sha3.

use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::Deserialize;
use sha3::{Digest, Keccak256};

use crate::refusal::{Reason, Rejection};

/// Keccak-256 (Ethereum's hash, not NIST SHA3-256) of `bytes`.
pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// The hash `personal_sign` signs: keccak256("\x19Ethereum Signed Message:\n" + len + message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    const PREFIX: &[u8] = b"\x19Ethereum Signed Message:\n";
    // The length in decimal, without a heap allocation: a usize has at most 20 digits.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = message.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut hasher = Keccak256::new();
    hasher.update(PREFIX);
    hasher.update(&digits[at..]);
    hasher.update(message);
    hasher.finalize().into()
}

/// `0x` + 40 lower-case hex digits of the address that owns a public key.
pub fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_encoded_point(false);
    address_of_uncompressed(point.as_bytes())
}

/// The address of a 65-byte uncompressed SEC1 point (`04` ‖ x ‖ y).
fn address_of_uncompressed(point: &[u8]) -> String {
    let hash = keccak256(&point[1..]);
    let mut out = [0u8; 42];
    out[0] = b'0';
    out[1] = b'x';
    hex::encode_to_slice(&hash[12..], &mut out[2..]).expect("20 bytes fill 40 hex digits");
    String::from_utf8(out.to_vec()).expect("hex is ASCII")
}

/// Whether entries must be signed. A signature that is present but wrong is refused either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    /// Every entry must carry a valid signature (the default).
    #[default]
    Required,
    /// Old unsigned agents are accepted.
    Optional,
}

/// Signs `message` the way `personal_sign` does: 65 bytes r‖s‖v (v = 27/28), hex with `0x`.
pub fn sign_personal(key: &SigningKey, message: &[u8]) -> String {
    let (sig, recid) = key
        .sign_prehash_recoverable(&eip191_hash(message))
        .expect("signing a 32-byte prehash cannot fail");
    let mut out = sig.to_bytes().to_vec();
    out.push(27 + recid.to_byte());
    format!("0x{}", hex::encode(out))
}

/// Which implementation recovers a signer. Both recover the same address from every signature
/// and refuse the same signatures with the same reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// libsecp256k1, through the `secp256k1` crate: what [`recover_personal`] uses.
    #[default]
    Libsecp256k1,
    /// k256, pure Rust: the reference the other is held to, about five times slower.
    K256,
}

/// The secp256k1 group order n, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, //
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// Whether 32 big-endian bytes are a scalar in 1..n (what an ECDSA r or s must be).
fn is_nonzero_scalar(b: &[u8]) -> bool {
    b.iter().any(|&x| x != 0) && b < &ORDER[..]
}

fn malformed() -> Rejection {
    Rejection::new(Reason::SignatureMalformed, "signature must be 65 bytes of hex (r, s, v)")
}

fn unrecoverable() -> Rejection {
    Rejection::new(Reason::SignatureMismatch, "signature does not recover to any key")
}

/// A signature both backends accept as well-formed: r and s in 1..n, and R's y parity.
struct Parsed {
    rs: [u8; 64],
    y_odd: bool,
}

/// Decodes `0x` + 130 hex digits (either case) of r‖s‖v, v ∈ {0, 1, 27, 28}; anything else is
/// `signature_malformed`. Decodes onto the stack: no allocation.
fn parse(signature_hex: &str) -> Result<Parsed, Rejection> {
    let digits = signature_hex.strip_prefix("0x").unwrap_or(signature_hex);
    if digits.len() != 130 {
        return Err(malformed());
    }
    let mut raw = [0u8; 65];
    hex::decode_to_slice(digits, &mut raw).map_err(|_| malformed())?;
    let y_odd = match raw[64] {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(malformed()),
    };
    let mut rs = [0u8; 64];
    rs.copy_from_slice(&raw[..64]);
    if !is_nonzero_scalar(&rs[..32]) || !is_nonzero_scalar(&rs[32..]) {
        return Err(malformed());
    }
    Ok(Parsed { rs, y_odd })
}

/// The address that signed `message`, from a 65-byte hex signature (recovered by libsecp256k1).
pub fn recover_personal(message: &[u8], signature_hex: &str) -> Result<String, Rejection> {
    recover_personal_with(Backend::Libsecp256k1, message, signature_hex)
}

/// [`recover_personal`] with a chosen backend.
pub fn recover_personal_with(backend: Backend, message: &[u8], signature_hex: &str) -> Result<String, Rejection> {
    let sig = parse(signature_hex)?;
    let hash = eip191_hash(message);
    match backend {
        Backend::Libsecp256k1 => recover_libsecp256k1(&hash, &sig),
        Backend::K256 => recover_k256(&hash, &sig),
    }
}

fn recover_libsecp256k1(hash: &[u8; 32], sig: &Parsed) -> Result<String, Rejection> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let recid = if sig.y_odd { RecoveryId::One } else { RecoveryId::Zero };
    // r and s are already checked to lie in 1..n, so parsing cannot fail; high s is fine:
    // libsecp256k1's recovery, unlike its verification, takes either s, and (r, s, R) and
    // (r, n − s, −R) recover the same key.
    let sig = RecoverableSignature::from_compact(&sig.rs, recid).map_err(|_| malformed())?;
    let key = secp256k1::SECP256K1
        .recover_ecdsa(&secp256k1::Message::from_digest(*hash), &sig)
        .map_err(|_| unrecoverable())?;
    Ok(address_of_uncompressed(&key.serialize_uncompressed()))
}

fn recover_k256(hash: &[u8; 32], sig: &Parsed) -> Result<String, Rejection> {
    use k256::ecdsa::RecoveryId;
    let mut s = Signature::from_slice(&sig.rs).map_err(|_| malformed())?;
    let mut recid = RecoveryId::new(sig.y_odd, false);
    // Some signers emit high-s; the curve point is the same after normalising with flipped parity.
    if let Some(low) = s.normalize_s() {
        s = low;
        recid = RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced());
    }
    let key = VerifyingKey::recover_from_prehash(hash, &s, recid).map_err(|_| unrecoverable())?;
    Ok(address_of(&key))
}

/// Applies the policy: `Ok(true)` when a valid signature by `wallet` is present, `Ok(false)` when
/// none is and the policy allows that.
pub fn verify_entry(data: &[u8], signature: Option<&str>, wallet: &str, policy: SignaturePolicy) -> Result<bool, Rejection> {
    match signature {
        None | Some("") => match policy {
            SignaturePolicy::Required => Err(Rejection::new(
                Reason::SignatureMissing,
                "this network requires a signature over data (EIP-191, by wallet_addr)",
            )),
            SignaturePolicy::Optional => Ok(false),
        },
        Some(sig) => {
            let signer = recover_personal(data, sig)?;
            if signer.eq_ignore_ascii_case(wallet) {
                Ok(true)
            } else {
                Err(Rejection::new(Reason::SignatureMismatch, "signature was not made by wallet_addr"))
            }
        }
    }
}

#[cfg(test)]
mod tests;
