//! `worldland keys`: creates the broker's ed25519 signing key file (mode 0600; never overwrites
//! one) and prints its public key, which every agent pins (`worldland-provider-sdk install
//! --broker-key <public key>`). With `--public`, only prints the public key of an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use worldland_core::answers::{BrokerKey, BrokerPublicKey};

#[derive(clap::Args)]
pub struct Args {
    /// The key file to create (or, with --public, to read).
    #[arg(long, env = "WORLDLAND_BROKER_KEY_FILE")]
    file: PathBuf,
    /// Print the public key of the existing file instead of creating one.
    #[arg(long)]
    public: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.public {
        let key = worldland_runtime::backends::load_broker_key(&args.file)?;
        println!("{}", key.public());
        return Ok(());
    }
    let public = create_key_file(&args.file)?;
    eprintln!(
        "created {} (mode 0600): keep it secret, give it to the workers as WORLDLAND_BROKER_KEY_FILE",
        args.file.display()
    );
    eprintln!("agents pin the public key: worldland-provider-sdk install --broker-key {public}");
    println!("{public}");
    Ok(())
}

/// Creates a fresh key at `path` with mode 0600, refusing to replace an existing file (that
/// would cut off every agent pinned to its key); returns the public key.
pub fn create_key_file(path: &Path) -> anyhow::Result<BrokerPublicKey> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = BrokerKey::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} exists; refusing to overwrite it (agents pin its key; `worldland keys --public` prints it)",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("creating {}", path.display())),
        })?;
    file.write_all(key.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key.public())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_key_file_once() {
        let dir = std::env::temp_dir().join(format!("wl-keys-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("sub").join("broker.key");
        let public = create_key_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = worldland_runtime::backends::load_broker_key(&path).unwrap();
        assert_eq!(loaded.public(), public);
        let before = std::fs::read(&path).unwrap();
        let err = create_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the existing key is untouched");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
