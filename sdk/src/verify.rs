//! Which entries of its response stream the SDK believes. Anyone who reaches Redis can XADD to
//! `provider:response:<id>`, so an entry counts only when it carries the broker's signature
//! (`broker_sig`), made with the key pinned at install, for this very stream, with a timestamp
//! within ±5 minutes of this machine's clock. Everything else is skipped, and logged.

use chrono::{DateTime, Utc};
use redis::Value;
use worldland_core::answers::{AnswerError, BrokerPublicKey, ANSWER_WINDOW_S, SIGNATURE_FIELD};

/// One entry of a stream, with the fields the SDK looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The Redis entry id.
    pub id: String,
    /// The `data` field, byte for byte (empty when absent).
    pub data: Vec<u8>,
    /// The `timestamp` field, as written.
    pub timestamp: Option<String>,
    /// The broker's signature field, when present.
    pub broker_sig: Option<String>,
}

/// Every entry of an XREAD / XREADGROUP reply, in order: `[[stream, [[id, [k, v, …]], …]], …]`.
pub fn entries(reply: &Value) -> Vec<Entry> {
    let Value::Array(streams) = reply else { return vec![] };
    streams
        .iter()
        .filter_map(|s| match s {
            Value::Array(parts) => match parts.get(1) {
                Some(Value::Array(es)) => Some(es),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            Value::Array(idf) => entry(idf),
            _ => None,
        })
        .collect()
}

fn entry(idf: &[Value]) -> Option<Entry> {
    let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (idf.first(), idf.get(1)) else {
        return None;
    };
    let mut e = Entry {
        id: String::from_utf8_lossy(id).into_owned(),
        ..Default::default()
    };
    for kv in fields.chunks(2) {
        if let [Value::BulkString(k), Value::BulkString(v)] = kv {
            match k.as_slice() {
                b"data" => e.data = v.clone(),
                b"timestamp" => e.timestamp = Some(String::from_utf8_lossy(v).into_owned()),
                k if k == SIGNATURE_FIELD.as_bytes() => e.broker_sig = Some(String::from_utf8_lossy(v).into_owned()),
                _ => {}
            }
        }
    }
    Some(e)
}

/// Whether `entry`, read from `stream`, is the broker's: signed by `broker` for this stream, its
/// timestamp and data, within [`ANSWER_WINDOW_S`] of `now`.
pub fn check(entry: &Entry, stream: &str, broker: &BrokerPublicKey, now: DateTime<Utc>) -> Result<(), AnswerError> {
    broker
        .verify(
            stream,
            entry.timestamp.as_deref(),
            &entry.data,
            entry.broker_sig.as_deref(),
            now,
            chrono::Duration::seconds(ANSWER_WINDOW_S),
        )
        .map(|_| ())
}

/// [`check`], logging each entry it skips with its reason.
pub fn believe(entry: &Entry, stream: &str, broker: &BrokerPublicKey, now: DateTime<Utc>) -> bool {
    match check(entry, stream, broker, now) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(stream, entry = %entry.id, reason = %why, "skipped an entry not signed by the pinned broker key");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worldland_core::answers::BrokerKey;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_xread_replies_and_checks_them() {
        let key = BrokerKey::generate();
        let now = Utc::now();
        let ts = now.to_rfc3339();
        let sig = key.sign("s", &ts, b"{}");
        let fields = Value::Array(vec![
            bulk("data"),
            bulk("{}"),
            bulk("timestamp"),
            bulk(&ts),
            bulk(SIGNATURE_FIELD),
            bulk(&sig),
        ]);
        let one = Value::Array(vec![bulk("1-0"), fields]);
        let xread = Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![one])])]);
        let want = Entry {
            id: "1-0".into(),
            data: b"{}".to_vec(),
            timestamp: Some(ts.clone()),
            broker_sig: Some(sig),
        };
        assert_eq!(entries(&xread), vec![want.clone()]);
        assert_eq!(entries(&Value::Nil), vec![]);
        assert!(believe(&want, "s", &key.public(), now));
        assert!(!believe(&want, "other", &key.public(), now));
        let unsigned = Entry { broker_sig: None, ..want };
        assert_eq!(check(&unsigned, "s", &key.public(), now), Err(AnswerError::Unsigned));
    }
}
