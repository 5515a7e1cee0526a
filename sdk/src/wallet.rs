//! The provider's wallet key: a hex secp256k1 private key in a file only its owner can read.

use std::path::Path;

use k256::ecdsa::SigningKey;
use worldland_core::signature::address_of;

use crate::{Error, Result};

/// Loads the key, refusing a file that group or others can read. The error never shows the key.
pub fn load_wallet_key(path: &Path) -> Result<SigningKey> {
    let err = |why: &str| Error::Wallet {
        path: path.display().to_string(),
        why: why.to_string(),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| err(&e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(&format!("is readable by others (mode {mode:o}); run chmod 600 on it")));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(&e.to_string()))?;
    let hex_key = text.trim().trim_start_matches("0x");
    let bytes = hex::decode(hex_key).map_err(|_| err("does not hold a hex private key"))?;
    SigningKey::from_slice(&bytes).map_err(|_| err("does not hold a valid secp256k1 private key"))
}

pub fn wallet_address(key: &SigningKey) -> String {
    address_of(key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_a_key_others_can_read_and_hides_it() {
        let dir = std::env::temp_dir().join(format!("wl-wallet-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let secret = format!("0x{}", "11".repeat(32));
        std::fs::write(&path, &secret).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_wallet_key(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others") && !e.contains(&"11".repeat(32)), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = load_wallet_key(&path).unwrap();
        assert!(wallet_address(&key).starts_with("0x"));
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_wallet_key(&path).unwrap_err().to_string().contains("hex"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
