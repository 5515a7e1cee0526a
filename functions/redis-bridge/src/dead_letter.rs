//! What a dead letter keeps of an entry: small whatever the entry was, so the dead-letter
//! stream, bounded in entries by its MAXLEN, is bounded in bytes too.

use crate::entry::{Fields, RawEntry};

/// The most bytes of one field name or value a dead letter copies, and the most fields.
pub const DEAD_LETTER_FIELD_BYTES: usize = 1024;
pub const DEAD_LETTER_FIELDS: usize = 8;

/// What a dead letter keeps of an entry besides where it came from and why: its `size` (field
/// names and values, bytes) and its first [`DEAD_LETTER_FIELDS`] fields, each name and value cut
/// to [`DEAD_LETTER_FIELD_BYTES`] (then `truncated` is `1`). A withheld entry keeps only its size.
/// So each dead letter stays under ~18 KiB, and the dead-letter stream under its MAXLEN times that.
pub fn dead_letter_fields(e: &RawEntry) -> Fields {
    let fields = e.fields.as_deref().unwrap_or_default();
    let size = e
        .withheld
        .unwrap_or_else(|| fields.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum());
    let cut = |b: &[u8]| b[..b.len().min(DEAD_LETTER_FIELD_BYTES)].to_vec();
    let truncated = fields.len() > DEAD_LETTER_FIELDS || fields.iter().any(|(k, v)| k.len().max(v.len()) > DEAD_LETTER_FIELD_BYTES);
    let mut out = vec![(b"size".to_vec(), size.to_string().into_bytes())];
    if truncated {
        out.push((b"truncated".to_vec(), b"1".to_vec()));
    }
    out.extend(fields.iter().take(DEAD_LETTER_FIELDS).map(|(k, v)| (cut(k), cut(v))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&[u8], &[u8])]) -> RawEntry {
        RawEntry {
            id: "1-0".into(),
            fields: Some(fields.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()),
            withheld: None,
        }
    }

    #[test]
    fn dead_letters_keep_the_size_and_at_most_a_few_short_fields() {
        let long = vec![b'x'; DEAD_LETTER_FIELD_BYTES + 1];
        let cut = vec![b'x'; DEAD_LETTER_FIELD_BYTES];
        let many: Fields = (0..DEAD_LETTER_FIELDS + 1).map(|i| (vec![b'a' + i as u8], vec![])).collect();
        let kv = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
        let table: Vec<(RawEntry, Fields)> = vec![
            (entry(&[(b"data", &[0xff])]), vec![kv(b"size", b"5"), kv(b"data", &[0xff])]),
            (
                entry(&[(b"data", &long)]),
                vec![kv(b"size", b"1029"), kv(b"truncated", b"1"), kv(b"data", &cut)],
            ),
            (
                entry(&[(&long, b"v")]),
                vec![kv(b"size", b"1026"), kv(b"truncated", b"1"), (cut.clone(), b"v".to_vec())],
            ),
            (
                RawEntry {
                    id: "1-0".into(),
                    fields: None,
                    withheld: Some(100 << 20),
                },
                vec![kv(b"size", b"104857600")],
            ),
            (
                RawEntry {
                    id: "1-0".into(),
                    ..RawEntry::default()
                },
                vec![kv(b"size", b"0")],
            ),
        ];
        for (e, want) in table {
            assert_eq!(dead_letter_fields(&e), want, "{e:?}");
        }
        let e = RawEntry {
            id: "1-0".into(),
            fields: Some(many.clone()),
            withheld: None,
        };
        let got = dead_letter_fields(&e);
        assert_eq!(got[..2], [kv(b"size", b"9"), kv(b"truncated", b"1")]);
        assert_eq!(got[2..], many[..DEAD_LETTER_FIELDS]);
    }
}
