//! The lease a worker holds on its job: heartbeats on a thread of their own, and what they learn
//! (the user cancelled, another worker owns the job now) as flags the job's work reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use still_api::HeartbeatReply;

use crate::client::{Client, status_of};

/// What the heartbeats found, shared with the heartbeat thread.
#[derive(Default)]
struct Flags {
    /// The work should stop (cancelled or lease lost).
    stop: Arc<AtomicBool>,
    cancelled: AtomicBool,
    lost: AtomicBool,
    /// The outcome was reported: heartbeats end.
    released: AtomicBool,
}

/// A held lease. Heartbeats go on until [`Lease::release`], so a report that waits for a
/// restarting server never lets the lease expire under a finished job.
pub struct Lease {
    flags: Arc<Flags>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Starts heartbeating job `job_id` every quarter of the lease (1–10 s).
    pub fn hold(client: &Client, job_id: i64, lease_seconds: i64) -> Self {
        let flags = Arc::new(Flags::default());
        // Heartbeats come again soon: a failed one is not retried for long.
        let client = client.clone().retrying_for(Duration::from_secs(5));
        let every = Duration::from_secs((lease_seconds / 4).clamp(1, 10) as u64);
        let shared = flags.clone();
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !shared.released.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                match client.post::<_, HeartbeatReply>(
                    &format!("/api/worker/jobs/{job_id}/heartbeat"),
                    &serde_json::json!({}),
                ) {
                    Ok(reply) if reply.cancel => {
                        shared.cancelled.store(true, Ordering::Relaxed);
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) if status_of(&e) == Some(409) => {
                        shared.lost.store(true, Ordering::Relaxed);
                        shared.stop.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {} // the server may be restarting: keep working, retry later
                }
            }
        });
        Self {
            flags,
            thread: Some(thread),
        }
    }

    /// The flag the job's work polls to stop early.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.flags.stop.clone()
    }

    /// The user asked to cancel.
    pub fn cancelled(&self) -> bool {
        self.flags.cancelled.load(Ordering::Relaxed)
    }

    /// Another worker owns the job now: nothing more may be reported.
    pub fn lost(&self) -> bool {
        self.flags.lost.load(Ordering::Relaxed)
    }

    /// Ends the heartbeats (after the outcome was reported) and waits for their thread.
    pub fn release(mut self) {
        self.flags.released.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.flags.released.store(true, Ordering::Relaxed);
    }
}
