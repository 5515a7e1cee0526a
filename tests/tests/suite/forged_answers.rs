//! Attacks on a new agent through its response stream, on real Redis. Anyone who can reach Redis
//! can XADD to `provider:response:<id>` (and read other providers' streams), so the SDK believes
//! only entries signed by the pinned broker key for its own stream, recently; it never runs a
//! command string from the network, but builds `kubeadm join` itself from validated fields; and
//! it refuses a join in the clear once it has asked for a sealed one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use redis::aio::ConnectionManager;
use serde_json::json;
use worldland_adapters::replies::RedisReplies;
use worldland_core::answers::{AnswerError, BrokerKey, SIGNATURE_FIELD};
use worldland_core::messages::{ProviderResponse, SealedJoin};
use worldland_core::replies::ProviderReplies;
use worldland_core::sealed::seal_join;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::client::{join_from_response, publish_registration, wait_for_response};
use worldland_provider_sdk::join::{run_join_with, JoinPlan};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_provider_sdk::{verify, Error};
use worldland_tests::TestEnv;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "abcdef.0123456789abcdef";

fn ca_hash() -> String {
    format!("sha256:{}", "3f".repeat(32))
}

fn now_ts() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wl-{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One provider that has published its registration, the broker (its key and its signing
/// writer), and an attacker's Redis connection.
struct Scene {
    env: TestEnv,
    streams: StreamNames,
    provider: SimulatedProvider,
    broker: BrokerKey,
    replies: RedisReplies,
    attacker: ConnectionManager,
    registration_entry: String,
}

impl Scene {
    async fn new(n: usize) -> Self {
        let env = TestEnv::new(&[]);
        let streams = env.cfg.streams();
        let provider = SimulatedProvider::new(n, Utc::now());
        let broker = BrokerKey::generate();
        let mut conn = env.redis().await;
        let replies = RedisReplies::new(conn.clone(), streams.clone(), 600, broker.clone());
        let registration_entry = publish_registration(&mut conn, &streams, &provider.registration, &provider.key)
            .await
            .unwrap();
        Self {
            attacker: conn,
            env,
            streams,
            provider,
            broker,
            replies,
            registration_entry,
        }
    }

    fn stream(&self) -> String {
        self.streams.response(&self.provider.provider_id)
    }

    /// What the agent does: wait for the answer its pinned key signed.
    async fn sdk_wait(&self, timeout: Duration) -> worldland_provider_sdk::Result<ProviderResponse> {
        let mut reader = self.env.redis_blocking().await;
        wait_for_response(
            &mut reader,
            &self.streams,
            &self.provider.provider_id,
            &self.registration_entry,
            &self.broker.public(),
            timeout,
        )
        .await
    }

    /// The broker's real approval, sealed to the agent's key, as the join-token issuer makes it.
    fn real_approval(&self) -> ProviderResponse {
        let join = SealedJoin {
            join_token: TOKEN.into(),
            join_command: format!(
                "kubeadm join 10.0.0.1:6443 --token {TOKEN} --discovery-token-ca-cert-hash {}",
                ca_hash()
            ),
        };
        approval(&join, self.provider.registration.enc_pubkey.as_deref().unwrap())
    }

    /// XADDs raw fields, as any Redis client can.
    async fn xadd(&self, stream: &str, fields: &[(&str, &str)]) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query_async(&mut self.attacker.clone()).await.unwrap();
    }

    /// Every entry of `stream`, as the SDK parses them.
    async fn read_all(&self, stream: &str) -> Vec<verify::Entry> {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("STREAMS")
            .arg(stream)
            .arg("0")
            .query_async(&mut self.attacker.clone())
            .await
            .unwrap();
        verify::entries(&reply)
    }
}

fn approval(join: &SealedJoin, enc_pubkey: &str) -> ProviderResponse {
    ProviderResponse {
        success: true,
        status: "approved".into(),
        message: "approved".into(),
        master_ip: Some("10.0.0.1".into()),
        master_port: Some(6443),
        ca_hash: Some(ca_hash()),
        node_name: Some("gpu-node-00042".into()),
        sealed_join: Some(seal_join(join, enc_pubkey).unwrap()),
        ..Default::default()
    }
}

/// A stand-in for kubeadm that records its arguments, one a line, in `out`.
fn recorder(dir: &Path, out: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("kubeadm");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", out.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Runs the plan with the recorder in kubeadm's place (retrying the rare "text file busy" of a
/// script written a moment ago); returns the arguments it was given.
async fn run_recorded(plan: &JoinPlan) -> Vec<String> {
    let dir = scratch("kubeadm");
    let out = dir.join("argv");
    let program = recorder(&dir, &out);
    let mut tries = 0;
    loop {
        match run_join_with(&program, plan, false).await {
            Ok(()) => break,
            Err(Error::Join(e)) if e.contains("busy") && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("running the recorder: {e}"),
        }
    }
    let argv = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    std::fs::remove_dir_all(dir).unwrap();
    argv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_approval_written_before_the_brokers_answer_runs_nothing_and_the_real_answer_is_taken() {
    let s = Scene::new(40).await;
    let marker = scratch("rce").join("pwned");
    let forged = json!({
        "success": true, "status": "approved", "message": "approved",
        "join_token": TOKEN, "join_command": format!("touch {}", marker.display()),
        "master_ip": "10.0.0.1", "master_port": 6443, "ca_hash": ca_hash(), "node_name": "gpu-node-00042",
    })
    .to_string();
    // The attacker is first on the stream: unsigned, with a made-up signature, and signed by a
    // key of its own.
    s.xadd(&s.stream(), &[("data", &forged), ("timestamp", &now_ts())]).await;
    let junk_sig = BrokerKey::generate().sign("x", "y", b"z");
    s.xadd(
        &s.stream(),
        &[("data", &forged), ("timestamp", &now_ts()), (SIGNATURE_FIELD, &junk_sig)],
    )
    .await;
    let ts = now_ts();
    let own = BrokerKey::generate().sign(&s.stream(), &ts, forged.as_bytes());
    s.xadd(&s.stream(), &[("data", &forged), ("timestamp", &ts), (SIGNATURE_FIELD, &own)])
        .await;
    // Then the broker answers.
    let real = s.real_approval();
    s.replies.reply(&s.provider.provider_id, &real).await.unwrap();

    let answer = s.sdk_wait(WAIT).await.unwrap();
    assert_eq!(answer, real, "the broker's answer is taken, not the forged one before it");
    let join = join_from_response(&answer, &s.provider.enc_secret).unwrap();
    let plan = JoinPlan::from_answer(&answer, &join).unwrap();
    let ran = run_recorded(&plan).await;
    assert_eq!(
        ran,
        [
            "join",
            "10.0.0.1:6443",
            "--token",
            TOKEN,
            "--discovery-token-ca-cert-hash",
            &ca_hash(),
            "--node-name",
            "gpu-node-00042"
        ]
    );
    assert!(!marker.exists(), "the forged command ran");
    std::fs::remove_dir_all(marker.parent().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_signed_for_another_providers_stream_is_rejected() {
    let s = Scene::new(41).await;
    let other = SimulatedProvider::new(141, Utc::now());
    // The broker refuses the other provider, genuinely signed for the other provider's stream.
    s.replies
        .reply(&other.provider_id, &ProviderResponse::rejected("wallet mismatch"))
        .await
        .unwrap();
    // Response streams are readable: the attacker copies that entry, field for field, onto ours.
    let theirs = s.read_all(&s.streams.response(&other.provider_id)).await.remove(0);
    let (data, ts, sig) = (
        String::from_utf8(theirs.data.clone()).unwrap(),
        theirs.timestamp.clone().unwrap(),
        theirs.broker_sig.clone().unwrap(),
    );
    assert_eq!(
        verify::check(&theirs, &s.streams.response(&other.provider_id), &s.broker.public(), Utc::now()),
        Ok(()),
        "genuine on its own stream"
    );
    s.xadd(&s.stream(), &[("data", &data), ("timestamp", &ts), (SIGNATURE_FIELD, &sig)])
        .await;
    let copied = s.read_all(&s.stream()).await.remove(0);
    assert_eq!(
        verify::check(&copied, &s.stream(), &s.broker.public(), Utc::now()),
        Err(AnswerError::Forged),
        "useless on another stream"
    );
    // The copied refusal hides nothing: the agent still takes its own approval.
    let real = s.real_approval();
    s.replies.reply(&s.provider.provider_id, &real).await.unwrap();
    let answer = s.sdk_wait(WAIT).await.unwrap();
    assert!(answer.success, "{answer:?}");
    assert_eq!(answer, real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_stale_answers_are_skipped() {
    let s = Scene::new(43).await;
    let stream = s.stream();
    let refusal = serde_json::to_string(&ProviderResponse::rejected("go away")).unwrap();
    // Unsigned, as an old broker or anyone else writes it.
    s.xadd(&stream, &[("data", &refusal), ("timestamp", &now_ts())]).await;
    // A genuine broker signature, but ten minutes old (a replay) or ten minutes ahead.
    for skew in [-10, 10] {
        let ts = (Utc::now() + chrono::Duration::minutes(skew)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let sig = s.broker.sign(&stream, &ts, refusal.as_bytes());
        s.xadd(&stream, &[("data", &refusal), ("timestamp", &ts), (SIGNATURE_FIELD, &sig)])
            .await;
    }
    // A genuine signature over the data, with the timestamp field swapped for a fresh one.
    let old_ts = (Utc::now() - chrono::Duration::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let sig = s.broker.sign(&stream, &old_ts, refusal.as_bytes());
    s.xadd(&stream, &[("data", &refusal), ("timestamp", &now_ts()), (SIGNATURE_FIELD, &sig)])
        .await;

    let reasons: Vec<_> = s
        .read_all(&stream)
        .await
        .iter()
        .map(|e| verify::check(e, &stream, &s.broker.public(), Utc::now()))
        .collect();
    assert!(matches!(
        reasons.as_slice(),
        [
            Err(AnswerError::Unsigned),
            Err(AnswerError::Stale { .. }),
            Err(AnswerError::Stale { .. }),
            Err(AnswerError::Forged)
        ]
    ));
    // None of them is an answer: with nothing else on the stream the agent is still waiting.
    assert!(matches!(s.sdk_wait(Duration::from_millis(1_500)).await, Err(Error::Timeout(_))));
    // And the real answer, written after them, is taken.
    let real = s.real_approval();
    s.replies.reply(&s.provider.provider_id, &real).await.unwrap();
    assert_eq!(s.sdk_wait(WAIT).await.unwrap(), real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_join_is_refused_when_the_agent_sent_enc_pubkey() {
    let s = Scene::new(44).await;
    let marker = scratch("plain").join("pwned");
    // Even signed by the broker's own key, a token in the clear is not for an agent that asked
    // for a sealed one.
    let plain = ProviderResponse {
        success: true,
        status: "approved".into(),
        message: "approved".into(),
        join_token: Some(TOKEN.into()),
        join_command: Some(format!("touch {}", marker.display())),
        master_ip: Some("10.0.0.1".into()),
        master_port: Some(6443),
        ca_hash: Some(ca_hash()),
        node_name: Some("gpu-node-00044".into()),
        ..Default::default()
    };
    s.replies.reply(&s.provider.provider_id, &plain).await.unwrap();
    let answer = s.sdk_wait(WAIT).await.unwrap();
    assert_eq!(answer, plain);
    let refused = join_from_response(&answer, &s.provider.enc_secret);
    assert!(
        matches!(&refused, Err(Error::UnsafeJoin(why)) if why.contains("in the clear")),
        "{refused:?}"
    );
    assert!(!marker.exists());
    std::fs::remove_dir_all(marker.parent().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_argv_is_built_from_fields_and_refuses_metacharacters_and_wrong_shapes() {
    let s = Scene::new(45).await;
    let marker = scratch("argv").join("pwned");
    // A sealed join whose command text is hostile: the text is never run.
    let join = SealedJoin {
        join_token: TOKEN.into(),
        join_command: format!("touch {}", marker.display()),
    };
    let enc = s.provider.registration.enc_pubkey.clone().unwrap();
    let real = approval(&join, &enc);
    s.replies.reply(&s.provider.provider_id, &real).await.unwrap();
    let answer = s.sdk_wait(WAIT).await.unwrap();
    let opened = join_from_response(&answer, &s.provider.enc_secret).unwrap();
    let plan = JoinPlan::from_answer(&answer, &opened).unwrap();
    let ran = run_recorded(&plan).await;
    assert_eq!(ran[0], "join");
    assert!(ran.iter().all(|a| !a.contains("touch")), "{ran:?}");
    assert!(!marker.exists(), "the join_command text ran");

    // Every field with a wrong shape or a shell metacharacter is refused before anything runs.
    let good = || (answer.clone(), opened.clone());
    type Twist = Box<dyn Fn(&mut ProviderResponse, &mut SealedJoin)>;
    let cases: Vec<(&str, Twist)> = vec![
        ("token; command", Box::new(|_, j| j.join_token = format!("{TOKEN};touch /tmp/x"))),
        (
            "token with an extra flag",
            Box::new(|_, j| j.join_token = format!("{TOKEN} --ignore-preflight-errors=all")),
        ),
        ("token in upper case", Box::new(|_, j| j.join_token = TOKEN.to_uppercase())),
        ("token too short", Box::new(|_, j| j.join_token = "abcdef.0123".into())),
        ("token $(…)", Box::new(|_, j| j.join_token = "$(touch /tmp/x)".into())),
        (
            "hash && command",
            Box::new(|a, _| a.ca_hash = Some(format!("{} && touch /tmp/x", ca_hash()))),
        ),
        ("hash too short", Box::new(|a, _| a.ca_hash = Some("sha256:abc".into()))),
        (
            "hash not sha256",
            Box::new(|a, _| a.ca_hash = Some(format!("md5:{}", "3f".repeat(32)))),
        ),
        ("hash missing", Box::new(|a, _| a.ca_hash = None)),
        (
            "endpoint; command",
            Box::new(|a, _| a.master_ip = Some("10.0.0.1;touch /tmp/x".into())),
        ),
        ("endpoint with a flag", Box::new(|a, _| a.master_ip = Some("10.0.0.1 --v=9".into()))),
        (
            "endpoint as a flag",
            Box::new(|a, _| a.master_ip = Some("--config=/tmp/evil.yaml".into())),
        ),
        ("endpoint `…`", Box::new(|a, _| a.master_ip = Some("`id`.example.com".into()))),
        ("endpoint missing", Box::new(|a, _| a.master_ip = None)),
        ("port missing", Box::new(|a, _| a.master_port = None)),
        ("port zero", Box::new(|a, _| a.master_port = Some(0))),
        ("node name; command", Box::new(|a, _| a.node_name = Some("gpu;touch /tmp/x".into()))),
        ("node name as a flag", Box::new(|a, _| a.node_name = Some("--help".into()))),
        ("node name in upper case", Box::new(|a, _| a.node_name = Some("GPU-NODE".into()))),
        ("node name with a space", Box::new(|a, _| a.node_name = Some("gpu node".into()))),
        ("node name too long", Box::new(|a, _| a.node_name = Some("a".repeat(64)))),
        ("node name missing", Box::new(|a, _| a.node_name = None)),
    ];
    for (what, twist) in cases {
        let (mut a, mut j) = good();
        twist(&mut a, &mut j);
        let out = JoinPlan::from_answer(&a, &j);
        assert!(matches!(out, Err(Error::UnsafeJoin(_))), "{what}: {out:?}");
    }
    // The same through the wire: a signed, sealed answer carrying a hostile token is refused.
    let hostile = SealedJoin {
        join_token: format!("{TOKEN} && touch {}", marker.display()),
        join_command: String::new(),
    };
    let s2 = Scene::new(46).await;
    let enc2 = s2.provider.registration.enc_pubkey.clone().unwrap();
    s2.replies
        .reply(&s2.provider.provider_id, &approval(&hostile, &enc2))
        .await
        .unwrap();
    let answer = s2.sdk_wait(WAIT).await.unwrap();
    let opened = join_from_response(&answer, &s2.provider.enc_secret).unwrap();
    assert!(matches!(JoinPlan::from_answer(&answer, &opened), Err(Error::UnsafeJoin(_))));
    assert!(!marker.exists());
    std::fs::remove_dir_all(marker.parent().unwrap()).unwrap();
}
