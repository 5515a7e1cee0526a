//! OCI image references, by the grammar of the distribution project's `reference` package:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component ( "/" path-component )*
//! domain     := domain-component ( "." domain-component )* [ ":" port ]
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 hex | "sha512:" 128 hex   (lower case)
//! ```
//!
//! The first component is the registry only when it looks like a host (has a `.` or a `:`, or is
//! `localhost`), as Docker and containerd decide; otherwise the name is a Docker Hub path
//! (`python:3.12` is `docker.io/library/python:3.12` to the runtime). Bracketed IPv6 registry
//! hosts are not accepted.

use crate::refusal::{Reason, Rejection};

/// Most characters of a whole reference.
pub const MAX_IMAGE_LEN: usize = 255;
/// Most characters of a tag.
const MAX_TAG_LEN: usize = 128;

fn bad(image: &str, why: &str) -> Result<(), Rejection> {
    // The image is printed with `{:?}` so a control character shows as an escape, not as itself.
    Err(Rejection::new(
        Reason::InvalidImage,
        format!("image {image:?} is not an OCI image reference: {why}"),
    ))
}

/// Checks `image` against the grammar above; `invalid_image` with the first fault found.
pub fn check_image(image: &str) -> Result<(), Rejection> {
    if image.len() > MAX_IMAGE_LEN {
        return Err(Rejection::new(
            Reason::InvalidImage,
            format!("image is {} characters; at most {MAX_IMAGE_LEN}", image.len()),
        ));
    }
    if let Some(c) = image.chars().find(|c| !c.is_ascii_graphic()) {
        return bad(image, &format!("{c:?} is not allowed (only printable ASCII, no spaces)"));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(d) = digest {
        if let Err(why) = check_digest(d) {
            return bad(image, &why);
        }
    }
    // A tag follows the last ':' only when no '/' comes after it: `host:5000/app` has a port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return bad(
                image,
                &format!("tag {t:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"),
            );
        }
    }
    match check_name(name) {
        Ok(()) => Ok(()),
        Err(why) => bad(image, &why),
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let (algorithm, hex) = d
        .split_once(':')
        .ok_or_else(|| "after '@' comes a digest: sha256:<64 hex digits>".to_string())?;
    let want = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("digest algorithm {algorithm:?} is not sha256 or sha512")),
    };
    if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("a {algorithm} digest is {want} lower-case hex digits"));
    }
    Ok(())
}

fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= MAX_TAG_LEN && word(b[0]) && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

fn check_name(name: &str) -> Result<(), String> {
    let components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let has_domain = components.len() > 1 && (first.contains(['.', ':']) || first == "localhost");
    let path = if has_domain {
        check_domain(first)?;
        &components[1..]
    } else {
        &components[..]
    };
    for c in path {
        if !is_path_component(c) {
            return Err(format!(
                "path component {c:?} must be lower-case letters and digits, separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err(format!("registry host {host:?} is not a host name"));
    }
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !valid {
            return Err(format!("registry port {p:?} is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`, walked byte by byte (no regex crate).
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty, or a separator not followed by a letter or digit
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}
