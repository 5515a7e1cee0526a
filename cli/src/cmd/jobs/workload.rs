//! `worldland jobs allocate`'s workload flags, and how `jobs show` prints a job's workload.
//!
//! The flags are checked here with the broker's own rules before anything is sent, so a typo is
//! an error on the terminal, not a `job.rejected` to wait for — and a private key given by
//! mistake never leaves the machine.

use std::path::Path;

use anyhow::{bail, Context as _};
use worldland_core::job;
use worldland_core::messages::jobs::{EnvVar, Workload};
use worldland_core::state::Item;
use worldland_core::workload::{check_workload, MAX_SSH_KEY_BYTES};

/// The workload from the flags, checked as the allocator will check it.
pub fn from_flags(
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    env: &[String],
    ssh_key_file: Option<&Path>,
) -> anyhow::Result<Workload> {
    let w = Workload {
        image,
        command,
        args,
        env: env.iter().map(|e| parse_env(e)).collect::<anyhow::Result<_>>()?,
        ssh_public_key: ssh_key_file.map(read_ssh_key).transpose()?,
    };
    check_workload(&w).map_err(|r| anyhow::anyhow!("{}: {}", r.reason.code(), r.message))?;
    Ok(w)
}

/// `NAME=VALUE` (the value may be empty, and may itself hold `=`).
fn parse_env(s: &str) -> anyhow::Result<EnvVar> {
    let Some((name, value)) = s.split_once('=') else {
        bail!("--env {s:?} must be NAME=VALUE");
    };
    Ok(EnvVar {
        name: name.into(),
        value: value.into(),
    })
}

/// The one public key line of the file at `path`, without its trailing newline. A private key
/// file is refused without its contents ever being put into a message.
fn read_ssh_key(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let size = std::fs::metadata(path).with_context(|| format!("reading {shown}"))?.len();
    if size > MAX_SSH_KEY_BYTES as u64 {
        bail!("{shown} is {size} bytes: an SSH public key file is one line of at most {MAX_SSH_KEY_BYTES} bytes");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {shown} (a public key is text)"))?;
    if text.contains("PRIVATE KEY") || text.starts_with("PuTTY-User-Key-File") {
        bail!("{shown} is a private key: pass the public key instead (usually {shown}.pub); a private key is never sent");
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("{shown} holds no key"),
        more => bail!("{shown} holds {} keys: pass a file with the one key the rental lets in", more.len()),
    }
}

/// The lines `jobs show` prints for a job's workload: env values and the key itself are left
/// out (a value may be a token; the key is long and says less than its type and comment).
pub fn describe(job_id: &str, item: &Item) -> Vec<(&'static str, String)> {
    let w = match job::workload(job_id, item) {
        Ok(Some(w)) => w,
        Ok(None) => return vec![("image", "- (requested before workloads)".into())],
        Err(e) => return vec![("image", format!("? ({e})"))],
    };
    let mut out = vec![("image", w.image)];
    let quoted = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    if !w.command.is_empty() {
        out.push(("command", quoted(&w.command)));
    }
    if !w.args.is_empty() {
        out.push(("args", quoted(&w.args)));
    }
    if !w.env.is_empty() {
        let names: Vec<&str> = w.env.iter().map(|e| e.name.as_str()).collect();
        out.push(("env", format!("{} (values not shown)", names.join(" "))));
    }
    if let Some(key) = w.ssh_public_key {
        let mut fields = key.split_whitespace();
        let kind = fields.next().unwrap_or("-").to_string();
        let comment: Vec<&str> = fields.skip(1).collect();
        out.push((
            "ssh_public_key",
            if comment.is_empty() {
                kind
            } else {
                format!("{kind} ({})", comment.join(" "))
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use worldland_core::workload::test_keys;

    /// A file of its own under the temp dir, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn with(text: &str) -> Self {
            let p = std::env::temp_dir().join(format!("wl-key-{}", uuid::Uuid::new_v4().simple()));
            std::fs::write(&p, text).unwrap();
            Self(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn flags(env: &[&str], key: Option<&Path>) -> anyhow::Result<Workload> {
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        from_flags("python:3.12-slim".into(), vec![], vec![], &env, key)
    }

    #[test]
    fn key_files_are_read_as_one_line_and_private_keys_never_leave() {
        let fixture = TempFile::with(test_keys::ED25519);
        let w = flags(&[], Some(&fixture.0)).unwrap();
        assert_eq!(w.ssh_public_key.as_deref(), Some(test_keys::ED25519.trim_end()));
        let private = TempFile::with("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
        let err = flags(&[], Some(&private.0)).unwrap_err().to_string();
        assert!(err.contains("is a private key") && !err.contains("b3BlbnNz"), "{err}");
        let ed = test_keys::ED25519;
        let two = TempFile::with(&format!("{ed}{ed}"));
        assert!(flags(&[], Some(&two.0)).unwrap_err().to_string().contains("holds 2 keys"));
        let weak = TempFile::with(test_keys::RSA2048);
        assert!(flags(&[], Some(&weak.0)).unwrap_err().to_string().starts_with("ssh_key_too_weak"));
        assert!(flags(&[], Some(Path::new("/nonexistent/key.pub"))).is_err());
    }

    #[test]
    fn show_prints_the_image_and_hides_env_values() {
        let key = test_keys::ED25519;
        let req = worldland_core::messages::jobs::AllocateRequest {
            job_id: "j".into(),
            customer_id: "c".into(),
            gpu_model: None,
            gpus: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: Workload {
                args: vec!["train.py".into()],
                env: vec![parse_env("HF_TOKEN=hf_secret").unwrap()],
                ssh_public_key: Some(key.trim_end().into()),
                ..Workload::of_image("python:3.12-slim")
            },
        };
        let t = job::create_pending(&req, "k", "me", chrono::Utc::now());
        let item = worldland_core::state::expr::apply(None, "id", "j", &t.ops).unwrap();
        let lines = describe("j", &item);
        assert_eq!(lines[0], ("image", "python:3.12-slim".to_string()));
        assert_eq!(lines[1], ("args", "\"train.py\"".to_string()));
        assert_eq!(lines[2], ("env", "HF_TOKEN (values not shown)".to_string()));
        assert_eq!(lines[3], ("ssh_public_key", "ssh-ed25519 (ed25519@example)".to_string()));
    }

    #[test]
    fn env_flags_are_name_equals_value_and_checked_before_sending() {
        let w = flags(&["A=1", "EMPTY=", "URL=a=b"], None).unwrap();
        let pairs: Vec<(&str, &str)> = w.env.iter().map(|e| (e.name.as_str(), e.value.as_str())).collect();
        assert_eq!(pairs, [("A", "1"), ("EMPTY", ""), ("URL", "a=b")]);
        assert!(flags(&["NOVALUE"], None).unwrap_err().to_string().contains("NAME=VALUE"));
        assert!(flags(&["NVIDIA_VISIBLE_DEVICES=all"], None)
            .unwrap_err()
            .to_string()
            .starts_with("invalid_env"));
        assert!(from_flags("Bad Image".into(), vec![], vec![], &[], None)
            .unwrap_err()
            .to_string()
            .starts_with("invalid_image"));
    }
}
