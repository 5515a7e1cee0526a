//! One contract every store must pass: the in-memory store runs it in unit tests, DynamoDB
//! (dynalite) in `tests/`. Keys are random so a shared server is fine.
// A test suite: a failed unwrap is a failed contract test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use worldland_core::state::{
    Cond, ItemStore, Op, PlacementCursor, PlacementQuery, Table, Value, PLACEMENT_MODEL_ATTR, PLACEMENT_SORT_ATTR,
};

fn key(tag: &str) -> String {
    format!("contract-{tag}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn run_all(store: &dyn ItemStore) {
    create_only_once(store).await;
    conditions_guard_updates(store).await;
    numbers_and_nested_maps(store).await;
    state_index_returns_only_matching_items(store).await;
    placement_index_pages_cheapest_first(store).await;
    a_replayed_write_knows_itself(store).await;
}

/// A write that applied and is sent again (its answer lost, the SDK's retry: the same stamped
/// request twice) answers "applied", with the item as stored, and applies once; the same
/// operations sent as another write (another token) still meet the condition as it stands.
pub async fn a_replayed_write_knows_itself(store: &dyn ItemStore) {
    use worldland_core::state::replay::{carries, stamp};
    let k = key("replay");
    let create = stamp(&Cond::ItemNotExists, &[Op::set("state", "pending"), Op::Add("n".into(), 1)]);
    for attempt in ["first", "replay"] {
        let item = store.update(Table::Jobs, &k, &create.cond, &create.ops).await.unwrap();
        let item = item.unwrap_or_else(|| panic!("the {attempt} attempt answers applied"));
        assert_eq!(item.get("n"), Some(&Value::from(1i64)), "{attempt}: applied once");
        assert!(carries(Some(&item), create.token.as_deref().unwrap()));
    }
    assert!(
        store
            .update(Table::Jobs, &k, &Cond::ItemNotExists, &create.ops[..2])
            .await
            .unwrap()
            .is_none(),
        "another create is still refused"
    );
    // A guarded move, replayed: applied, once.
    let take = stamp(&Cond::eq("state", "pending"), &[Op::set("state", "taken"), Op::Add("n".into(), 1)]);
    for _ in 0..2 {
        let item = store
            .update(Table::Jobs, &k, &take.cond, &take.ops)
            .await
            .unwrap()
            .expect("applied");
        assert_eq!(item.get("n"), Some(&Value::from(2i64)));
    }
    assert!(!store.update_if(Table::Jobs, &k, &take.cond, &take.ops[..2]).await.unwrap());
    // An unconditional add, replayed, adds once.
    let add = stamp(&Cond::Always, &[Op::Add("n".into(), 10)]);
    for _ in 0..2 {
        assert!(store.update_if(Table::Jobs, &k, &add.cond, &add.ops).await.unwrap());
    }
    let stored = store.get(Table::Jobs, &k).await.unwrap().unwrap();
    assert_eq!(stored.get("n"), Some(&Value::from(12i64)));
    // A hot item: others' writes land between the lost answer and the replay. The item keeps the
    // last WRITE_TOKENS tokens: the replay still knows itself behind three others, not four.
    let bump = stamp(&Cond::Always, &[Op::Add("n".into(), 100)]);
    store.update(Table::Jobs, &k, &bump.cond, &bump.ops).await.unwrap().unwrap();
    for i in 0..3i64 {
        store.update(Table::Jobs, &k, &Cond::Always, &[Op::set("other", i)]).await.unwrap();
    }
    let item = store.update(Table::Jobs, &k, &bump.cond, &bump.ops).await.unwrap();
    let item = item.expect("the replay behind three other writes answers applied");
    assert_eq!(item.get("n"), Some(&Value::from(112i64)), "and applied once");
    // Further back the token has left the ring: a guarded replay reads as a failed condition
    // (the window left open).
    assert!(store.update(Table::Jobs, &k, &take.cond, &take.ops).await.unwrap().is_none());
}

/// Five items of `model` priced 100-500 (the one at 300 offline), and one of another model at 1;
/// the keys of the five, in the order written.
async fn seed_placement_partition(store: &dyn ItemStore, model: &str) -> Vec<String> {
    let mut keys = vec![];
    for (i, (price, state)) in [
        (500i64, "available"),
        (100, "available"),
        (300, "offline"),
        (200, "available"),
        (400, "available"),
    ]
    .into_iter()
    .enumerate()
    {
        let k = key(&format!("place{i}"));
        let ops = [
            Op::set("state", state),
            Op::set(PLACEMENT_MODEL_ATTR, model),
            Op::set(PLACEMENT_SORT_ATTR, price),
            Op::set("node_name", "n"),
            Op::set("spec", "not projected"),
        ];
        store.update(Table::Providers, &k, &Cond::Always, &ops).await.unwrap();
        keys.push(k);
    }
    // Another model's item is never read.
    let other = key("place-other");
    let ops = [
        Op::set("state", "available"),
        Op::set(PLACEMENT_MODEL_ATTR, key("model")),
        Op::set(PLACEMENT_SORT_ATTR, 1i64),
    ];
    store.update(Table::Providers, &other, &Cond::Always, &ops).await.unwrap();
    keys
}

/// The placement index: one model's items, cheapest first, under a price cap, only the wanted
/// state returned (the others counted as read), paged by cursor; an item moves when its model or
/// price changes and leaves when it loses its model.
pub async fn placement_index_pages_cheapest_first(store: &dyn ItemStore) {
    let model = key("model");
    let keys = seed_placement_partition(store, &model).await;

    let page = |after: Option<PlacementCursor>, limit: usize, cap: Option<i64>| {
        let model = model.clone();
        async move {
            let q = PlacementQuery {
                model: &model,
                state: "available",
                max_price_micros: cap,
                after: after.as_ref(),
                limit,
                attrs: &["node_name", "state", PLACEMENT_SORT_ATTR],
            };
            store.placement_page(&q).await.unwrap()
        }
    };
    let prices = |p: &worldland_core::state::PlacementPage| -> Vec<i64> {
        p.items
            .iter()
            .map(|i| i.get(PLACEMENT_SORT_ATTR).and_then(Value::as_i64).unwrap())
            .collect()
    };
    let first = page(None, 3, None).await;
    assert_eq!(prices(&first), vec![100, 200], "cheapest first; the offline one read, not returned");
    assert_eq!(first.read, 3);
    assert!(first.items.iter().all(|i| i.get("spec").is_none() && i.get("node_name").is_some()));
    let next = first.next.clone().expect("more to read");
    assert_eq!(next.price_micros, 300);
    let rest = page(Some(next), 3, None).await;
    assert_eq!(prices(&rest), vec![400, 500]);
    assert_eq!(rest.read, 2);
    assert!(rest.next.is_none(), "the partition is read to its end");
    let capped = page(None, 10, Some(250)).await;
    assert_eq!(prices(&capped), vec![100, 200]);
    assert_eq!(capped.read, 2, "nothing above the cap is read");
    assert!(capped.next.is_none());

    // A price change moves the item; losing the model takes it out.
    store
        .update(Table::Providers, &keys[0], &Cond::Always, &[Op::set(PLACEMENT_SORT_ATTR, 50i64)])
        .await
        .unwrap();
    store
        .update(
            Table::Providers,
            &keys[1],
            &Cond::Always,
            &[Op::Remove(PLACEMENT_MODEL_ATTR.into())],
        )
        .await
        .unwrap();
    assert_eq!(prices(&page(None, 10, None).await), vec![50, 200, 400]);
}

pub async fn create_only_once(store: &dyn ItemStore) {
    let k = key("create");
    assert!(store.get(Table::Providers, &k).await.unwrap().is_none());
    let ops = [Op::set("state", "pending"), Op::set("hb_at", 1i64)];
    let created = store
        .update(Table::Providers, &k, &Cond::ItemNotExists, &ops)
        .await
        .unwrap()
        .expect("created");
    assert_eq!(created.get("id"), Some(&Value::from(k.as_str())));
    assert!(store
        .update(Table::Providers, &k, &Cond::ItemNotExists, &ops)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.get(Table::Providers, &k).await.unwrap(), Some(created));
}

pub async fn conditions_guard_updates(store: &dyn ItemStore) {
    let k = key("cond");
    store
        .update(
            Table::Providers,
            &k,
            &Cond::Always,
            &[Op::set("state", "pending"), Op::set("w", "a")],
        )
        .await
        .unwrap();
    let wrong = Cond::eq("state", "approved");
    assert!(store
        .update(Table::Providers, &k, &wrong, &[Op::set("w", "b")])
        .await
        .unwrap()
        .is_none());
    let not_exists = Cond::AttrNotExists("token".into());
    let out = store
        .update(
            Table::Providers,
            &k,
            &not_exists.clone().and(Cond::state_in(&["pending", "expired"])),
            &[Op::set("token", "t1"), Op::Remove("w".into())],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.get("token"), Some(&Value::from("t1")));
    assert!(!out.contains_key("w"));
    assert!(store
        .update(Table::Providers, &k, &not_exists, &[Op::set("token", "t2")])
        .await
        .unwrap()
        .is_none());
    let neg = Cond::Not(Box::new(Cond::eq("token", "t1")));
    assert!(store
        .update(Table::Providers, &k, &neg, &[Op::set("x", 1i64)])
        .await
        .unwrap()
        .is_none());
    let either = Cond::Or(vec![Cond::ItemNotExists, Cond::eq("token", "t1")]);
    assert!(store
        .update(Table::Providers, &k, &either, &[Op::set("x", 1i64)])
        .await
        .unwrap()
        .is_some());
}

pub async fn numbers_and_nested_maps(store: &dyn ItemStore) {
    let k = key("num");
    store
        .update(
            Table::Providers,
            &k,
            &Cond::Always,
            &[
                Op::set("free", 2i64),
                Op::set("alloc", Value::M(Default::default())),
                Op::set("ok", true),
            ],
        )
        .await
        .unwrap();
    let take = |job: &'static str| {
        (
            Cond::Ge("free".into(), 1).and(Cond::AttrNotExists(format!("alloc.{job}"))),
            vec![
                Op::Add("free".into(), -1),
                Op::set(&format!("alloc.{job}"), 1i64),
                Op::Add("count".into(), 1),
            ],
        )
    };
    for (job, ok) in [("j1", true), ("j1", false), ("j2", true), ("j3", false)] {
        let (c, ops) = take(job);
        assert_eq!(store.update(Table::Providers, &k, &c, &ops).await.unwrap().is_some(), ok, "{job}");
    }
    let item = store.get(Table::Providers, &k).await.unwrap().unwrap();
    assert_eq!(item.get("free"), Some(&Value::N(0)));
    assert_eq!(item.get("count"), Some(&Value::N(2)));
    assert_eq!(item.get("ok"), Some(&Value::B(true)));
    assert_eq!(item.get("alloc").and_then(Value::as_map).map(|m| m.len()), Some(2));
    assert!(store
        .update(Table::Providers, &k, &Cond::Lt("free".into(), 0), &[])
        .await
        .unwrap()
        .is_none());
    // Overlapping paths in one update are refused, whatever the condition says.
    assert!(store
        .update(Table::Providers, &k, &Cond::Always, &[Op::set("ok", false), Op::set("ok", true)])
        .await
        .is_err());
    assert!(store
        .update(
            Table::Providers,
            &k,
            &Cond::Always,
            &[Op::Remove("alloc".into()), Op::set("alloc.j9", 1i64)]
        )
        .await
        .is_err());
    assert_eq!(
        store.get(Table::Providers, &k).await.unwrap().unwrap().get("ok"),
        Some(&Value::B(true))
    );
    assert!(store
        .update(Table::Providers, &k, &Cond::Le("free".into(), 0), &[])
        .await
        .unwrap()
        .is_some());
}

pub async fn state_index_returns_only_matching_items(store: &dyn ItemStore) {
    let state = format!("contract-state-{}", uuid::Uuid::new_v4().simple());
    let other = format!("{state}-other");
    for (i, st) in [(1i64, &state), (5, &state), (9, &state), (2, &other)] {
        store
            .update(
                Table::Providers,
                &key("idx"),
                &Cond::ItemNotExists,
                &[Op::set("state", st.as_str()), Op::set("hb_at", i)],
            )
            .await
            .unwrap();
    }
    let all = store.query_by_state(Table::Providers, &state, None).await.unwrap();
    assert_eq!(all.len(), 3);
    let stale = store.query_by_state(Table::Providers, &state, Some(6)).await.unwrap();
    let mut hbs: Vec<i64> = stale.iter().filter_map(|i| i.get("hb_at").and_then(Value::as_i64)).collect();
    hbs.sort();
    assert_eq!(hbs, vec![1, 5]);
    // A projected query brings back only the named attributes and the key.
    let projected = store
        .query_by_state_projected(Table::Providers, &state, Some(6), &["hb_at"])
        .await
        .unwrap();
    assert_eq!(projected.len(), 2);
    for item in projected {
        let mut keys: Vec<&str> = item.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, vec!["hb_at", "id"]);
    }
    // Counts and the newest sort key come from the index alone.
    assert_eq!(store.count_by_state(Table::Providers, &state, None).await.unwrap(), 3);
    assert_eq!(store.count_by_state(Table::Providers, &state, Some(6)).await.unwrap(), 2);
    assert_eq!(store.count_by_state(Table::Providers, &state, Some(1)).await.unwrap(), 0);
    assert_eq!(store.newest_in_state(Table::Providers, &state).await.unwrap(), Some(9));
    assert_eq!(store.newest_in_state(Table::Providers, &other).await.unwrap(), Some(2));
    let nobody = format!("{state}-nobody");
    assert_eq!(store.count_by_state(Table::Providers, &nobody, None).await.unwrap(), 0);
    assert_eq!(store.newest_in_state(Table::Providers, &nobody).await.unwrap(), None);
}

/// `tasks` writers race to take one unit each from a stock of `stock`: exactly `stock` win.
pub async fn racing_conditional_decrements(store: Arc<dyn ItemStore>, tasks: usize, per_task: usize, stock: i64) {
    let k = key("race");
    store
        .update(Table::Providers, &k, &Cond::Always, &[Op::set("stock", stock)])
        .await
        .unwrap();
    let mut handles = vec![];
    for _ in 0..tasks {
        let (store, k) = (store.clone(), k.clone());
        handles.push(tokio::spawn(async move {
            let mut won = 0;
            for _ in 0..per_task {
                if store
                    .update(Table::Providers, &k, &Cond::Ge("stock".into(), 1), &[Op::Add("stock".into(), -1)])
                    .await
                    .unwrap()
                    .is_some()
                {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, stock);
    let item = store.get(Table::Providers, &k).await.unwrap().unwrap();
    assert_eq!(item.get("stock"), Some(&Value::N(0)));
}
