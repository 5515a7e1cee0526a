//! Timeouts everywhere (issue 11): a Redis server that never answers fails a command within the
//! configured timeout instead of hanging the bridge; a lapin connect to a black hole times out; a
//! RabbitMQ that finishes the handshake and then answers nothing (a node still booting) fails the
//! channel open within the operation timeout; an
//! AWS SDK call to a server that never answers fails within its operation timeout; a handler that
//! panics has its delivery retried, not dropped.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use worldland_core::bus::Bus;
use worldland_core::state::{ItemStore, Table};
use worldland_core::worker::{Failure, Handler};
use worldland_runtime::{backends, Config};
use worldland_tests::TestEnv;

/// A server that accepts connections and never answers (a half-open socket, a black hole):
/// its port. The sockets are held open until the process ends.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A proxy to the RabbitMQ on 127.0.0.1:5672 that passes the connection handshake (the server's
/// first three frames: start, tune, open-ok) and then swallows everything the broker says, as a
/// node still booting or a stalled broker would: its port.
fn mute_after_handshake() -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect("127.0.0.1:5672") else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut forwarded = 0;
                loop {
                    let mut header = [0u8; 7];
                    if s_in.read_exact(&mut header).is_err() {
                        return;
                    }
                    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                    let mut rest = vec![0u8; size + 1];
                    if s_in.read_exact(&mut rest).is_err() {
                        return;
                    }
                    if forwarded < 3 {
                        forwarded += 1;
                        let _ = c_out.write_all(&header).and_then(|_| c_out.write_all(&rest));
                    }
                }
            });
        }
    });
    port
}

fn cfg(pairs: &[(&str, String)]) -> Config {
    Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_server_that_never_answers_fails_within_the_timeout() {
    let port = black_hole();
    let cfg = cfg(&[
        ("WORLDLAND_REDIS_URL", format!("redis://127.0.0.1:{port}")),
        ("WORLDLAND_REDIS_CONNECT_TIMEOUT_MS", "500".into()),
        ("WORLDLAND_REDIS_RESPONSE_TIMEOUT_MS", "500".into()),
        ("WORLDLAND_BRIDGE_BLOCK_MS", "200".into()),
    ]);
    for blocking in [true, false] {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            let conn = if blocking {
                backends::redis_blocking(&cfg).await
            } else {
                backends::redis(&cfg).await
            };
            match conn {
                Err(_) => Err(()),
                Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.map_err(|_| ()),
            }
        })
        .await;
        assert!(outcome.is_ok(), "blocking={blocking}: hung past 15 s");
        assert!(outcome.unwrap().is_err(), "blocking={blocking}: a black hole cannot answer");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "blocking={blocking}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapin_connect_to_a_black_hole_times_out() {
    let port = black_hole();
    let cfg = cfg(&[
        ("WORLDLAND_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{port}/%2f")),
        ("WORLDLAND_AMQP_CONNECT_TIMEOUT_MS", "300".into()),
    ]);
    let outcome = tokio::time::timeout(Duration::from_secs(40), backends::rabbit(&cfg)).await;
    assert!(outcome.is_ok(), "the connect hung past 40 s");
    assert!(outcome.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_that_stops_answering_after_the_handshake_fails_within_the_operation_timeout() {
    let port = mute_after_handshake();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let cfg = cfg(&[
        ("WORLDLAND_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{port}/%2f")),
        ("WORLDLAND_EXCHANGE", format!("wltest-mute-{id}")),
        ("WORLDLAND_AMQP_CONNECT_TIMEOUT_MS", "2000".into()),
        ("WORLDLAND_AMQP_OPERATION_TIMEOUT_MS", "300".into()),
    ]);
    // Without the operation timeout the channel open waits for its answer forever.
    let outcome = tokio::time::timeout(Duration::from_secs(40), backends::rabbit(&cfg)).await;
    assert!(outcome.is_ok(), "opening a channel hung past 40 s");
    let err = outcome.unwrap().err().expect("a broker that answers nothing cannot be used");
    let chain = format!("{err:?}");
    assert!(chain.contains("did not answer"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_call_to_a_server_that_never_answers_fails_within_its_timeout() {
    let port = black_hole();
    let cfg = cfg(&[
        ("WORLDLAND_DYNAMODB_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("WORLDLAND_AWS_OPERATION_TIMEOUT_MS", "1500".into()),
        ("WORLDLAND_AWS_ATTEMPT_TIMEOUT_MS", "500".into()),
    ]);
    let store = backends::dynamo(&cfg).await;
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), store.get(Table::Providers, "p")).await;
    assert!(outcome.is_ok(), "the call hung past 20 s");
    assert!(outcome.unwrap().is_err());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Panics on its first message, then succeeds.
struct PanicsOnce(AtomicUsize);

#[async_trait]
impl Handler for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics-once"
    }
    fn bindings(&self) -> &'static [&'static str] {
        &["panics.once"]
    }
    async fn handle(&self, _key: &str, _body: &[u8], _now: DateTime<Utc>) -> Result<(), Failure> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a bug in the handler");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handlers_delivery_is_redelivered() {
    let env = TestEnv::new(&[]);
    let bus = Arc::new(env.rabbit().await);
    let q = env.queue("panics-once", &["panics.once"]);
    bus.declare(&q).await.unwrap();
    let handler = Arc::new(PanicsOnce(AtomicUsize::new(0)));
    let (tx, rx) = tokio::sync::broadcast::channel(1);
    let consumer = tokio::spawn(worldland_runtime::worker::run_consumer(
        bus.clone(),
        q.clone(),
        handler.clone(),
        2,
        worldland_runtime::readiness::ReadyPart::unobserved(),
        rx,
    ));
    bus.publish("panics.once", "m-1", b"{}").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while handler.0.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handler.0.load(Ordering::SeqCst), 2, "delivered again after the panic, and done");
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
}
