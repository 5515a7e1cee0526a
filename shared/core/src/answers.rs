//! Signed answers: the broker signs every entry it writes to `provider:response:<id>`
//! (approvals, refusals, mining commands) with its ed25519 key, and the SDK, which pins the
//! broker's public key, runs or believes nothing that does not verify.
//!
//! Anyone who can reach Redis can XADD to a response stream, so an entry proves nothing by where
//! it is. The signature covers, after a domain-separation prefix, the stream name (an answer for
//! one provider is useless on another's stream), the entry's `timestamp` field (so a verifier can
//! refuse stale entries) and the exact bytes of its `data` field, each length-prefixed so no two
//! different triples sign the same message. It travels as an extra stream field,
//! [`SIGNATURE_FIELD`], next to `data` and `timestamp`: old agents read the same JSON as before.
//!
//! Keys as text: the secret key file holds the 32-byte ed25519 seed in base64 (lines starting
//! with `#` are comments); a public key is 32 bytes in base64; a signature 64 bytes in base64.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The stream field that carries the broker's signature, next to `data` and `timestamp`.
pub const SIGNATURE_FIELD: &str = "broker_sig";

/// How far (either way) an answer's `timestamp` may lie from the verifier's clock: older entries
/// are stale replays, later ones were not written by a broker with a sane clock.
pub const ANSWER_WINDOW_S: i64 = 300;

/// The domain-separation prefix: a WorldLand broker answer, version 1. Nothing else signed with
/// the broker key can be mistaken for an answer.
const DOMAIN: &[u8] = b"worldland/broker-answer/v1\0";

/// Why a key could not be read from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error("not a base64 ed25519 key (32 bytes)")]
    NotAKey,
    /// 32 bytes, but not a point on the curve (or a weak key).
    #[error("not a valid ed25519 public key")]
    BadPoint,
    /// The key file holds no key line, or more than one.
    #[error("a key file holds exactly one line of base64 (lines starting with # are comments)")]
    BadFile,
}

/// Why a stream entry is not a genuine, fresh answer for the stream it was read from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// The entry carries no broker signature (an old broker, or anyone else).
    #[error("unsigned: no {SIGNATURE_FIELD} field")]
    Unsigned,
    /// The signature field is not base64 of 64 bytes.
    #[error("the {SIGNATURE_FIELD} field is not a base64 ed25519 signature")]
    MalformedSignature,
    /// The signature does not verify under the pinned key for this stream, timestamp and data:
    /// forged, tampered with, or signed for another provider's stream.
    #[error("the signature does not verify under the pinned broker key (forged, altered, or signed for another stream)")]
    Forged,
    /// Signed, but without a `timestamp` field.
    #[error("no timestamp field")]
    MissingTimestamp,
    /// Signed, but the timestamp is not RFC 3339.
    #[error("the timestamp {0:?} is not RFC 3339")]
    BadTimestamp(String),
    /// Genuine, but written outside the window around the verifier's clock: a replay, or a clock
    /// far off.
    #[error("stale: written at {at}, more than {window_s} s from now ({now})")]
    Stale {
        /// The entry's timestamp.
        at: DateTime<Utc>,
        /// The verifier's clock.
        now: DateTime<Utc>,
        /// The window, in seconds.
        window_s: i64,
    },
}

/// The bytes the broker signs: prefix, then stream name, timestamp and data, each preceded by its
/// length (8 bytes, big-endian).
pub fn signed_message(stream: &str, timestamp: &str, data: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + 24 + stream.len() + timestamp.len() + data.len());
    msg.extend_from_slice(DOMAIN);
    for part in [stream.as_bytes(), timestamp.as_bytes(), data] {
        msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
        msg.extend_from_slice(part);
    }
    msg
}

/// The broker's secret signing key. Its Debug output never shows the secret.
#[derive(Clone)]
pub struct BrokerKey(SigningKey);

impl std::fmt::Debug for BrokerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BrokerKey").field(&self.public().to_string()).finish()
    }
}

impl BrokerKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("the OS random source is available");
        Self(SigningKey::from_bytes(&seed))
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// Reads a key file's text: one line of base64 (the seed), `#` lines ignored.
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(KeyError::BadFile);
        };
        let seed: [u8; 32] = B64.decode(line).ok().and_then(|b| b.try_into().ok()).ok_or(KeyError::NotAKey)?;
        Ok(Self::from_seed(&seed))
    }

    /// What a key file holds: a comment naming the public key, then the seed in base64.
    pub fn to_file_text(&self) -> String {
        format!(
            "# WorldLand broker signing key (ed25519 seed, base64). Keep it secret.\n# public key: {}\n{}\n",
            self.public(),
            B64.encode(self.0.to_bytes())
        )
    }

    /// The public half, which agents pin.
    pub fn public(&self) -> BrokerPublicKey {
        BrokerPublicKey(self.0.verifying_key())
    }

    /// The signature (base64) of an entry with this `data` and `timestamp` field on `stream`.
    pub fn sign(&self, stream: &str, timestamp: &str, data: &[u8]) -> String {
        B64.encode(self.0.sign(&signed_message(stream, timestamp, data)).to_bytes())
    }
}

/// The broker's public key, as an agent pins it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BrokerPublicKey(VerifyingKey);

impl std::fmt::Debug for BrokerPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerPublicKey({self})")
    }
}

impl std::fmt::Display for BrokerPublicKey {
    /// Base64 of the 32 key bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&B64.encode(self.0.as_bytes()))
    }
}

impl std::str::FromStr for BrokerPublicKey {
    type Err = KeyError;

    /// Base64 of 32 bytes, surrounding white space ignored.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = B64.decode(s.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(KeyError::NotAKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint)?;
        if key.is_weak() {
            return Err(KeyError::BadPoint);
        }
        Ok(Self(key))
    }
}

impl BrokerPublicKey {
    /// Checks a stream entry read from `stream`: its `signature` field must verify (strictly)
    /// over `stream`, `timestamp` and `data`, and its timestamp must lie within `window` of
    /// `now`. Returns the entry's timestamp.
    pub fn verify(
        &self,
        stream: &str,
        timestamp: Option<&str>,
        data: &[u8],
        signature: Option<&str>,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<DateTime<Utc>, AnswerError> {
        let signature = signature.ok_or(AnswerError::Unsigned)?;
        let sig: [u8; 64] = B64
            .decode(signature.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AnswerError::MalformedSignature)?;
        let timestamp = timestamp.ok_or(AnswerError::MissingTimestamp)?;
        self.0
            .verify_strict(&signed_message(stream, timestamp, data), &Signature::from_bytes(&sig))
            .map_err(|_| AnswerError::Forged)?;
        let at = DateTime::parse_from_rfc3339(timestamp)
            .map_err(|_| AnswerError::BadTimestamp(timestamp.to_string()))?
            .with_timezone(&Utc);
        if (at - now).abs() > window {
            return Err(AnswerError::Stale {
                at,
                now,
                window_s: window.num_seconds(),
            });
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "provider:response:p-1";
    const DATA: &[u8] = br#"{"success":true,"status":"approved","message":"ok"}"#;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window() -> chrono::Duration {
        chrono::Duration::seconds(ANSWER_WINDOW_S)
    }

    #[test]
    fn a_signed_answer_verifies_for_its_stream_timestamp_and_data_only() {
        let key = BrokerKey::generate();
        let public = key.public();
        let ts = "2026-01-01T00:00:00Z";
        let now = at("2026-01-01T00:01:00Z");
        let sig = key.sign(STREAM, ts, DATA);
        assert_eq!(public.verify(STREAM, Some(ts), DATA, Some(&sig), now, window()), Ok(at(ts)));
        // Another stream, another timestamp, other data: each fails.
        let forged = Err(AnswerError::Forged);
        assert_eq!(
            public.verify("provider:response:p-2", Some(ts), DATA, Some(&sig), now, window()),
            forged
        );
        assert_eq!(
            public.verify(STREAM, Some("2026-01-01T00:00:01Z"), DATA, Some(&sig), now, window()),
            forged
        );
        assert_eq!(public.verify(STREAM, Some(ts), b"{}", Some(&sig), now, window()), forged);
        // Another key.
        let other = BrokerKey::generate().sign(STREAM, ts, DATA);
        assert_eq!(public.verify(STREAM, Some(ts), DATA, Some(&other), now, window()), forged);
        // Missing or mangled pieces.
        assert_eq!(
            public.verify(STREAM, Some(ts), DATA, None, now, window()),
            Err(AnswerError::Unsigned)
        );
        assert_eq!(
            public.verify(STREAM, Some(ts), DATA, Some("bm90IGEgc2ln"), now, window()),
            Err(AnswerError::MalformedSignature)
        );
        assert_eq!(
            public.verify(STREAM, None, DATA, Some(&sig), now, window()),
            Err(AnswerError::MissingTimestamp)
        );
    }

    #[test]
    fn answers_outside_the_window_are_stale_either_way() {
        let key = BrokerKey::generate();
        let ts = "2026-01-01T00:00:00Z";
        let sig = key.sign(STREAM, ts, DATA);
        let check = |now: &str| key.public().verify(STREAM, Some(ts), DATA, Some(&sig), at(now), window());
        assert!(check("2026-01-01T00:05:00Z").is_ok(), "exactly at the edge");
        assert!(check("2025-12-31T23:55:00Z").is_ok());
        assert!(matches!(check("2026-01-01T00:05:01Z"), Err(AnswerError::Stale { .. })));
        assert!(matches!(check("2025-12-31T23:54:59Z"), Err(AnswerError::Stale { .. })));
        // A signed but unreadable timestamp is refused too.
        let sig = key.sign(STREAM, "yesterday", DATA);
        assert_eq!(
            key.public().verify(STREAM, Some("yesterday"), DATA, Some(&sig), at(ts), window()),
            Err(AnswerError::BadTimestamp("yesterday".into()))
        );
    }

    #[test]
    fn the_message_is_prefixed_and_length_delimited() {
        // Moving bytes between the stream name and the timestamp changes the message.
        assert_ne!(signed_message("ab", "c", b"d"), signed_message("a", "bc", b"d"));
        assert_ne!(signed_message("a", "b", b"cd"), signed_message("a", "bc", b"d"));
        assert!(signed_message("s", "t", b"d").starts_with(DOMAIN));
    }

    #[test]
    fn keys_round_trip_through_text_and_never_print_the_secret() {
        let key = BrokerKey::generate();
        let text = key.to_file_text();
        let back = BrokerKey::from_file_text(&text).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(text.contains(&key.public().to_string()), "the file names its public key");
        let seed_b64 = text.lines().last().unwrap();
        assert!(!format!("{key:?}").contains(seed_b64));
        let public: BrokerPublicKey = key.public().to_string().parse().unwrap();
        assert_eq!(public, key.public());
        assert_eq!(" bm90LWEta2V5 ".parse::<BrokerPublicKey>(), Err(KeyError::NotAKey));
        assert_eq!(BrokerKey::from_file_text("# only a comment\n").unwrap_err(), KeyError::BadFile);
        assert_eq!(
            BrokerKey::from_file_text(&format!("{seed_b64}\n{seed_b64}\n")).unwrap_err(),
            KeyError::BadFile
        );
        assert_eq!(BrokerKey::from_file_text("not base64!\n").unwrap_err(), KeyError::NotAKey);
        // The all-zero point is a weak key: refused as a pin.
        let weak = B64.encode([1u8].iter().chain([0u8; 31].iter()).copied().collect::<Vec<_>>());
        assert_eq!(weak.parse::<BrokerPublicKey>(), Err(KeyError::BadPoint));
    }
}
