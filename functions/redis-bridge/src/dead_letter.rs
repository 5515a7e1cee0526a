//! What a dead letter keeps of an entry: small whatever the entry was, so the dead-letter
//! stream, bounded in entries by its MAXLEN, is bounded in bytes too.

use crate::entry::{Fields, RawEntry};

/// The most bytes of one field name or value a dead letter copies, the most fields, and the
/// most bytes of names and values in all.
pub const DEAD_LETTER_FIELD_BYTES: usize = 1024;
pub const DEAD_LETTER_FIELDS: usize = 8;
pub const DEAD_LETTER_COPY_BYTES: usize = 2048;

/// What a dead letter keeps of an entry besides where it came from and why: its `size` (field
/// names and values, bytes) and its first fields, at most [`DEAD_LETTER_FIELDS`] of them, each
/// name and value cut to [`DEAD_LETTER_FIELD_BYTES`] and all to [`DEAD_LETTER_COPY_BYTES`] (then
/// `truncated` is `1`). A withheld entry keeps only its size. So with its message (≤ 1 KiB) a
/// dead letter stays under ~3.5 KiB, and the dead-letter stream under its MAXLEN times that.
pub fn dead_letter_fields(e: &RawEntry) -> Fields {
    let fields = e.fields.as_deref().unwrap_or_default();
    let size = e
        .withheld
        .unwrap_or_else(|| fields.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum());
    let mut room = DEAD_LETTER_COPY_BYTES;
    let mut cut = |b: &[u8]| {
        let kept = b[..b.len().min(DEAD_LETTER_FIELD_BYTES).min(room)].to_vec();
        room -= kept.len();
        kept
    };
    let mut copied = Fields::new();
    for (k, v) in fields.iter().take(DEAD_LETTER_FIELDS) {
        let k = cut(k);
        copied.push((k, cut(v)));
    }
    let kept: usize = copied.iter().map(|(k, v)| k.len() + v.len()).sum();
    let truncated = e.fields.is_some() && (copied.len() < fields.len() || (kept as u64) < size);
    let mut out = vec![(b"size".to_vec(), size.to_string().into_bytes())];
    if truncated {
        out.push((b"truncated".to_vec(), b"1".to_vec()));
    }
    out.extend(copied);
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
                entry(&[(b"a", &[b'1'; 1000]), (b"b", &[b'2'; 1000]), (b"c", &[b'3'; 1000])]),
                vec![
                    kv(b"size", b"3003"),
                    kv(b"truncated", b"1"),
                    kv(b"a", &[b'1'; 1000]),
                    kv(b"b", &[b'2'; 1000]),
                    kv(b"c", &[b'3'; 45]),
                ],
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
