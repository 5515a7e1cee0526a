//! A Lambda Runtime API on loopback: hands one event to a real `<worker>-lambda` bootstrap binary
//! (the real lambda_runtime inside it) and captures the function's response, as the Lambda
//! service would.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where `cargo build --workspace --bins` (run by scripts/test) put the binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// One HTTP/1.1 request: (method, path, body).
async fn read_request(sock: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, body))
}

async fn respond(sock: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
}

/// Runs `binary` with `env`, hands it `event` once, and returns the response body it posted.
pub async fn invoke_once(binary: &PathBuf, env: &[(String, String)], event: &serde_json::Value) -> serde_json::Value {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "test-function")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        .kill_on_drop(true)
        .spawn()
        .expect("the bootstrap binary starts");
    let body = serde_json::to_vec(event).unwrap();
    let served = async {
        let mut handed = false;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            while let Some((method, path, req_body)) = read_request(&mut sock).await {
                if method == "GET" && path.ends_with("/invocation/next") {
                    if handed {
                        // Hold the runtime here: the test is done with it.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    handed = true;
                    let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis();
                    let headers = [
                        ("lambda-runtime-aws-request-id", "req-1".to_string()),
                        ("lambda-runtime-deadline-ms", deadline.to_string()),
                        (
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:000000000000:function:test-function".to_string(),
                        ),
                        ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".to_string()),
                    ];
                    respond(&mut sock, "200 OK", &headers, &body).await;
                } else if method == "POST" && path.ends_with("/invocation/req-1/response") {
                    respond(&mut sock, "202 Accepted", &[], b"{}").await;
                    return serde_json::from_slice::<serde_json::Value>(&req_body).unwrap();
                } else if method == "POST" && path.contains("/error") {
                    respond(&mut sock, "202 Accepted", &[], b"{}").await;
                    panic!("the function reported an error: {}", String::from_utf8_lossy(&req_body));
                } else {
                    respond(&mut sock, "404 Not Found", &[], b"{}").await;
                }
            }
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("a response within 30 s");
    let _ = child.kill().await;
    out
}
