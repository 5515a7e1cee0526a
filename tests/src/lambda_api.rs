//! Invoking the real `<worker>-lambda` bootstrap binaries the way AWS users test them locally:
//! `cargo lambda watch` (cargo-lambda, from PyPI; scripts/test installs it) runs its Lambda
//! emulator on 127.0.0.1, and `cargo lambda invoke` hands it one event and prints the response.

use std::path::PathBuf;
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `PATH` with cargo-lambda's directory (scripts/test exports `WORLDLAND_TEST_CARGO_LAMBDA_DIR`).
fn path_with_cargo_lambda() -> String {
    let dir =
        std::env::var("WORLDLAND_TEST_CARGO_LAMBDA_DIR").unwrap_or_else(|_| workspace().join(".tools/venv/bin").display().to_string());
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// Starts `cargo lambda watch` with `env` for the functions, invokes `function` with `event`
/// once, and returns the response.
pub async fn invoke_once(function: &str, env: &[(String, String)], event: &serde_json::Value) -> serde_json::Value {
    let port = crate::spare_port();
    let vars = env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let path = path_with_cargo_lambda();
    let mut watch = tokio::process::Command::new("cargo")
        .current_dir(workspace())
        .env("PATH", &path)
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
            "--ignore-changes",
            "--env-var",
            &vars,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo lambda watch (scripts/test installs cargo-lambda)");
    // The emulator has no readiness signal but its port: poll it, bounded.
    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "cargo lambda watch did not open 127.0.0.1:{port}");
    let data = tempfile_with(&serde_json::to_vec(event).unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("cargo")
            .current_dir(workspace())
            .env("PATH", &path)
            .args([
                "lambda",
                "invoke",
                function,
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
                "--data-file",
            ])
            .arg(&data)
            .output(),
    )
    .await
    .expect("cargo lambda invoke within 120 s")
    .expect("cargo lambda invoke runs");
    let _ = watch.kill().await;
    let _ = std::fs::remove_file(&data);
    assert!(
        out.status.success(),
        "cargo lambda invoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON response in: {stdout}"));
    serde_json::from_str(json).unwrap()
}

fn tempfile_with(bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wl-event-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, bytes).unwrap();
    path
}
