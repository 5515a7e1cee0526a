//! SSH public keys: real keys made with `ssh-keygen` (OpenSSH 9.2, in `fixtures/`), and blobs
//! built here to break one rule each.

use base64::Engine;

use super::*;

use super::test_keys::*;

/// A private key's shape (not a real key: the base64 body is cut short).
const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";

fn code(r: Result<(), Rejection>) -> Option<&'static str> {
    r.err().map(|r| r.reason.code())
}

/// The file's one line, without its newline (what the CLI sends).
fn one(file: &str) -> &str {
    file.trim_end()
}

/// The base64 field of a key line.
fn blob_of(line: &str) -> Vec<u8> {
    let b64 = line.split(' ').nth(1).unwrap();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

fn string(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// A positive mpint of the magnitude `m` (a zero byte first when its high bit is set).
fn mpint(m: &[u8]) -> Vec<u8> {
    let mut v = if m[0] & 0x80 != 0 { vec![0] } else { vec![] };
    v.extend_from_slice(m);
    string(&v)
}

/// An odd magnitude of exactly `bits` bits.
fn modulus(bits: usize) -> Vec<u8> {
    let mut m = vec![0xab; bits.div_ceil(8)];
    m[0] = 1 << ((bits - 1) % 8);
    *m.last_mut().unwrap() |= 1;
    m
}

fn rsa_blob(e: &[u8], n: &[u8]) -> Vec<u8> {
    [string(b"ssh-rsa"), e.to_vec(), n.to_vec()].concat()
}

fn line(kind: &str, blob: &[u8]) -> String {
    format!("{kind} {} built@test", base64::engine::general_purpose::STANDARD.encode(blob))
}

#[test]
fn keys_are_refused_or_accepted_by_type_size_and_shape() {
    let ed = one(ED25519);
    let ed_b64 = ed.split(' ').nth(1).unwrap();
    let ed_key = &blob_of(ed)[4 + 11 + 4..];
    let p384 = blob_of(one(ECDSA384));
    let e = mpint(&[1, 0, 1]);
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("ed25519", ed.into(), None),
        ("ecdsa p-256", one(ECDSA256).into(), None),
        ("ecdsa p-384", one(ECDSA384).into(), None),
        ("ecdsa p-521", one(ECDSA521).into(), None),
        ("rsa 3072", one(RSA3072).into(), None),
        ("rsa 4096", one(RSA4096).into(), None),
        ("no comment", format!("ssh-ed25519 {ed_b64}"), None),
        ("a comment with spaces", format!("ssh-ed25519 {ed_b64} Jane Doe laptop"), None),
        ("tab-separated", format!("ssh-ed25519\t{ed_b64}"), None),
        (
            "rsa of exactly 3072 bits, built",
            line("ssh-rsa", &rsa_blob(&e, &mpint(&modulus(3072)))),
            None,
        ),
        ("rsa 2048", one(RSA2048).into(), Some("ssh_key_too_weak")),
        (
            "rsa of 3071 bits, built",
            line("ssh-rsa", &rsa_blob(&e, &mpint(&modulus(3071)))),
            Some("ssh_key_too_weak"),
        ),
        ("dsa", one(DSA).into(), Some("ssh_key_too_weak")),
        ("certificate", one(ED25519_CERT).into(), Some("invalid_ssh_key")),
        (
            "FIDO key type",
            format!("sk-ssh-ed25519@openssh.com {ed_b64}"),
            Some("invalid_ssh_key"),
        ),
        ("command= option", format!("command=\"echo hi\" {ed}"), Some("invalid_ssh_key")),
        ("restrict option", format!("restrict {ed}"), Some("invalid_ssh_key")),
        ("no-pty option", format!("no-pty {ed}"), Some("invalid_ssh_key")),
        ("from= option", format!("from=\"10.0.0.0/8\" {ed}"), Some("invalid_ssh_key")),
        ("the file with its newline", ED25519.into(), Some("invalid_ssh_key")),
        ("two keys on two lines", format!("{ed}\n{}", one(ECDSA256)), Some("invalid_ssh_key")),
        ("a carriage return", format!("{ed}\r"), Some("invalid_ssh_key")),
        (
            "a NUL in the comment",
            format!("ssh-ed25519 {ed_b64} a\0b"),
            Some("invalid_ssh_key"),
        ),
        ("private key", PRIVATE.into(), Some("invalid_ssh_key")),
        ("private key on one line", PRIVATE.replace('\n', " "), Some("invalid_ssh_key")),
        (
            "PuTTY private key",
            "PuTTY-User-Key-File-3: ssh-ed25519".into(),
            Some("invalid_ssh_key"),
        ),
        (
            "RFC 4716",
            format!("---- BEGIN SSH2 PUBLIC KEY ---- {ed_b64}"),
            Some("invalid_ssh_key"),
        ),
        (
            "over 16 KiB",
            format!("ssh-ed25519 {}", "A".repeat(MAX_SSH_KEY_BYTES)),
            Some("invalid_ssh_key"),
        ),
        ("empty", String::new(), Some("invalid_ssh_key")),
        ("type only", "ssh-ed25519".into(), Some("invalid_ssh_key")),
        ("a password", "hunter2".into(), Some("invalid_ssh_key")),
        ("bad base64", "ssh-ed25519 !!!!".into(), Some("invalid_ssh_key")),
        ("rsa outside, ed25519 inside", format!("ssh-rsa {ed_b64}"), Some("invalid_ssh_key")),
        (
            "p-256 outside, p-384 inside",
            line("ecdsa-sha2-nistp256", &p384),
            Some("invalid_ssh_key"),
        ),
        (
            "p-384 type naming the p-256 curve",
            line(
                "ecdsa-sha2-nistp384",
                &[string(b"ecdsa-sha2-nistp384"), string(b"nistp256"), p384[4 + 19 + 4 + 8..].to_vec()].concat(),
            ),
            Some("invalid_ssh_key"),
        ),
        (
            "compressed p-256 point",
            line(
                "ecdsa-sha2-nistp256",
                &[string(b"ecdsa-sha2-nistp256"), string(b"nistp256"), string(&[2; 33])].concat(),
            ),
            Some("invalid_ssh_key"),
        ),
        (
            "ed25519 of 31 bytes",
            line("ssh-ed25519", &[string(b"ssh-ed25519"), string(&ed_key[..31])].concat()),
            Some("invalid_ssh_key"),
        ),
        (
            "bytes after the key",
            line("ssh-ed25519", &[blob_of(ed), vec![0, 0, 0, 0]].concat()),
            Some("invalid_ssh_key"),
        ),
        ("a blob cut short", line("ssh-ed25519", &blob_of(ed)[..20]), Some("invalid_ssh_key")),
        (
            "rsa with an even modulus",
            {
                let mut n = modulus(4096);
                *n.last_mut().unwrap() &= 0xfe;
                line("ssh-rsa", &rsa_blob(&e, &mpint(&n)))
            },
            Some("invalid_ssh_key"),
        ),
        (
            "rsa with e = 1",
            line("ssh-rsa", &rsa_blob(&mpint(&[1]), &mpint(&modulus(4096)))),
            Some("invalid_ssh_key"),
        ),
        (
            "rsa with an even e",
            line("ssh-rsa", &rsa_blob(&mpint(&[4]), &mpint(&modulus(4096)))),
            Some("invalid_ssh_key"),
        ),
        (
            "rsa with a negative modulus",
            line("ssh-rsa", &rsa_blob(&e, &string(&[0xff; 512]))),
            Some("invalid_ssh_key"),
        ),
        (
            "rsa with a padded modulus",
            line("ssh-rsa", &rsa_blob(&e, &string(&[&[0u8][..], &modulus(4095)].concat()))),
            Some("invalid_ssh_key"),
        ),
        (
            "rsa of 16385 bits",
            line("ssh-rsa", &rsa_blob(&e, &mpint(&modulus(16385)))),
            Some("invalid_ssh_key"),
        ),
        (
            "a length past the blob",
            line("ssh-rsa", &[string(b"ssh-rsa"), vec![0xff, 0xff, 0xff, 0xff, 1]].concat()),
            Some("invalid_ssh_key"),
        ),
    ];
    for (name, key, want) in cases {
        assert_eq!(code(check_ssh_public_key(&key)), want, "{name}: {key:.80}");
        let w = Workload {
            ssh_public_key: Some(key),
            ..Workload::of_image("python")
        };
        assert_eq!(code(check_workload(&w)), want, "{name}, through check_workload");
    }
}

#[test]
fn refusals_explain_and_never_echo_a_private_key() {
    let msg = |k: &str| check_ssh_public_key(k).unwrap_err().message;
    assert!(msg(one(RSA2048)).contains("2048 bits"), "{}", msg(one(RSA2048)));
    assert!(msg(PRIVATE).contains("private key"));
    assert!(!msg(PRIVATE).contains("b3BlbnNzaC1rZXkt"));
    assert!(msg(one(ED25519_CERT)).contains("certificate"));
    assert!(msg(&format!("command=\"x\" {}", one(ED25519))).contains("options"));
}
