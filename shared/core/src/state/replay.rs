//! A write that applied but whose answer was lost is sent again (the AWS SDK retries a timed-out
//! or dropped call), and the replay meets its own earlier write. Every store recognises it the
//! same way: each write carries a unique token the item keeps ([`WRITE_TOKEN_ATTR`] and the
//! [`WRITE_TOKENS`] - 1 before it, shifted along on every write: [`WRITE_TOKEN_RING`]), its
//! condition refuses an item that already carries that token (so a replay never applies twice,
//! even an unconditional `Add`), and when the condition fails on an item that carries the token
//! the store answers "applied" with the item as stored: callers never read their own write as
//! someone else's.
//!
//! The token is stamped once per write, before it is sent (see [`stamp`]), so every resend of
//! the same request carries the same token. Each store turns the stamp's `Set` of
//! [`WRITE_TOKEN_ATTR`] into the shift of the whole ring (DynamoDB: `SET w1 = if_not_exists(w0,
//! "")`, … evaluated on the item as it was). What is left: when more than [`WRITE_TOKENS`] - 1
//! writes by others land on the item between the lost answer and the replay, the token has left
//! the ring and the replay reads as a failed condition.

use super::{Cond, Item, Op, Value};

/// The attribute in which every written item keeps the token of the last write applied to it.
pub const WRITE_TOKEN_ATTR: &str = "last_write";

/// How many of the last writes' tokens an item keeps.
pub const WRITE_TOKENS: usize = 4;

/// Where they are kept, the newest first: each write shifts them one along.
pub const WRITE_TOKEN_RING: [&str; WRITE_TOKENS] = [WRITE_TOKEN_ATTR, "last_write_1", "last_write_2", "last_write_3"];

/// A write ready to send: the caller's condition and operations with the write's token.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// The caller's condition, and "this write has not applied yet".
    pub cond: Cond,
    /// The caller's operations, and the token set.
    pub ops: Vec<Op>,
    /// The write's token; `None` for a pure check (no operations), which writes nothing.
    pub token: Option<String>,
}

/// The token `ops` already carry, if an outer layer stamped them.
pub fn token_of(ops: &[Op]) -> Option<&str> {
    ops.iter().find_map(|op| match op {
        Op::Set(p, Value::S(t)) if p == WRITE_TOKEN_ATTR => Some(t.as_str()),
        _ => None,
    })
}

/// The write `cond`/`ops` with a fresh token, or as it is when it already carries one (stamped
/// by an outer layer: the same request sent again) or writes nothing.
pub fn stamp(cond: &Cond, ops: &[Op]) -> Stamped {
    if ops.is_empty() {
        return Stamped {
            cond: cond.clone(),
            ops: vec![],
            token: None,
        };
    }
    if let Some(t) = token_of(ops) {
        return Stamped {
            cond: cond.clone(),
            ops: ops.to_vec(),
            token: Some(t.to_string()),
        };
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let not_yet = Cond::Not(Box::new(Cond::Or(
        WRITE_TOKEN_RING.iter().map(|a| Cond::eq(a, token.as_str())).collect(),
    )));
    let mut ops = ops.to_vec();
    ops.push(Op::set(WRITE_TOKEN_ATTR, token.as_str()));
    Stamped {
        cond: cond.clone().and(not_yet),
        ops,
        token: Some(token),
    }
}

/// Whether `item` carries `token`: the write with that token is one of the last
/// [`WRITE_TOKENS`] applied to it.
pub fn carries(item: Option<&Item>, token: &str) -> bool {
    item.is_some_and(|i| WRITE_TOKEN_RING.iter().any(|a| i.get(*a).and_then(Value::as_str) == Some(token)))
}

/// The operations that shift the ring along before a write's own token goes in front: each
/// slot takes the value the slot before it had in `item` (as stored before the write).
pub fn ring_shift(item: Option<&Item>) -> Vec<Op> {
    (1..WRITE_TOKENS)
        .rev()
        .map(|i| {
            let before = item.and_then(|it| it.get(WRITE_TOKEN_RING[i - 1])).cloned();
            Op::Set(WRITE_TOKEN_RING[i].to_string(), before.unwrap_or_else(|| Value::from("")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::expr::{apply, eval};
    use super::*;

    #[test]
    fn a_stamped_write_applies_once_and_knows_itself() {
        let w = stamp(&Cond::Always, &[Op::Add("n".into(), 1)]);
        let token = w.token.clone().unwrap_or_default();
        assert!(eval(&w.cond, None));
        let item = apply(None, "id", "k", &w.ops).unwrap_or_default();
        assert!(carries(Some(&item), &token));
        assert!(!eval(&w.cond, Some(&item)), "the replay is refused");
        let again = stamp(&w.cond, &w.ops);
        assert_eq!(again, w, "an already stamped write keeps its token");
        let other = stamp(&Cond::Always, &[Op::Add("n".into(), 1)]);
        assert!(eval(&other.cond, Some(&item)), "another write with the same operations applies");
        assert_eq!(stamp(&Cond::ItemExists, &[]).token, None, "a pure check writes no token");
    }
}
