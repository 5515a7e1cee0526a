//! What the SDK remembers between runs, in `~/.worldland/` (directory 0700, files 0600).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use worldland_core::answers::BrokerPublicKey;

use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    pub provider_id: String,
    #[serde(default)]
    pub wallet_addr: String,
    /// X25519 secret key (base64) that opens sealed join commands.
    #[serde(default)]
    pub enc_secret_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub registration_entry: Option<String>,
    #[serde(default)]
    pub joined: bool,
    /// The broker's ed25519 public key (base64), pinned at install: only entries it signed are
    /// believed.
    #[serde(default)]
    pub broker_pubkey: Option<String>,
    /// GPUs on this machine when it registered: mining commands for more are refused.
    #[serde(default)]
    pub gpu_count: u32,
    /// The id of the last entry of this provider's response stream that `run` handled (a mining
    /// command obeyed and acknowledged, or an entry skipped): it reads on from there after a
    /// restart, so commands written while it was down are seen and none is run twice. Absent
    /// until the first entry is handled; then reading starts at the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_cursor: Option<String>,
}

pub fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".worldland")
}

fn err(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

impl LocalState {
    /// The pinned broker key: `given` (a flag or `WORLDLAND_BROKER_PUBKEY`) when set, else the
    /// one stored at install. Without either the SDK believes nothing, so it is an error.
    pub fn broker_key(&self, given: Option<&str>) -> Result<BrokerPublicKey> {
        let text = given
            .or(self.broker_pubkey.as_deref())
            .ok_or_else(|| {
                Error::BrokerKey(
                    "no broker public key pinned: pass --broker-key (or set WORLDLAND_BROKER_PUBKEY) with the key your broker's operator published (`worldland keys` prints it)".into(),
                )
            })?;
        text.parse().map_err(|e| Error::BrokerKey(format!("{text:?}: {e}")))
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(&path, e)),
        }
    }

    /// Writes atomically with mode 0600 in a 0700 directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| err(dir, e))?;
        let path = Self::path(dir);
        let tmp = dir.join("state.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("serialises"))
            .map_err(|e| err(&tmp, e))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// Records `entry` as the last response-stream entry handled, in the state saved in `dir`
    /// (read again first, so fields written by others since are kept).
    pub fn save_command_cursor(dir: &Path, entry: &str) -> Result<()> {
        let mut state = Self::load(dir)?.ok_or_else(|| err(&Self::path(dir), "no state saved: not installed"))?;
        if state.command_cursor.as_deref() == Some(entry) {
            return Ok(());
        }
        state.command_cursor = Some(entry.to_string());
        state.save(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_private_files() {
        let dir = std::env::temp_dir().join(format!("wl-state-{}", uuid::Uuid::new_v4().simple()));
        let s = LocalState {
            provider_id: "p".into(),
            status: "approved".into(),
            ..Default::default()
        };
        s.save(&dir).unwrap();
        assert_eq!(LocalState::load(&dir).unwrap(), Some(s));
        let mode = std::fs::metadata(LocalState::path(&dir)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_command_cursor_is_saved_into_the_existing_state() {
        let dir = std::env::temp_dir().join(format!("wl-state-{}", uuid::Uuid::new_v4().simple()));
        assert!(matches!(LocalState::save_command_cursor(&dir, "1-0"), Err(Error::State { .. })));
        let s = LocalState {
            provider_id: "p".into(),
            gpu_count: 2,
            ..Default::default()
        };
        s.save(&dir).unwrap();
        // A state written before the field existed reads as "no cursor yet".
        assert!(!std::fs::read_to_string(LocalState::path(&dir)).unwrap().contains("command_cursor"));
        LocalState::save_command_cursor(&dir, "1700000000000-3").unwrap();
        let loaded = LocalState::load(&dir).unwrap().unwrap();
        assert_eq!(loaded.command_cursor.as_deref(), Some("1700000000000-3"));
        assert_eq!((loaded.provider_id.as_str(), loaded.gpu_count), ("p", 2));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_broker_key_is_the_given_one_or_the_pinned_one() {
        let a = worldland_core::answers::BrokerKey::generate().public();
        let b = worldland_core::answers::BrokerKey::generate().public();
        let mut s = LocalState::default();
        assert!(matches!(s.broker_key(None), Err(Error::BrokerKey(_))));
        assert_eq!(s.broker_key(Some(&a.to_string())).unwrap(), a);
        assert!(matches!(s.broker_key(Some("not-a-key")), Err(Error::BrokerKey(_))));
        s.broker_pubkey = Some(b.to_string());
        assert_eq!(s.broker_key(None).unwrap(), b);
        assert_eq!(s.broker_key(Some(&a.to_string())).unwrap(), a);
    }
}
