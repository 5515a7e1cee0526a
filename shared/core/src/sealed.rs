//! Sealed join commands: a libsodium-compatible sealed box (crypto_box_seal: X25519 +
//! XSalsa20-Poly1305) from the maintained `crypto_box` crate, so only the agent holding the
//! matching secret key can read its token.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_box::{PublicKey, SecretKey};

use crate::messages::SealedJoin;

/// Why a join could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// `enc_pubkey` is not base64 of a 32-byte X25519 public key.
    #[error("enc_pubkey is not a base64 X25519 public key")]
    BadPublicKey,
    /// The sealed box is not base64, does not open with this key, or holds no `SealedJoin`.
    #[error("sealed_join is not base64 or does not open with this key")]
    CannotOpen,
}

/// Seals `join` (as JSON) to the agent's base64 X25519 key: the `sealed_join` of an answer, base64.
pub fn seal_join(join: &SealedJoin, enc_pubkey_b64: &str) -> Result<String, SealError> {
    let bytes: [u8; 32] = B64
        .decode(enc_pubkey_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SealError::BadPublicKey)?;
    let public = PublicKey::from(bytes);
    let plain = serde_json::to_vec(join).expect("SealedJoin serialises");
    let sealed = public.seal(&mut rand_core::OsRng, &plain).map_err(|_| SealError::BadPublicKey)?;
    Ok(B64.encode(sealed))
}

/// Opens a base64 `sealed_join` with the agent's secret key.
pub fn open_join(sealed_b64: &str, secret: &SecretKey) -> Result<SealedJoin, SealError> {
    let sealed = B64.decode(sealed_b64).map_err(|_| SealError::CannotOpen)?;
    let plain = secret.unseal(&sealed).map_err(|_| SealError::CannotOpen)?;
    serde_json::from_slice(&plain).map_err(|_| SealError::CannotOpen)
}

/// A fresh X25519 key pair from the OS random source; the public half as base64.
pub fn new_enc_keypair() -> (SecretKey, String) {
    let secret = SecretKey::generate(&mut rand_core::OsRng);
    let public = B64.encode(secret.public_key().as_bytes());
    (secret, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key_fails() {
        let (secret, public) = new_enc_keypair();
        let join = SealedJoin {
            join_token: "abcdef.0123456789abcdef".into(),
            join_command: "kubeadm join x".into(),
        };
        let sealed = seal_join(&join, &public).unwrap();
        assert!(!sealed.contains("abcdef"));
        assert_eq!(open_join(&sealed, &secret).unwrap(), join);
        let (other, _) = new_enc_keypair();
        assert!(matches!(open_join(&sealed, &other), Err(SealError::CannotOpen)));
        assert!(matches!(seal_join(&join, "bm90LWEta2V5"), Err(SealError::BadPublicKey)));
    }
}
