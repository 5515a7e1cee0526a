//! What a rental runs — image, command, args, env, SSH key — and the rules a `job.allocate`'s
//! [`Workload`] must meet before anything is placed. Pure and table-tested: each part has its own
//! reason code, and the first rule broken is the one reported.
//!
//! The bounds keep a workload small enough to live on the job item (it is stored with the
//! request, as JSON) and to become one pod spec: whatever a later rental controller builds, it
//! builds from values that passed here.

use crate::messages::jobs::{EnvVar, Workload};
use crate::refusal::{Reason, Rejection};

mod image;
mod ssh;
#[cfg(any(test, feature = "test-support"))]
pub mod test_keys;

pub use image::{check_image, MAX_IMAGE_LEN};
pub use ssh::{check_ssh_public_key, MAX_SSH_KEY_BYTES, MIN_RSA_BITS};

/// Most items in `command`, and in `args`.
pub const MAX_ARGV_ITEMS: usize = 64;
/// Most bytes of one `command` or `args` item.
pub const MAX_ARGV_ITEM_BYTES: usize = 4 * 1024;
/// Most bytes of `command` and `args` together.
pub const MAX_ARGV_BYTES: usize = 32 * 1024;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 64;
/// Most bytes of an environment variable's name.
pub const MAX_ENV_NAME_BYTES: usize = 128;
/// Most bytes of an environment variable's value.
pub const MAX_ENV_VALUE_BYTES: usize = 4 * 1024;
/// Most bytes of every name and value together.
pub const MAX_ENV_BYTES: usize = 32 * 1024;

/// Name prefixes a customer may not set (compared without regard to case).
///
/// `NVIDIA_`: the NVIDIA container runtime reads `NVIDIA_VISIBLE_DEVICES` (and
/// `NVIDIA_DRIVER_CAPABILITIES`, `NVIDIA_MIG_CONFIG_DEVICES`, …) from the container's environment
/// to decide which GPUs and driver features to mount; where a node honours it for unprivileged
/// containers, `NVIDIA_VISIBLE_DEVICES=all` would hand the rental every GPU on the node, not the
/// ones it was allocated. Refusing it here is defence in depth — the node's runtime must still
/// ignore it (an image's own `ENV` can set it too).
/// `WORLDLAND_`: kept for what the broker itself puts into a rental, so a customer's value can
/// never stand in for it.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["NVIDIA_", "WORLDLAND_"];

type Rule = Result<(), Rejection>;

fn refuse(reason: Reason, message: impl Into<String>) -> Rule {
    Err(Rejection::new(reason, message))
}

/// Every rule of a workload, in order: image, command and args, env, SSH key.
pub fn check_workload(w: &Workload) -> Rule {
    if w.image.is_empty() {
        return refuse(
            Reason::ImageMissing,
            "image is required: the OCI image the rental runs (e.g. docker.io/library/python:3.12-slim)",
        );
    }
    check_image(&w.image)?;
    check_argv(&w.command, &w.args)?;
    check_env(&w.env)?;
    if let Some(key) = &w.ssh_public_key {
        check_ssh_public_key(key)?;
    }
    Ok(())
}

/// `command` and `args`: bounded in count and size, no NUL (a C string ends there, so what ran
/// would not be what was asked), and a program name when a command is given.
pub fn check_argv(command: &[String], args: &[String]) -> Rule {
    let bad = |msg: String| refuse(Reason::InvalidCommand, msg);
    for (field, items) in [("command", command), ("args", args)] {
        if items.len() > MAX_ARGV_ITEMS {
            return bad(format!("{field} has {} items; at most {MAX_ARGV_ITEMS}", items.len()));
        }
        for (i, item) in items.iter().enumerate() {
            if item.len() > MAX_ARGV_ITEM_BYTES {
                return bad(format!("{field}[{i}] is {} bytes; at most {MAX_ARGV_ITEM_BYTES}", item.len()));
            }
            if item.contains('\0') {
                return bad(format!("{field}[{i}] contains a NUL character"));
            }
        }
    }
    if command.first().is_some_and(|p| p.trim().is_empty()) {
        return bad("command[0] is the program to run: it cannot be empty".into());
    }
    let total: usize = command.iter().chain(args).map(String::len).sum();
    if total > MAX_ARGV_BYTES {
        return bad(format!("command and args are {total} bytes together; at most {MAX_ARGV_BYTES}"));
    }
    Ok(())
}

/// Whether `name` is a C identifier, the names every shell and libc agree on.
fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.bytes();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && chars.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `env`: bounded, C-identifier names, none reserved ([`RESERVED_ENV_PREFIXES`]), none twice
/// (a later duplicate would silently win in Kubernetes), values without NUL.
pub fn check_env(env: &[EnvVar]) -> Rule {
    let bad = |msg: String| refuse(Reason::InvalidEnv, msg);
    if env.len() > MAX_ENV_VARS {
        return bad(format!("env has {} variables; at most {MAX_ENV_VARS}", env.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for EnvVar { name, value } in env {
        if name.len() > MAX_ENV_NAME_BYTES {
            return bad(format!("env name {:.32}… is over {MAX_ENV_NAME_BYTES} bytes", name));
        }
        if !is_c_identifier(name) {
            return bad(format!("env name {name:?} is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"));
        }
        let upper = name.to_ascii_uppercase();
        if let Some(prefix) = RESERVED_ENV_PREFIXES.iter().find(|p| upper.starts_with(*p)) {
            return bad(format!(
                "env name {name} is reserved: {prefix}* variables are set by the node or the broker, never by a rental"
            ));
        }
        if !seen.insert(name.as_str()) {
            return bad(format!("env name {name} is given twice"));
        }
        if value.len() > MAX_ENV_VALUE_BYTES {
            return bad(format!("env {name} is {} bytes; at most {MAX_ENV_VALUE_BYTES}", value.len()));
        }
        if value.contains('\0') {
            return bad(format!("env {name} contains a NUL character"));
        }
        total += name.len() + value.len();
    }
    if total > MAX_ENV_BYTES {
        return bad(format!("env is {total} bytes of names and values; at most {MAX_ENV_BYTES}"));
    }
    Ok(())
}

#[cfg(test)]
mod ssh_tests;
#[cfg(test)]
mod tests;
