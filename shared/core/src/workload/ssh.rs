//! The SSH public key a rental lets in: exactly one OpenSSH `authorized_keys` line of the form
//! `type base64 [comment]`, with no options, of a type we accept, whose decoded blob agrees with
//! its outer type and carries a key of a sound size.
//!
//! Why so strict: the line will be written into the rental's `authorized_keys`. A second line, or
//! an options prefix (`command="…"`, `from=…`, `environment=…`), would smuggle in rules the
//! customer did not see checked; a certificate would delegate trust to a CA nobody vetted; a
//! private key pasted by mistake must never be stored at all.

use base64::Engine;

use crate::refusal::{Reason, Rejection};

/// Most bytes of the key line (a 16384-bit RSA key, OpenSSH's largest, is about 2.8 KiB).
pub const MAX_SSH_KEY_BYTES: usize = 16 * 1024;
/// Fewest modulus bits of an accepted RSA key (NIST SP 800-57: 3072 bits for 128-bit security).
pub const MIN_RSA_BITS: usize = 3072;
/// Most modulus bits of an RSA key: OpenSSH's own limit.
const MAX_RSA_BITS: usize = 16384;

fn invalid(msg: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidSshKey, msg)
}

fn weak(msg: impl Into<String>) -> Rejection {
    Rejection::new(Reason::SshKeyTooWeak, msg)
}

/// Checks one public key line; `invalid_ssh_key` or `ssh_key_too_weak` with the first fault.
pub fn check_ssh_public_key(line: &str) -> Result<(), Rejection> {
    if line.len() > MAX_SSH_KEY_BYTES {
        return Err(invalid(format!(
            "ssh_public_key is {} bytes; at most {MAX_SSH_KEY_BYTES}",
            line.len()
        )));
    }
    // Checked before anything is echoed back: a private key's text must not reach a message.
    if line.contains("-----BEGIN") || line.starts_with("PuTTY-User-Key-File") {
        return Err(invalid(
            "ssh_public_key looks like a private key (a PEM or PuTTY block): send the public key (the .pub file), never the private one",
        ));
    }
    if line.contains("BEGIN SSH2 PUBLIC KEY") {
        return Err(invalid(
            "ssh_public_key is in RFC 4716 format: convert it with `ssh-keygen -i -f KEY`",
        ));
    }
    if line.contains(['\n', '\r']) {
        return Err(invalid("ssh_public_key must be one line holding one key"));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid("ssh_public_key contains a control character"));
    }
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
        return Err(invalid(
            "ssh_public_key must be `type base64 [comment]`, e.g. `ssh-ed25519 AAAAC3… me@laptop`",
        ));
    };
    accepted_type(kind)?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| invalid(format!("the key's base64 does not decode: {e}")))?;
    check_blob(kind, &blob)
}

/// Refuses every outer type but the three families we accept, each with its own reason.
fn accepted_type(kind: &str) -> Result<(), Rejection> {
    match kind {
        "ssh-ed25519" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" | "ssh-rsa" => Ok(()),
        "ssh-dss" => Err(weak(
            "DSA keys (ssh-dss) are limited to 1024 bits and disabled by OpenSSH: use ssh-ed25519",
        )),
        k if k.contains("-cert-v") => Err(invalid(format!(
            "{k} is a certificate: send the plain public key, not one signed by a CA"
        ))),
        k if k.contains('=') || k.contains('"') || !k.contains('-') => Err(invalid(
            "ssh_public_key must start with the key type: authorized_keys options (command=, from=, restrict, …) are not accepted",
        )),
        k => Err(invalid(format!(
            "key type {k:.48} is not accepted: use ssh-ed25519, ecdsa-sha2-nistp256/384/521, or ssh-rsa of at least {MIN_RSA_BITS} bits"
        ))),
    }
}

/// The blob's own fields: its inner type must be the outer one, then the key itself.
fn check_blob(kind: &str, blob: &[u8]) -> Result<(), Rejection> {
    let mut r = Reader(blob);
    let inner = r.string().ok_or_else(|| invalid("the key blob does not start with its type"))?;
    if inner != kind.as_bytes() {
        return Err(invalid(format!(
            "the key says {kind} outside but {:?} inside its blob",
            String::from_utf8_lossy(&inner[..inner.len().min(48)])
        )));
    }
    match kind {
        "ssh-ed25519" => {
            let key = r.string().filter(|k| k.len() == 32);
            key.ok_or_else(|| invalid("an ssh-ed25519 key is 32 bytes"))?;
        }
        "ssh-rsa" => check_rsa(&mut r)?,
        _ => check_ecdsa(kind, &mut r)?,
    }
    if !r.0.is_empty() {
        return Err(invalid(format!("{} bytes follow the key in its blob", r.0.len())));
    }
    Ok(())
}

/// The curve named inside must be the outer type's, and the point uncompressed of its size
/// (OpenSSH writes no other). Whether the point lies on the curve is left to sshd.
fn check_ecdsa(kind: &str, r: &mut Reader) -> Result<(), Rejection> {
    let curve = kind.trim_start_matches("ecdsa-sha2-");
    let point_len = match curve {
        "nistp256" => 65,
        "nistp384" => 97,
        _ => 133, // nistp521: accepted_type let no other curve through
    };
    if r.string() != Some(curve.as_bytes()) {
        return Err(invalid(format!("an {kind} key must name the curve {curve} inside its blob")));
    }
    match r.string() {
        Some(q) if q.len() == point_len && q[0] == 0x04 => Ok(()),
        _ => Err(invalid(format!("an {kind} key's point is {point_len} bytes, uncompressed"))),
    }
}

/// `e` then `n`, both positive mpints; `n` of at least [`MIN_RSA_BITS`].
fn check_rsa(r: &mut Reader) -> Result<(), Rejection> {
    let e = r
        .mpint()
        .ok_or_else(|| invalid("an ssh-rsa key's exponent is not a positive mpint"))?;
    let n = r
        .mpint()
        .ok_or_else(|| invalid("an ssh-rsa key's modulus is not a positive mpint"))?;
    // A usable public exponent is odd and at least 3; a modulus is odd (a product of two odd primes).
    if e.last().is_none_or(|b| b & 1 == 0) || (e.len() == 1 && e[0] < 3) {
        return Err(invalid("an ssh-rsa key's exponent must be odd and at least 3"));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(invalid("an ssh-rsa key's modulus must be odd"));
    }
    let bits = n.len() * 8 - n[0].leading_zeros() as usize;
    if bits > MAX_RSA_BITS {
        return Err(invalid(format!("an ssh-rsa key's modulus is {bits} bits; at most {MAX_RSA_BITS}")));
    }
    if bits < MIN_RSA_BITS {
        return Err(weak(format!(
            "an ssh-rsa key of {bits} bits is too weak: at least {MIN_RSA_BITS} (or use ssh-ed25519)"
        )));
    }
    Ok(())
}

/// The SSH wire format's `string` and `mpint` (RFC 4251 §5), over a borrowed blob.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A `uint32` length, then that many bytes; `None` if the blob is shorter.
    fn string(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        self.0 = rest;
        Some(s)
    }

    /// A positive `mpint`, its magnitude without leading zeros; `None` when malformed, negative
    /// (high bit set without a leading zero), zero, or padded with a needless zero byte.
    fn mpint(&mut self) -> Option<&'a [u8]> {
        let s = self.string()?;
        match s {
            [] => None,
            [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => Some(rest),
            [0, ..] => None,
            [first, ..] if first & 0x80 != 0 => None,
            _ => Some(s),
        }
    }
}
