//! Response streams an agent makes are bounded. The `agent` ACL keeps `XGROUP CREATE` on
//! `provider:response:*` for the agents in the field, and with `MKSTREAM` any agent can create
//! response streams under any name, which nothing expired: keys piled up until `maxmemory`
//! (`noeviction`) stopped every write. The bridge's housekeeping now gives each response stream
//! without an expiry a short one (10 minutes), and leaves the ones the broker wrote alone — the
//! walk inside Redis, so a key name of any bytes or length cannot stop it.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis_bridge::response_streams::AGENT_STREAM_TTL_S;
use redis_bridge::{BridgeLimits, BridgeSettings, RedisBridge};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::RedisReplies;
use worldland_core::answers::BrokerKey;
use worldland_core::messages::ProviderResponse;
use worldland_core::replies::ProviderReplies;
use worldland_core::streams::AGENT_RESPONSE_GROUP;
use worldland_tests::private_redis::{PrivateRedis, ADMIN, AGENT, BROKER};

/// Streams the attacking agent makes: more than one `SCAN` page, fewer than one pass walks.
const MADE: usize = 1_200;
const RESPONSE_TTL_S: i64 = 3_600;
/// The broker's own answer stream's expiry, shorter than the walk's: it must be kept.
const ANSWER_TTL_S: i64 = 120;
const _: () = assert!(ANSWER_TTL_S < AGENT_STREAM_TTL_S && AGENT_STREAM_TTL_S < RESPONSE_TTL_S);

async fn ttl(conn: &mut MultiplexedConnection, key: impl redis::ToRedisArgs) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn streams_an_agent_makes_get_a_short_ttl_and_the_brokers_keep_theirs() {
    let server = PrivateRedis::with_shipped_acl();
    let streams = server.streams();
    let mut agent = redis::Client::open(server.url(AGENT))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // The attack: the agent's ACL lets it create streams under any provider's name.
    let made: Vec<String> = (0..MADE).map(|i| streams.response(&format!("junk-{i:05}"))).collect();
    // Key names the bridge could not read as text, or would choke on: not UTF-8, and long.
    let mut odd: Vec<Vec<u8>> = vec![[streams.response("").as_bytes(), &b"\xff\xfe"[..]].concat()];
    odd.push(streams.response(&"x".repeat(100_000)).into_bytes());
    let mut pipe = redis::pipe();
    for key in made.iter().map(|k| k.as_bytes()).chain(odd.iter().map(Vec::as_slice)) {
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(AGENT_RESPONSE_GROUP)
            .arg("$")
            .arg("MKSTREAM");
    }
    pipe.query_async::<()>(&mut agent)
        .await
        .expect("the agent may create its group with MKSTREAM");
    // Only the test's administrator reads expiries.
    let mut admin = redis::Client::open(server.url(ADMIN))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in [&made[0], &made[MADE - 1]] {
        assert_eq!(ttl(&mut admin, key).await, -1, "{key}: made by the agent, it would never expire");
    }

    // An honest answer, written by the broker with its own expiry.
    let broker = worldland_redis::connect(&server.url(BROKER), false).await.unwrap();
    let replies = RedisReplies::new(broker.clone(), streams.clone(), ANSWER_TTL_S, BrokerKey::generate());
    replies
        .reply("honest-0001", &ProviderResponse::rejected("x".to_string()))
        .await
        .unwrap();
    let answered = streams.response("honest-0001");

    let settings = BridgeSettings {
        streams: streams.clone(),
        group: "bridge".into(),
        consumer: "bridge-1".into(),
        reclaim_idle_ms: 0,
        block_ms: 100,
        batch: 16,
    };
    let reader = worldland_redis::connect(&server.url(BROKER), true).await.unwrap();
    let bridge = RedisBridge::new(broker, reader, Arc::new(MemoryBus::new(5)), settings).with_limits(BridgeLimits {
        response_ttl_s: RESPONSE_TTL_S,
        ..BridgeLimits::default()
    });
    let pass = bridge.bound_response_streams_once().await.expect("the broker may SCAN and EXPIRE");
    assert!(pass.finished, "{pass:?}: one pass walks a few thousand keys");
    assert_eq!((pass.seen, pass.bounded), (MADE + 3, MADE + 2), "{pass:?}");
    for key in made.iter().map(|k| k.as_bytes()).chain(odd.iter().map(Vec::as_slice)) {
        let left = ttl(&mut admin, key).await;
        assert!(
            (1..=AGENT_STREAM_TTL_S).contains(&left),
            "{}: TTL {left}",
            String::from_utf8_lossy(&key[..40])
        );
    }
    let kept = ttl(&mut admin, &answered).await;
    assert!(
        (1..=ANSWER_TTL_S).contains(&kept),
        "the broker's answer keeps its own expiry: {kept}"
    );

    // The next walk finds nothing left to bound.
    let again = bridge.bound_response_streams_once().await.unwrap();
    assert_eq!((again.seen, again.bounded), (MADE + 3, 0), "{again:?}");
}
