//! What DynamoDB bills for an item: its size (attribute names and values) and the write units one
//! write of it costs — 1 per KiB or part of one, of the larger of the item before and after. A
//! conditional write whose condition fails is billed by the item as stored, like one that applies.

use super::{Item, Value};

/// An item's size as DynamoDB bills it: attribute names and values (a number's bytes are about
/// half its digits plus one; a map adds 3 bytes and 1 per element).
pub fn billed_size(item: &Item) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::S(s) => s.len(),
            Value::N(n) => n.to_string().len().div_ceil(2) + 1,
            Value::B(_) => 1,
            Value::M(m) => 3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>(),
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// Write units of one write to an item of `bytes` (the larger of before and after): 1 per KiB
/// or part of one, at least 1.
pub fn write_units(bytes: usize) -> u64 {
    (bytes.div_ceil(1024) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_units() {
        let item = Item::from([
            ("id".to_string(), Value::from("p1")),
            ("n".to_string(), Value::N(1_700_000_000_000)),
            ("ok".to_string(), Value::B(true)),
        ]);
        assert_eq!(billed_size(&item), 2 + 2 + 1 + 8 + 2 + 1);
        let table = [(0, 1), (1, 1), (1024, 1), (1025, 2), (130 * 1024, 130)];
        for (bytes, units) in table {
            assert_eq!(write_units(bytes), units, "{bytes}");
        }
    }
}
