//! DynamoDB's side of the store's language: values as attribute values, and conditions and
//! updates as expressions with their name and value placeholders.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use worldland_core::state::replay::{WRITE_TOKEN_ATTR, WRITE_TOKEN_RING};
use worldland_core::state::{Cond, Item, Op, StoreError, StoreResult, Value, KEY_ATTR};

pub(super) fn backend(e: impl Into<worldland_core::BoxError>) -> StoreError {
    StoreError::Backend(e.into())
}

pub(super) fn to_av(v: &Value) -> AttributeValue {
    match v {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.to_string()),
        Value::B(b) => AttributeValue::Bool(*b),
        Value::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_av(v))).collect()),
    }
}

fn from_av(key: &str, av: &AttributeValue) -> StoreResult<Value> {
    let corrupt = |why: &str| StoreError::Corrupt {
        key: key.to_string(),
        why: why.to_string(),
    };
    Ok(match av {
        AttributeValue::S(s) => Value::S(s.clone()),
        AttributeValue::N(n) => Value::N(n.parse().map_err(|_| corrupt("a number is not an integer"))?),
        AttributeValue::Bool(b) => Value::B(*b),
        AttributeValue::M(m) => Value::M(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), from_av(key, v)?)))
                .collect::<StoreResult<_>>()?,
        ),
        _ => return Err(corrupt("an attribute has a type this project never writes")),
    })
}

pub(super) fn from_item(raw: &HashMap<String, AttributeValue>) -> StoreResult<Item> {
    let key = raw.get(KEY_ATTR).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    raw.iter().map(|(k, v)| Ok((k.clone(), from_av(&key, v)?))).collect()
}

/// Builds expression strings with placeholders for every name and value.
#[derive(Default)]
pub(super) struct ExprBuilder {
    pub(super) names: HashMap<String, String>,
    pub(super) by_name: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl ExprBuilder {
    pub(super) fn path(&mut self, path: &str) -> String {
        path.split('.')
            .map(|part| {
                if let Some(p) = self.by_name.get(part) {
                    return p.clone();
                }
                let p = format!("#n{}", self.by_name.len());
                self.by_name.insert(part.to_string(), p.clone());
                self.names.insert(p.clone(), part.to_string());
                p
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    pub(super) fn value(&mut self, v: AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v);
        p
    }

    pub(super) fn cond(&mut self, c: &Cond) -> String {
        match c {
            Cond::Always => "attribute_exists(#always) OR attribute_not_exists(#always)".replace("#always", &self.path(KEY_ATTR)),
            Cond::ItemExists => format!("attribute_exists({})", self.path(KEY_ATTR)),
            Cond::ItemNotExists => format!("attribute_not_exists({})", self.path(KEY_ATTR)),
            Cond::AttrExists(p) => format!("attribute_exists({})", self.path(p)),
            Cond::AttrNotExists(p) => format!("attribute_not_exists({})", self.path(p)),
            Cond::Eq(p, v) => {
                let (p, v) = (self.path(p), self.value(to_av(v)));
                format!("{p} = {v}")
            }
            Cond::Lt(p, n) | Cond::Le(p, n) | Cond::Ge(p, n) | Cond::Gt(p, n) => {
                let op = match c {
                    Cond::Lt(..) => "<",
                    Cond::Le(..) => "<=",
                    Cond::Ge(..) => ">=",
                    _ => ">",
                };
                let (p, v) = (self.path(p), self.value(AttributeValue::N(n.to_string())));
                format!("{p} {op} {v}")
            }
            Cond::In(p, vs) if vs.is_empty() => {
                // Nothing is in an empty set.
                let p = self.path(p);
                format!("(attribute_exists({p}) AND attribute_not_exists({p}))")
            }
            Cond::In(p, vs) => {
                let p = self.path(p);
                let vs: Vec<String> = vs.iter().map(|v| self.value(to_av(v))).collect();
                format!("{p} IN ({})", vs.join(", "))
            }
            Cond::And(cs) if cs.is_empty() => self.cond(&Cond::Always),
            Cond::Or(cs) if cs.is_empty() => format!("NOT ({})", self.cond(&Cond::Always)),
            Cond::And(cs) => cs.iter().map(|c| format!("({})", self.cond(c))).collect::<Vec<_>>().join(" AND "),
            Cond::Or(cs) => cs.iter().map(|c| format!("({})", self.cond(c))).collect::<Vec<_>>().join(" OR "),
            Cond::Not(c) => format!("NOT ({})", self.cond(c)),
        }
    }

    pub(super) fn update(&mut self, ops: &[Op]) -> String {
        let mut sets = vec![];
        let mut removes = vec![];
        for op in ops {
            match op {
                Op::Set(p, v) => {
                    if p == WRITE_TOKEN_ATTR {
                        // The write's token: the ring shifts along first (each slot from the one
                        // before it, as the item was).
                        let empty = self.value(AttributeValue::S(String::new()));
                        for i in 1..WRITE_TOKEN_RING.len() {
                            let (to, from) = (self.path(WRITE_TOKEN_RING[i]), self.path(WRITE_TOKEN_RING[i - 1]));
                            sets.push(format!("{to} = if_not_exists({from}, {empty})"));
                        }
                    }
                    let (p, v) = (self.path(p), self.value(to_av(v)));
                    sets.push(format!("{p} = {v}"));
                }
                Op::Add(p, n) => {
                    let p = self.path(p);
                    let zero = self.value(AttributeValue::N("0".into()));
                    let n = self.value(AttributeValue::N(n.to_string()));
                    sets.push(format!("{p} = if_not_exists({p}, {zero}) + {n}"));
                }
                Op::Remove(p) => removes.push(self.path(p)),
            }
        }
        let mut out = String::new();
        if !sets.is_empty() {
            out.push_str(&format!("SET {}", sets.join(", ")));
        }
        if !removes.is_empty() {
            out.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        out
    }
}
