use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn a_blocking_connection_waits_its_block_time_plus_the_margin() {
    let t = RedisTimeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_millis(300),
    };
    let b = t.blocking(Duration::from_secs(1));
    assert_eq!(b.connect, Duration::from_secs(2));
    assert_eq!(b.response, Duration::from_millis(1_300));
    assert_eq!(b.first_connection(), Duration::from_millis(3_300));
    assert_eq!(RedisTimeouts::default().blocking(Duration::MAX).response, Duration::MAX);
}

/// A server that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    url
}

/// A server that answers `+OK` to every command until the first XREAD, which it never answers:
/// the connection is made, then the socket goes quiet like a half-open one.
async fn quiet_on_xread_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut quiet = false;
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    quiet |= text.contains("XREAD");
                    if quiet {
                        continue;
                    }
                    // One answer per command (a RESP array header at a line start).
                    let commands = text
                        .split("\r\n")
                        .filter(|l| l.starts_with('*') && l[1..].parse::<u32>().is_ok())
                        .count();
                    if sock.write_all("+OK\r\n".repeat(commands).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn the_first_connection_to_a_server_that_never_answers_is_bounded() {
    let url = silent_server().await;
    let t = RedisTimeouts {
        connect: Duration::from_millis(200),
        response: Duration::from_millis(200),
    };
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(5), connect_with(&url, t))
        .await
        .expect("bounded");
    assert!(res.is_err());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_blocking_read_on_a_quiet_socket_fails_after_its_block_time_plus_the_margin() {
    let url = quiet_on_xread_server().await;
    let t = RedisTimeouts {
        connect: Duration::from_secs(2),
        response: Duration::from_millis(300),
    };
    let block = Duration::from_millis(200);
    let mut conn = connect_with(&url, t.blocking(block)).await.unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await.unwrap();
    let started = Instant::now();
    let mut read = redis::cmd("XREAD");
    read.arg("BLOCK").arg(block.as_millis() as u64).arg("STREAMS").arg("s").arg("$");
    let err = tokio::time::timeout(Duration::from_secs(5), read.query_async::<redis::Value>(&mut conn))
        .await
        .expect("the read fails by itself, it does not hang")
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "not cut short: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_url_is_logged_without_its_password() {
    let table = [
        ("redis://bridge:s3cret@10.0.0.5:6379/0", "redis://bridge:***@10.0.0.5:6379/0"),
        ("rediss://:s3cret@cache.internal:6380", "rediss://:***@cache.internal:6380"),
        ("redis://s3cret@host", "redis://***@host"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("not a url", "not a url"),
        // Unescaped '/' and '@' in the password: still hidden whole.
        ("redis://bridge:s3cret/x@y@10.0.0.5:6379/0", "redis://bridge:***@10.0.0.5:6379/0"),
    ];
    for (url, shown) in table {
        assert_eq!(super::redacted(url), shown, "{url}");
        assert!(!super::redacted(url).contains("s3cret"), "{url}");
    }
}
