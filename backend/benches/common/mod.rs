//! What the server benchmarks share: a real `still serve` process on a free loopback port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `still serve` child process, killed on drop.
pub struct ServerProcess(pub Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `still --data-dir DATA serve --no-demo ARGS` on a free port and waits until
/// `/api/health` answers. Returns the process and its base URL.
pub async fn serve(
    data: &Path,
    args: &[&str],
    client: &reqwest::Client,
) -> (ServerProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ServerProcess(
        Command::new(env!("CARGO_BIN_EXE_still"))
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--no-demo"])
            .args(args)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            // `STILL_BENCH_LOG=still_backend=info` shows the server's log.
            .env(
                "RUST_LOG",
                std::env::var("STILL_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(if std::env::var_os("STILL_BENCH_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("still serve starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (server, base)
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}
