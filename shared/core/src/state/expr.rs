//! The language of conditional writes, shared by every store: a condition over an item and the
//! update operations to apply when it holds. Pure: the in-memory store evaluates it here, the
//! DynamoDB store translates it into condition and update expressions with the same meaning.

use std::collections::BTreeMap;

/// An attribute value. Numbers are integers (money is kept in integer micro-units).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A string.
    S(String),
    /// An integer: counts, epoch ms, micro-units.
    N(i64),
    /// A boolean.
    B(bool),
    /// A nested map, reached with `.` between keys in a path.
    M(BTreeMap<String, Value>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::S(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::N(n) => Some(*n),
            _ => None,
        }
    }
    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::B(b) => Some(*b),
            _ => None,
        }
    }
    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::M(m) => Some(m),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::S(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::S(s)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::N(n)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::B(b)
    }
}

/// One stored item: attribute name → value.
pub type Item = BTreeMap<String, Value>;

/// A condition on the item as stored at write time. Paths are attribute names, with `.` between
/// the keys of nested maps.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Always holds.
    Always,
    /// The item exists.
    ItemExists,
    /// No item with the key exists yet.
    ItemNotExists,
    /// The attribute at the path exists.
    AttrExists(String),
    /// The attribute at the path is absent.
    AttrNotExists(String),
    /// The attribute at the path equals the value (false when absent).
    Eq(String, Value),
    /// Numeric comparisons; false when the attribute is missing or not a number.
    Lt(String, i64),
    /// Number at the path ≤ the value; false when missing or not a number.
    Le(String, i64),
    /// Number at the path ≥ the value; false when missing or not a number.
    Ge(String, i64),
    /// Number at the path > the value; false when missing or not a number.
    Gt(String, i64),
    /// The attribute at the path equals one of the values.
    In(String, Vec<Value>),
    /// Every condition holds.
    And(Vec<Cond>),
    /// At least one condition holds.
    Or(Vec<Cond>),
    /// The condition does not hold.
    Not(Box<Cond>),
}

impl Cond {
    /// The attribute at `path` equals `v`.
    pub fn eq(path: &str, v: impl Into<Value>) -> Self {
        Cond::Eq(path.to_string(), v.into())
    }
    /// The item's `state` (the state index's partition attribute) is one of `states`: a
    /// provider's or a job's states, as their enums.
    pub fn state_in<S: Copy + Into<Value>>(states: &[S]) -> Self {
        Cond::In(super::INDEX_STATE_ATTR.into(), states.iter().map(|s| (*s).into()).collect())
    }
    /// Both `self` and `other`; joins an existing `And`, and `Always` drops out.
    pub fn and(self, other: Cond) -> Self {
        match self {
            Cond::And(mut v) => {
                v.push(other);
                Cond::And(v)
            }
            Cond::Always => other,
            c => Cond::And(vec![c, other]),
        }
    }
}

/// One update operation. `Add` adds to a number (a missing attribute counts as 0).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Sets the attribute at the path, replacing any value (its parent maps must exist).
    Set(String, Value),
    /// Removes the attribute at the path; nothing happens if it is absent.
    Remove(String),
    /// Adds to the number at the path (a negative amount subtracts).
    Add(String, i64),
}

impl Op {
    /// An [`Op::Set`] from a path and anything that converts into a [`Value`].
    pub fn set(path: &str, v: impl Into<Value>) -> Self {
        Op::Set(path.to_string(), v.into())
    }
    /// The attribute path the operation writes.
    pub fn path(&self) -> &str {
        match self {
            Op::Set(p, _) | Op::Remove(p) | Op::Add(p, _) => p,
        }
    }
}

/// The value at a path (`.` between the keys of nested maps), if there is one.
pub fn get_path<'a>(item: &'a Item, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = item.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_map()?.get(part)?;
    }
    Some(cur)
}

/// Evaluates a condition against the stored item (`None`: no item).
pub fn eval(cond: &Cond, item: Option<&Item>) -> bool {
    let attr = |p: &str| item.and_then(|i| get_path(i, p));
    let num = |p: &str| attr(p).and_then(Value::as_i64);
    match cond {
        Cond::Always => true,
        Cond::ItemExists => item.is_some(),
        Cond::ItemNotExists => item.is_none(),
        Cond::AttrExists(p) => attr(p).is_some(),
        Cond::AttrNotExists(p) => attr(p).is_none(),
        Cond::Eq(p, v) => attr(p) == Some(v),
        Cond::Lt(p, n) => num(p).is_some_and(|x| x < *n),
        Cond::Le(p, n) => num(p).is_some_and(|x| x <= *n),
        Cond::Ge(p, n) => num(p).is_some_and(|x| x >= *n),
        Cond::Gt(p, n) => num(p).is_some_and(|x| x > *n),
        Cond::In(p, vs) => attr(p).is_some_and(|a| vs.contains(a)),
        Cond::And(cs) => cs.iter().all(|c| eval(c, item)),
        Cond::Or(cs) => cs.iter().any(|c| eval(c, item)),
        Cond::Not(c) => !eval(c, item),
    }
}

/// Refusal of an update: a path goes through a value that is not a map, or overlaps another path of the same update (named in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("update path {0} goes through a value that is not a map, or overlaps another path of the same update")]
pub struct PathError(pub String);

/// DynamoDB refuses an update whose paths overlap (the same path twice, or one inside another);
/// so does every store.
pub fn check_paths(ops: &[Op]) -> Result<(), PathError> {
    // `inner` lies inside `outer` when it starts with `outer` followed by a dot.
    let within = |inner: &str, outer: &str| inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'.');
    for (i, a) in ops.iter().enumerate() {
        for b in &ops[i + 1..] {
            let (a, b) = (a.path(), b.path());
            if a == b || within(b, a) || within(a, b) {
                return Err(PathError(format!("{a} / {b}")));
            }
        }
    }
    Ok(())
}

/// Applies update operations to a stored item in place, all or nothing: every path is checked
/// before anything is written, so a refused update leaves the item as it was.
pub fn apply_in_place(item: &mut Item, ops: &[Op]) -> Result<(), PathError> {
    check_paths(ops)?;
    for op in ops {
        let mut parts = op.path().split('.');
        let first = parts.next().expect("paths are not empty");
        let rest: Vec<&str> = parts.collect();
        let mut map: &Item = item;
        let mut name = first;
        for next in &rest {
            match map.get(name) {
                Some(Value::M(m)) => map = m,
                _ => return Err(PathError(op.path().to_string())),
            }
            name = next;
        }
        if let Op::Add(..) = op {
            if !matches!(map.get(name), None | Some(Value::N(_))) {
                return Err(PathError(op.path().to_string()));
            }
        }
    }
    for op in ops {
        let parts: Vec<&str> = op.path().split('.').collect();
        let (last, parents) = parts.split_last().expect("paths are not empty");
        let mut map = &mut *item;
        for p in parents {
            match map.get_mut(*p) {
                Some(Value::M(m)) => map = m,
                _ => unreachable!("checked above"),
            }
        }
        match op {
            Op::Set(_, v) => {
                map.insert(last.to_string(), v.clone());
            }
            Op::Remove(_) => {
                map.remove(*last);
            }
            Op::Add(_, n) => {
                let cur = map.get(*last).and_then(Value::as_i64).unwrap_or(0);
                map.insert(last.to_string(), Value::N(cur + n));
            }
        }
    }
    Ok(())
}

/// Applies update operations to an item (creating it if `None`), as DynamoDB would.
pub fn apply(item: Option<&Item>, key_attr: &str, key: &str, ops: &[Op]) -> Result<Item, PathError> {
    check_paths(ops)?;
    let mut out = item
        .cloned()
        .unwrap_or_else(|| Item::from([(key_attr.to_string(), Value::from(key))]));
    for op in ops {
        let parts: Vec<&str> = op.path().split('.').collect();
        let (last, parents) = parts.split_last().expect("paths are not empty");
        let mut map = &mut out;
        for p in parents {
            match map.get_mut(*p) {
                Some(Value::M(m)) => map = m,
                _ => return Err(PathError(op.path().to_string())),
            }
        }
        match op {
            Op::Set(_, v) => {
                map.insert(last.to_string(), v.clone());
            }
            Op::Remove(_) => {
                map.remove(*last);
            }
            Op::Add(_, n) => {
                let cur = match map.get(*last) {
                    None => 0,
                    Some(Value::N(x)) => *x,
                    Some(_) => return Err(PathError(op.path().to_string())),
                };
                map.insert(last.to_string(), Value::N(cur + n));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        Item::from([
            ("id".into(), Value::from("p1")),
            ("state".into(), Value::from("pending")),
            ("gpus".into(), Value::N(4)),
            ("alloc".into(), Value::M(BTreeMap::from([("job-1".into(), Value::N(2))]))),
        ])
    }

    #[test]
    fn conditions() {
        let i = item();
        let table = [
            (Cond::Always, None, true),
            (Cond::ItemExists, None, false),
            (Cond::ItemNotExists, None, true),
            (Cond::ItemExists, Some(&i), true),
            (Cond::AttrExists("alloc.job-1".into()), Some(&i), true),
            (Cond::AttrNotExists("alloc.job-2".into()), Some(&i), true),
            (Cond::eq("state", "pending"), Some(&i), true),
            (Cond::eq("state", "approved"), Some(&i), false),
            (Cond::eq("missing", "x"), Some(&i), false),
            (Cond::Not(Box::new(Cond::eq("missing", "x"))), Some(&i), true),
            (Cond::Ge("gpus".into(), 4), Some(&i), true),
            (Cond::Gt("gpus".into(), 4), Some(&i), false),
            (Cond::Lt("state".into(), 4), Some(&i), false),
            (Cond::Le("missing".into(), 4), Some(&i), false),
            (Cond::state_in(&["approved", "pending"]), Some(&i), true),
            (Cond::state_in(&["approved"]), Some(&i), false),
            (Cond::Or(vec![Cond::ItemNotExists, Cond::eq("state", "pending")]), Some(&i), true),
            (Cond::eq("state", "pending").and(Cond::Ge("gpus".into(), 5)), Some(&i), false),
        ];
        for (c, it, want) in table {
            assert_eq!(eval(&c, it), want, "{c:?}");
        }
    }

    #[test]
    fn updates() {
        let out = apply(
            Some(&item()),
            "id",
            "p1",
            &[
                Op::set("state", "approved"),
                Op::Add("gpus".into(), -1),
                Op::Add("alloc.job-2".into(), 3),
                Op::Remove("alloc.job-1".into()),
            ],
        )
        .unwrap();
        assert_eq!(out["state"], Value::from("approved"));
        assert_eq!(out["gpus"], Value::N(3));
        assert_eq!(get_path(&out, "alloc.job-2"), Some(&Value::N(3)));
        assert_eq!(get_path(&out, "alloc.job-1"), None);
        let fresh = apply(None, "id", "p2", &[Op::set("state", "pending")]).unwrap();
        assert_eq!(fresh["id"], Value::from("p2"));
        assert!(apply(Some(&item()), "id", "p1", &[Op::set("state.x", 1i64)]).is_err());
        assert!(
            apply(Some(&item()), "id", "p1", &[Op::set("state", "a"), Op::set("state", "b")]).is_err(),
            "the same path twice"
        );
        assert!(
            apply(
                Some(&item()),
                "id",
                "p1",
                &[Op::Remove("alloc".into()), Op::Add("alloc.job-1".into(), 1)]
            )
            .is_err(),
            "nested paths"
        );
    }
}
