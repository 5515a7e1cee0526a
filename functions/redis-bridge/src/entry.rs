//! Stream entries as Redis returns them, parsed from raw replies so that hostile bytes (non-UTF-8
//! field names or values) never break the parse of a whole batch.

use redis::Value;
use worldland_core::messages::{StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_core::refusal::{Reason, Rejection};

/// An entry's fields, names and values as Redis holds them (any bytes).
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry: its id and fields (`None` when the entry was deleted while pending, or withheld).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawEntry {
    pub id: String,
    pub fields: Option<Fields>,
    /// The entry's size (field names and values, bytes) when Redis kept its fields back for
    /// being over [`MAX_ENTRY_BYTES`]: the bridge never receives such an entry.
    pub withheld: Option<u64>,
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(crate) fn items(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a.iter().collect()),
        _ => None,
    }
}

pub(crate) fn parse_entry(v: &Value) -> Option<RawEntry> {
    let parts = items(v)?;
    let id = text(parts.first()?)?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(f) => {
            let flat = items(f)?;
            Some(
                flat.chunks(2)
                    .filter_map(|kv| Some((bytes(kv.first()?)?, bytes(kv.get(1)?)?)))
                    .collect(),
            )
        }
    };
    Some(RawEntry {
        id,
        fields,
        withheld: None,
    })
}

fn field<'a>(pairs: &'a [Value], name: &str) -> Option<&'a Value> {
    pairs
        .chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some(name))
        .and_then(|kv| kv.get(1))
}

/// XINFO GROUPS: the `last-delivered-id` of `group`.
pub fn group_last_delivered(v: &Value, group: &str) -> Option<String> {
    items(v)?.into_iter().find_map(|g| {
        let pairs: Vec<Value> = match g {
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            other => items(other)?.into_iter().cloned().collect(),
        };
        (field(&pairs, "name").and_then(text).as_deref() == Some(group)).then(|| field(&pairs, "last-delivered-id").and_then(text))?
    })
}

/// XINFO GROUPS: the `lag` of `group` (entries not yet delivered to it; Redis 7).
pub fn group_lag(v: &Value, group: &str) -> Option<i64> {
    items(v)?.into_iter().find_map(|g| {
        let pairs: Vec<Value> = match g {
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            other => items(other)?.into_iter().cloned().collect(),
        };
        if field(&pairs, "name").and_then(text).as_deref() != Some(group) {
            return None;
        }
        match field(&pairs, "lag")? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    })
}

/// XPENDING summary: the smallest pending id, if any entry is pending.
/// The delivery count of the one entry in an extended `XPENDING key group id id 1` reply
/// (`[[id, consumer, idle_ms, deliveries]]`).
pub fn pending_delivery_count(v: &Value) -> Option<u64> {
    let rows = items(v)?;
    let row = items(rows.first()?)?;
    match row.get(3)? {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

pub fn pending_min_id(v: &Value) -> Option<String> {
    let parts = items(v)?;
    match parts.first()? {
        Value::Int(0) => None,
        _ => text(parts.get(1)?),
    }
}

/// How far an entry id's time may lie ahead of the bridge's clock (clocks of the broker's hosts
/// and Redis differ a little); an id further ahead was chosen by its writer, not by Redis.
pub const MAX_ENTRY_ID_LEAD: chrono::Duration = chrono::Duration::seconds(5);

/// An entry id's time (ms) and sequence number; `None` for anything else.
pub fn id_parts(entry_id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = entry_id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether an entry id's time lies more than [`MAX_ENTRY_ID_LEAD`] ahead of `now` (an id that
/// cannot be read, e.g. one past `i64` milliseconds, counts as in the future).
pub fn lies_in_future(entry_id: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    let limit = (now + MAX_ENTRY_ID_LEAD).timestamp_millis();
    match id_parts(entry_id) {
        Some((ms, _)) => i64::try_from(ms).map_or(true, |ms| ms > limit),
        None => true,
    }
}

/// Whether Redis may have given `entry_id` to a `*` XADD after an id in the future: it numbers
/// such an entry with that id's time and the next sequence number, never 0, and never past its
/// own `i64` clock. A future id with sequence 0 (or past that clock) was chosen by its writer.
/// An explicit future id with a sequence above 0 cannot be told from a dragged one; it is
/// forwarded on the bridge's clock, which gives its writer nothing a `*` id would not.
pub fn may_be_dragged(entry_id: &str) -> bool {
    matches!(id_parts(entry_id), Some((ms, seq)) if seq > 0 && i64::try_from(ms).is_ok())
}

fn too_large(size: u64) -> Rejection {
    Rejection::new(
        Reason::EntryTooLarge,
        format!("entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"),
    )
}

/// Checks an entry and makes the bus envelope, stamped with when the broker received it.
/// An id in the future was chosen by its writer: refused, unless it is `dragged` — numbered by
/// Redis right after such an id, written by an honest agent with `*` — which is forwarded with
/// the bridge's own clock as its receive time. `data` must be there, UTF-8, and with its
/// signature within the size cap.
pub fn envelope_for(stream: &str, e: &RawEntry, now: chrono::DateTime<chrono::Utc>, dragged: bool) -> Result<StreamEnvelope, Rejection> {
    let received_at_ms = match id_parts(&e.id) {
        _ if lies_in_future(&e.id, now) && !dragged => {
            return Err(Rejection::new(
                Reason::TimestampOutsideWindow,
                format!("entry id {} lies in the future: its writer chose it, Redis did not", e.id),
            ));
        }
        Some((ms, _)) if !dragged => i64::try_from(ms).unwrap_or(i64::MAX).min(now.timestamp_millis()),
        _ => now.timestamp_millis(),
    };
    if let Some(size) = e.withheld {
        return Err(too_large(size));
    }
    let Some(fields) = &e.fields else {
        return Err(Rejection::new(
            Reason::MissingData,
            "entry was deleted before it could be forwarded",
        ));
    };
    let get = |name: &str| fields.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v);
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENTRY_BYTES {
        return Err(too_large(size as u64));
    }
    let Some(data) = get("data") else {
        return Err(Rejection::new(Reason::MissingData, "entry has no data field"));
    };
    let data = String::from_utf8(data.clone()).map_err(|_| Rejection::new(Reason::NotUtf8, "data is not UTF-8 text"))?;
    let opt_text = |name: &str| -> Result<Option<String>, Rejection> {
        get(name)
            .map(|v| String::from_utf8(v.clone()).map_err(|_| Rejection::new(Reason::NotUtf8, format!("{name} is not UTF-8 text"))))
            .transpose()
    };
    Ok(StreamEnvelope {
        stream: stream.to_string(),
        entry_id: e.id.clone(),
        data,
        signature: opt_text("signature")?,
        timestamp: opt_text("timestamp")?,
        received_at_ms: Some(received_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn entry(fields: &[(&[u8], &[u8])]) -> RawEntry {
        RawEntry {
            id: "1-0".into(),
            fields: Some(fields.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()),
            withheld: None,
        }
    }

    #[test]
    fn entry_checks() {
        let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
        let table: Vec<(RawEntry, Result<(), Reason>)> = vec![
            (entry(&[(b"data", b"{}"), (b"timestamp", b"t")]), Ok(())),
            (entry(&[(b"data", b"{}"), (b"signature", b"0xab")]), Ok(())),
            (entry(&[(b"timestamp", b"t")]), Err(Reason::MissingData)),
            (entry(&[(b"data", &[0xff, 0xfe])]), Err(Reason::NotUtf8)),
            (entry(&[(b"data", b"{}"), (b"signature", &[0xff])]), Err(Reason::NotUtf8)),
            (entry(&[(b"data", &big)]), Err(Reason::EntryTooLarge)),
            (
                RawEntry {
                    id: "1-0".into(),
                    ..RawEntry::default()
                },
                Err(Reason::MissingData),
            ),
            (
                RawEntry {
                    id: "1-0".into(),
                    fields: None,
                    withheld: Some(100 << 20),
                },
                Err(Reason::EntryTooLarge),
            ),
            (
                RawEntry {
                    withheld: Some(100 << 20),
                    ..entry(&[(b"data", b"{}")])
                },
                Err(Reason::EntryTooLarge),
            ),
        ];
        let now = chrono::Utc::now();
        for (e, want) in table {
            assert_eq!(envelope_for("s", &e, now, false).map(|_| ()).map_err(|r| r.reason), want, "{e:?}");
        }
        // An explicit far-future id (which also drags later `*` ids forward) is refused; ids at
        // the bridge's clock, slightly ahead of it, or in the past are taken.
        let at = |ms: i64| RawEntry {
            id: format!("{ms}-0"),
            fields: Some(vec![(b"data".to_vec(), b"{}".to_vec())]),
            withheld: None,
        };
        let now_ms = now.timestamp_millis();
        let verdict = |ms| envelope_for("s", &at(ms), now, false).map(|_| ()).map_err(|r| r.reason);
        assert_eq!(verdict(9_999_999_999_999), Err(Reason::TimestampOutsideWindow));
        assert_eq!(verdict(now_ms + 6_000), Err(Reason::TimestampOutsideWindow));
        assert_eq!(verdict(now_ms + 4_000), Ok(()));
        assert_eq!(verdict(now_ms), Ok(()));
        assert_eq!(verdict(now_ms - 600_000), Ok(()));
        // Ids Redis's own `i64` clock never gives, up to its last possible id, count as future.
        let max = RawEntry {
            id: "18446744073709551615-18446744073709551615".into(),
            fields: Some(vec![(b"data".to_vec(), b"{}".to_vec())]),
            withheld: None,
        };
        assert!(lies_in_future(&max.id, now));
        assert_eq!(
            envelope_for("s", &max, now, false).map(|_| ()).map_err(|r| r.reason),
            Err(Reason::TimestampOutsideWindow)
        );
        // A dragged entry is forwarded, received at the bridge's clock, not its id's time.
        let env = envelope_for("s", &at(9_999_999_999_999), now, true).unwrap();
        assert_eq!(env.received_at_ms, Some(now_ms));
        assert_eq!(
            envelope_for("s", &at(now_ms - 1_000), now, false).unwrap().received_at_ms,
            Some(now_ms - 1_000)
        );
        assert_eq!(
            envelope_for("s", &at(now_ms + 3_000), now, false).unwrap().received_at_ms,
            Some(now_ms),
            "never later than the bridge's clock"
        );
        let table = [
            ("9999999999999-1", true),
            ("9999999999999-77", true),
            ("9999999999999-0", false),
            ("9223372036854775807-1", true),
            ("9223372036854775808-1", false),
            ("18446744073709551615-18446744073709551615", false),
            ("x-1", false),
            ("12", false),
        ];
        for (id, want) in table {
            assert_eq!(may_be_dragged(id), want, "{id}");
        }
    }

    #[test]
    fn parses_raw_replies_with_hostile_bytes() {
        let hostile = Value::Array(vec![bs(b"2-0"), Value::Array(vec![bs(&[0xff]), bs(&[0xfe])])]);
        assert_eq!(parse_entry(&hostile).unwrap().fields, Some(vec![(vec![0xff], vec![0xfe])]));
        assert_eq!(parse_entry(&Value::Array(vec![bs(b"3-0"), Value::Nil])).unwrap().fields, None);
        let groups = Value::Array(vec![Value::Array(vec![
            bs(b"name"),
            bs(b"g"),
            bs(b"last-delivered-id"),
            bs(b"7-1"),
        ])]);
        assert_eq!(group_last_delivered(&groups, "g"), Some("7-1".into()));
        assert_eq!(group_last_delivered(&groups, "other"), None);
        let with_lag = Value::Array(vec![Value::Array(vec![bs(b"name"), bs(b"g"), bs(b"lag"), Value::Int(3)])]);
        assert_eq!(group_lag(&with_lag, "g"), Some(3));
        assert_eq!(group_lag(&groups, "g"), None);
        assert_eq!(
            pending_min_id(&Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil])),
            None
        );
        assert_eq!(
            pending_min_id(&Value::Array(vec![Value::Int(2), bs(b"3-0"), bs(b"4-0"), Value::Nil])),
            Some("3-0".into())
        );
        let row = Value::Array(vec![Value::Array(vec![bs(b"3-0"), bs(b"c"), Value::Int(10), Value::Int(4)])]);
        assert_eq!(pending_delivery_count(&row), Some(4));
        assert_eq!(pending_delivery_count(&Value::Array(vec![])), None);
    }
}
