//! One entry must not stop the network. The ACL cannot bound an XADD's size (Redis takes fields
//! of up to `proto-max-bulk-len`, 512 MB by default, and any number of them): the bridge learns
//! an entry's size inside Redis and never receives an oversized entry, dead-letters it as a small
//! record (id, size, reason; never its fields) and goes on with the honest entries around it.
//! What the bridge receives is counted by a proxy between it and Redis, not timed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis_bridge::{BridgeSettings, Pass, RedisBridge};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::{StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_runtime::backends;
use worldland_tests::private_redis::{PrivateRedis, ADMIN, AGENT};
use worldland_tests::stall_proxy::StallProxy;
use worldland_tests::TestEnv;

const MB: usize = 1024 * 1024;
const _: () = assert!(8 * MB > MAX_ENTRY_BYTES, "the smaller entry is oversized too");

async fn xadd(conn: &mut ConnectionManager, stream: &str, fields: &[(&str, &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(conn).await.unwrap()
}

/// A bridge whose two Redis connections go through `proxy` (reclaiming entries idle for
/// `reclaim_idle_ms`).
async fn bridge_behind(env: &TestEnv, proxy: &StallProxy, bus: Arc<MemoryBus>, reclaim_idle_ms: u64) -> RedisBridge {
    let direct = "127.0.0.1:6379";
    assert!(env.cfg.redis_url.contains(direct), "the tests' Redis: {}", env.cfg.redis_url);
    let mut cfg = env.cfg.clone();
    cfg.redis_url = env.cfg.redis_url.replace(direct, &format!("127.0.0.1:{}", proxy.port()));
    let settings = BridgeSettings {
        consumer: "b1".into(),
        reclaim_idle_ms,
        block_ms: 50,
        batch: 16,
        ..BridgeSettings::from_config(&cfg)
    };
    let conn = backends::redis(&cfg).await.unwrap();
    let reader = backends::redis_blocking(&cfg).await.unwrap();
    RedisBridge::new(conn, reader, bus, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_8_and_100_mb_never_reach_the_bridge_and_the_flow_goes_on() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let reg = streams.registration();
    let honest = |i: u32| format!("{{\"provider_id\":\"p{i}\"}}");
    let eight = vec![b'x'; 8 * MB];
    let hundred = vec![b'y'; 100 * MB];
    xadd(&mut conn, &reg, &[("data", honest(1).as_bytes())]).await;
    let big = xadd(&mut conn, &reg, &[("data", &eight)]).await;
    xadd(&mut conn, &reg, &[("data", honest(2).as_bytes())]).await;
    let huge = xadd(&mut conn, &reg, &[("data", &hundred), ("signature", b"0xab")]).await;
    xadd(&mut conn, &reg, &[("data", honest(3).as_bytes())]).await;
    drop((eight, hundred));

    let proxy = StallProxy::start("127.0.0.1:6379").await;
    let bus = Arc::new(MemoryBus::new(5));
    let q = QueueSpec::new("all", &["#"]);
    bus.declare(&q);
    let mut sub = bus.subscribe(&q).await.unwrap();
    let bridge = bridge_behind(&env, &proxy, bus.clone(), 60_000).await;
    bridge.ensure_groups().await.unwrap();
    let mut pass = Pass::default();
    for _ in 0..20 {
        if pass.forwarded + pass.dead_lettered >= 5 {
            break;
        }
        pass += bridge.poll_once().await.unwrap();
    }
    assert_eq!(
        pass,
        Pass {
            forwarded: 3,
            dead_lettered: 2,
            left_pending: 0
        }
    );
    for i in 1..=3 {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        let env: StreamEnvelope = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(env.data, honest(i), "the honest entries, in order");
        d.ack().await.unwrap();
    }
    // A reclaim pass finds nothing left to read again.
    assert_eq!(bridge.reclaim_once().await.unwrap(), Pass::default());
    let served = proxy.served_bytes();
    eprintln!("the bridge received {served} bytes from Redis for 3 honest and 108 MB of oversized entries");
    assert!(
        served < (MB as u64),
        "the bridge received {served} bytes from Redis: an oversized entry reached it"
    );

    // The dead letters are small records: which entry, its size and why; never its fields.
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(streams.dead_letter())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let records: Vec<(String, String, String)> = dead
        .ids
        .iter()
        .map(|e| {
            let bytes: usize = e.map.keys().map(|k| k.len() + e.get::<Vec<u8>>(k).unwrap().len()).sum();
            assert!(bytes < 2048, "a dead letter of {bytes} bytes: {:?}", e.map.keys());
            assert!(!e.map.contains_key("data"), "the fields stay out of the dead letter");
            (e.get("entry_id").unwrap(), e.get("reason").unwrap(), e.get("size").unwrap())
        })
        .collect();
    let size = |n: usize| n.to_string();
    assert_eq!(
        records,
        vec![
            (big, "entry_too_large".to_string(), size(8 * MB + 4)),
            (huge, "entry_too_large".to_string(), size(100 * MB + 4 + 9 + 4)),
        ]
    );
    let _: () = redis::cmd("DEL").arg(&reg).query_async(&mut conn).await.unwrap();
}

/// `infra/redis/redis.conf` loads, and its limits are in force: one field over 1 MB is refused
/// at the protocol, memory is bounded and never evicted (eviction would drop streams and groups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_redis_limits_refuse_a_field_over_1_mb_and_never_evict() {
    let server = PrivateRedis::with_shipped_acl();
    let connect = |user: &str| {
        let url = server.url(user);
        async move {
            let client = redis::Client::open(url).unwrap();
            tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let mut admin = connect(ADMIN).await;
    for (name, want) in [
        ("proto-max-bulk-len", "1048576"),
        ("client-query-buffer-limit", "1048576"),
        ("maxmemory", "1073741824"),
        ("maxmemory-policy", "noeviction"),
    ] {
        let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut admin).await.unwrap();
        assert_eq!(got.get(1).map(String::as_str), Some(want), "{name}");
    }
    let reg = server.streams().registration();
    let xadd = |size: usize| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&reg).arg("*").arg("data").arg(vec![b'x'; size]);
        cmd
    };
    let mut agent = connect(AGENT).await;
    let refused = tokio::time::timeout(Duration::from_secs(5), xadd(MB + 1).query_async::<String>(&mut agent)).await;
    assert!(matches!(refused, Ok(Err(_))), "a field over 1 MB: {refused:?}");
    let mut agent = connect(AGENT).await;
    let taken = tokio::time::timeout(Duration::from_secs(5), xadd(60 * 1024).query_async::<String>(&mut agent)).await;
    assert!(matches!(taken, Ok(Ok(_))), "an entry within the bridge's limit: {taken:?}");
}

/// The reclaim pass reads through the same script: an oversized entry a crashed bridge left
/// pending is taken over by id and size, never read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_entry_left_pending_by_a_crashed_bridge_is_reclaimed_by_id_and_size() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    let bus = Arc::new(MemoryBus::new(5));
    bus.declare(&QueueSpec::new("all", &["#"]));
    let proxy = StallProxy::start("127.0.0.1:6379").await;
    let rescuer = bridge_behind(&env, &proxy, bus.clone(), 0).await;
    rescuer.ensure_groups().await.unwrap();
    xadd(&mut conn, &reg, &[("data", b"{\"provider_id\":\"p1\"}")]).await;
    let big = xadd(&mut conn, &reg, &[("data", &vec![b'x'; 8 * MB])]).await;
    // A bridge (an older one, reading whole entries) took both, then died before handling them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&env.cfg.bridge_group)
        .arg("crashed")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&reg)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        rescuer.reclaim_once().await.unwrap(),
        Pass {
            forwarded: 1,
            dead_lettered: 1,
            left_pending: 0
        }
    );
    let served = proxy.served_bytes();
    assert!(served < (MB as u64), "the rescuer received {served} bytes from Redis");
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(env.cfg.streams().dead_letter())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let records: Vec<(String, String)> = dead
        .ids
        .iter()
        .map(|e| (e.get("entry_id").unwrap(), e.get("size").unwrap()))
        .collect();
    assert_eq!(records, vec![(big, (8 * MB + 4).to_string())]);
    let _: () = redis::cmd("DEL").arg(&reg).query_async(&mut conn).await.unwrap();
}
