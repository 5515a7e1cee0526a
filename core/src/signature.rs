//! EIP-191 (`personal_sign`) signatures over the exact bytes of a stream entry's `data`.
//! Cryptography from maintained crates only: k256 (secp256k1 ECDSA) and sha3 (Keccak-256).

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use serde::Deserialize;
use sha3::{Digest, Keccak256};

use crate::validation::{Reason, Rejection};

/// Keccak-256 (Ethereum's hash, not NIST SHA3-256) of `bytes`.
pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// The hash `personal_sign` signs: keccak256("\x19Ethereum Signed Message:\n" + len + message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// `0x` + 40 lower-case hex digits of the address that owns a public key.
pub fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    format!("0x{}", hex::encode(&hash[12..]))
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

/// The address that signed `message`, from a 65-byte hex signature.
pub fn recover_personal(message: &[u8], signature_hex: &str) -> Result<String, Rejection> {
    let malformed = || Rejection::new(Reason::SignatureMalformed, "signature must be 65 bytes of hex (r, s, v)");
    let raw = hex::decode(signature_hex.strip_prefix("0x").unwrap_or(signature_hex)).map_err(|_| malformed())?;
    if raw.len() != 65 {
        return Err(malformed());
    }
    let v = match raw[64] {
        0 | 1 => raw[64],
        27 | 28 => raw[64] - 27,
        _ => return Err(malformed()),
    };
    let mut sig = Signature::from_slice(&raw[..64]).map_err(|_| malformed())?;
    let mut recid = RecoveryId::from_byte(v).ok_or_else(malformed)?;
    // Some signers emit high-s; the curve point is the same after normalising with flipped parity.
    if let Some(low) = sig.normalize_s() {
        sig = low;
        recid = RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced());
    }
    let key = VerifyingKey::recover_from_prehash(&eip191_hash(message), &sig, recid)
        .map_err(|_| Rejection::new(Reason::SignatureMismatch, "signature does not recover to any key"))?;
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
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 32]).unwrap()
    }

    #[test]
    fn known_address_of_private_key_one() {
        // The well-known address of secp256k1 private key 0x…01.
        let mut sk = [0u8; 32];
        sk[31] = 1;
        let key = SigningKey::from_slice(&sk).unwrap();
        assert_eq!(address_of(key.verifying_key()), "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf");
    }

    #[test]
    fn known_personal_sign_hash() {
        // keccak256("\x19Ethereum Signed Message:\n11hello world"), as ethers/web3 compute it.
        assert_eq!(
            hex::encode(eip191_hash(b"hello world")),
            "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
        );
    }

    #[test]
    fn sign_then_recover_round_trips() {
        let k = key(7);
        let addr = address_of(k.verifying_key());
        let sig = sign_personal(&k, b"{\"a\":1}");
        assert_eq!(recover_personal(b"{\"a\":1}", &sig).unwrap(), addr);
        assert!(verify_entry(
            b"{\"a\":1}",
            Some(&sig),
            &addr.to_uppercase().replace("0X", "0x"),
            SignaturePolicy::Required
        )
        .unwrap());
    }

    #[test]
    fn policy_table() {
        let k = key(7);
        let addr = address_of(k.verifying_key());
        let other = address_of(key(8).verifying_key());
        let sig = sign_personal(&k, b"data");
        // (signature, claimed wallet, policy, expected verdict)
        type Row<'a> = (Option<&'a str>, &'a str, SignaturePolicy, Result<bool, Reason>);
        let table: Vec<Row> = vec![
            (Some(&sig), &addr, SignaturePolicy::Required, Ok(true)),
            (Some(&sig), &addr, SignaturePolicy::Optional, Ok(true)),
            (None, &addr, SignaturePolicy::Optional, Ok(false)),
            (None, &addr, SignaturePolicy::Required, Err(Reason::SignatureMissing)),
            (Some(&sig), &other, SignaturePolicy::Optional, Err(Reason::SignatureMismatch)),
            (Some("0x1234"), &addr, SignaturePolicy::Optional, Err(Reason::SignatureMalformed)),
            (Some("zz"), &addr, SignaturePolicy::Required, Err(Reason::SignatureMalformed)),
        ];
        for (s, w, p, want) in table {
            assert_eq!(verify_entry(b"data", s, w, p).map_err(|r| r.reason), want, "{s:?} {p:?}");
        }
        // One changed byte of data: the signature no longer matches.
        assert_eq!(
            verify_entry(b"datA", Some(&sig), &addr, SignaturePolicy::Required).map_err(|r| r.reason),
            Err(Reason::SignatureMismatch)
        );
    }
}
