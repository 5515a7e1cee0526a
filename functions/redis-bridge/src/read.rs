//! Reading entries without ever receiving an oversized one. An agent's XADD has no size bound the
//! ACL can set (Redis takes fields of up to `proto-max-bulk-len` each, and any number of them),
//! so the bridge reads through a script that Redis runs: it reads the batch (XREADGROUP `>` or
//! XAUTOCLAIM), sums each entry's field bytes there and answers an entry over the limit with its
//! id and size only. What the bridge holds is bounded by `batch × MAX_ENTRY_BYTES`, whatever the
//! agents write.

use redis::Value;

use crate::entry::{self, RawEntry};
use crate::{Error, RedisBridge, Result};

/// KEYS[1]: the stream. ARGV: group, consumer, count, the largest entry (bytes) to answer whole,
/// then `>` (new entries, XREADGROUP) or an idle time and a start id (XAUTOCLAIM). Answers
/// `{next start id, entries, ids deleted while pending}`; an entry is `{id, fields}`, or
/// `{id, size}` when its fields and their names come to more than the limit.
pub(crate) const READ_SCRIPT: &str = r"
local limit = tonumber(ARGV[4])
local next_id, entries, deleted = '0-0', {}, {}
if ARGV[5] == '>' then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
  if r then entries = r[1][2] end
else
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], ARGV[6], 'COUNT', ARGV[3])
  next_id, entries, deleted = r[1], r[2], r[3] or {}
end
local out = {}
for i, e in ipairs(entries) do
  local size = 0
  if type(e[2]) == 'table' then
    for _, f in ipairs(e[2]) do size = size + #f end
  end
  if size > limit then out[i] = {e[1], size} else out[i] = e end
end
return {next_id, out, deleted}
";

/// The script's answer: next start id, entries (those withheld for their size carry it), and
/// ids deleted while pending. `None` for anything else.
pub fn parse_script_reply(v: &Value) -> Option<(String, Vec<RawEntry>, Vec<String>)> {
    let parts = entry::items(v)?;
    let next = entry::text(parts.first()?)?;
    let entries = entry::items(parts.get(1)?)?
        .into_iter()
        .map(|e| {
            let item = entry::items(e)?;
            match item.get(1) {
                Some(Value::Int(size)) => Some(RawEntry {
                    id: entry::text(item.first()?)?,
                    fields: None,
                    withheld: Some(u64::try_from(*size).ok()?),
                }),
                _ => entry::parse_entry(e),
            }
        })
        .collect::<Option<Vec<_>>>()?;
    let deleted = match parts.get(2) {
        Some(d) => entry::items(d)?.into_iter().filter_map(entry::text).collect(),
        None => vec![],
    };
    Some((next, entries, deleted))
}

/// Where a read starts: new entries, or those pending longer than an idle time from a start id.
pub(crate) enum ReadFrom<'a> {
    New,
    Pending { idle_ms: u64, start: &'a str },
}

impl RedisBridge {
    /// Up to `batch` entries of `stream` for this consumer, none of them larger than
    /// `MAX_ENTRY_BYTES` (those come as id and size): next start id, entries, deleted ids.
    pub(crate) async fn read(&self, stream: &str, from: ReadFrom<'_>) -> Result<(String, Vec<RawEntry>, Vec<String>)> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ_SCRIPT)
            .arg(1)
            .arg(stream)
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg(self.settings.batch.max(1))
            .arg(worldland_core::messages::MAX_ENTRY_BYTES);
        match from {
            ReadFrom::New => cmd.arg(">"),
            ReadFrom::Pending { idle_ms, start } => cmd.arg(idle_ms).arg(start),
        };
        let reply: Value = cmd.query_async(&mut self.reader.clone()).await?;
        parse_script_reply(&reply).ok_or(Error::Reply("EVAL read"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn parses_whole_and_withheld_entries() {
        let reply = Value::Array(vec![
            bs(b"0-0"),
            Value::Array(vec![
                Value::Array(vec![bs(b"1-0"), Value::Array(vec![bs(b"data"), bs(&[0xff])])]),
                Value::Array(vec![bs(b"2-0"), Value::Int(100 * 1024 * 1024)]),
            ]),
            Value::Array(vec![bs(b"3-0")]),
        ]);
        let (next, entries, deleted) = parse_script_reply(&reply).unwrap();
        assert_eq!((next.as_str(), deleted), ("0-0", vec!["3-0".to_string()]));
        assert_eq!(entries[0].fields, Some(vec![(b"data".to_vec(), vec![0xff])]));
        assert_eq!(entries[0].withheld, None);
        assert_eq!((entries[1].fields.as_ref(), entries[1].withheld), (None, Some(100 * 1024 * 1024)));
        let table = [
            Value::Nil,
            Value::Array(vec![bs(b"0-0")]),
            Value::Array(vec![bs(b"0-0"), Value::Array(vec![Value::Array(vec![bs(b"1-0"), Value::Int(-1)])])]),
            Value::Array(vec![bs(b"0-0"), Value::Array(vec![Value::Int(3)])]),
        ];
        for bad in table {
            assert_eq!(parse_script_reply(&bad), None, "{bad:?}");
        }
        let empty = Value::Array(vec![bs(b"0-0"), Value::Array(vec![]), Value::Array(vec![])]);
        assert_eq!(parse_script_reply(&empty), Some(("0-0".into(), vec![], vec![])));
    }
}
