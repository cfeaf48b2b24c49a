//! Facts about the machine a worker runs on (its memory, its GPU's memory) and the watch on a
//! local worker's parent server.

use std::path::Path;
use std::time::Duration;

/// The machine's RAM in bytes (`MemTotal`), 0 when unknown (the server then does not check).
pub fn host_memory() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A GPU's own memory, which is what bounds training on it (`nvidia-smi`, for `cuda:N`).
/// `None` for CPU workers or when the GPU cannot be asked; a GPU that cannot be asked reports 0
/// (unchecked) rather than the host's RAM, which would let it claim runs it cannot hold.
pub fn device_memory(device: &str) -> Option<i64> {
    let index = match device.split_once(':') {
        Some(("cuda", n)) => n,
        None if device == "cuda" => "0",
        _ => return None,
    };
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            index,
        ])
        .output();
    Some(
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse::<i64>().ok())
            .map_or(0, |mib| mib << 20),
    )
}

/// Whether the process `pid` still runs (Linux `/proc`: present and not a zombie; elsewhere
/// assumed alive).
fn alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Exits the process once `parent` is gone (checked every second on a thread of its own, so a
/// worker in the middle of a job or a retry stops too).
pub fn watch_parent(parent: u32) {
    std::thread::spawn(move || {
        while alive(parent) {
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("worker: its server process {parent} is gone; exiting");
        std::process::exit(0);
    });
}
