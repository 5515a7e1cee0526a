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

    /// SplitMix64: a reproducible stream of test bytes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn key(&mut self) -> SigningKey {
            loop {
                if let Ok(k) = SigningKey::from_slice(&self.bytes(32)) {
                    return k;
                }
            }
        }
    }

    fn both(message: &[u8], sig: &str) -> [Result<String, Reason>; 2] {
        [Backend::Libsecp256k1, Backend::K256].map(|b| recover_personal_with(b, message, sig).map_err(|r| r.reason))
    }

    /// n − s, big-endian.
    fn negate(s: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(ORDER[i]) - i16::from(s[i]) - borrow;
            borrow = i16::from(d < 0);
            out[i] = (d + 256 * borrow) as u8;
        }
        out
    }

    #[test]
    fn backends_recover_the_same_address_from_k256_signatures() {
        let mut rng = Rng(0x5eed);
        for i in 0..200 {
            let k = rng.key();
            let addr = address_of(k.verifying_key());
            let len = (rng.next() % 600) as usize;
            let msg = rng.bytes(len);
            let sig = sign_personal(&k, &msg);
            assert_eq!(both(&msg, &sig), [Ok(addr.clone()), Ok(addr.clone())], "case {i}");
            // The same signature as v = 0/1, without `0x`, in upper case.
            let mut raw = hex::decode(&sig[2..]).unwrap();
            raw[64] -= 27;
            let bare = hex::encode_upper(&raw);
            assert_eq!(both(&msg, &bare), [Ok(addr.clone()), Ok(addr.clone())], "case {i}, v 0/1");
            // High s with flipped parity is the same signature.
            let high = negate(&raw[32..64]);
            raw[32..64].copy_from_slice(&high);
            raw[64] ^= 1;
            let high_sig = format!("0x{}", hex::encode(&raw));
            assert_eq!(both(&msg, &high_sig), [Ok(addr.clone()), Ok(addr.clone())], "case {i}, high s");
            // Wrong parity, or another message: some other key, the same one for both.
            raw[64] ^= 1;
            let [a, b] = both(&msg, &hex::encode(&raw));
            assert_eq!(a, b, "case {i}, flipped parity");
            assert_ne!(a, Ok(addr.clone()));
            let [a, b] = both(b"another message", &sig);
            assert_eq!(a, b, "case {i}, other message");
            assert_ne!(a, Ok(addr));
        }
    }

    #[test]
    fn backends_agree_on_arbitrary_signatures() {
        let mut rng = Rng(42);
        let (mut recovered, mut unrecoverable) = (0, 0);
        for i in 0..600 {
            let mut raw = rng.bytes(65);
            raw[64] = [0, 1, 27, 28][i % 4];
            let sig = hex::encode(&raw);
            let [a, b] = both(b"data", &sig);
            assert_eq!(a, b, "{sig}");
            match a {
                Ok(_) => recovered += 1,
                Err(Reason::SignatureMismatch) => unrecoverable += 1,
                Err(other) => panic!("{sig}: {other:?}"),
            }
        }
        // About half of all x are on the curve: both outcomes were exercised.
        assert!(recovered > 100 && unrecoverable > 100, "{recovered} {unrecoverable}");
    }

    #[test]
    fn backends_refuse_malformed_signatures_alike() {
        let k = key(9);
        let good = hex::decode(&sign_personal(&k, b"m")[2..]).unwrap();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut raw = good.clone();
            f(&mut raw);
            format!("0x{}", hex::encode(raw))
        };
        let n_minus_1 = negate(&{
            let mut one = [0u8; 32];
            one[31] = 1;
            one
        });
        let malformed = [
            String::new(),
            "0x".into(),
            "0x1234".into(),
            "zz".into(),
            format!("0x{}", "g".repeat(130)),
            format!("{}0", with(&|_| {})), // 131 digits
            with(&|r| r.truncate(64)),
            with(&|r| r.push(0)),
            with(&|r| r[64] = 2),
            with(&|r| r[64] = 3),
            with(&|r| r[64] = 26),
            with(&|r| r[64] = 29),
            with(&|r| r[64] = 255),
            with(&|r| r[..32].fill(0)),                   // r = 0
            with(&|r| r[32..64].fill(0)),                 // s = 0
            with(&|r| r[..32].copy_from_slice(&ORDER)),   // r = n
            with(&|r| r[32..64].copy_from_slice(&ORDER)), // s = n
            with(&|r| r[..32].fill(0xff)),                // r > n
            with(&|r| r[32..64].fill(0xff)),              // s > n
        ];
        for sig in &malformed {
            assert_eq!(
                both(b"m", sig),
                [Err(Reason::SignatureMalformed), Err(Reason::SignatureMalformed)],
                "{sig:?}"
            );
        }
        // The edges of the range are well-formed: s = n − 1 and r = 1 parse (and recover alike).
        for sig in [
            with(&|r| r[32..64].copy_from_slice(&n_minus_1)),
            with(&|r| {
                r[..32].fill(0);
                r[31] = 1;
            }),
        ] {
            let [a, b] = both(b"m", &sig);
            assert_eq!(a, b, "{sig}");
            assert_ne!(a, Err(Reason::SignatureMalformed), "{sig}");
        }
    }

    #[test]
    fn eip191_hash_counts_lengths_in_decimal() {
        for len in [0usize, 1, 9, 10, 99, 100, 12345] {
            let msg = vec![b'x'; len];
            let mut want = Keccak256::new();
            want.update(format!("\x19Ethereum Signed Message:\n{len}").as_bytes());
            want.update(&msg);
            assert_eq!(eip191_hash(&msg), <[u8; 32]>::from(want.finalize()), "{len}");
        }
    }
}
