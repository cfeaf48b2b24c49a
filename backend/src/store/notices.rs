//! Change notices: writers (handlers, the reaper) say which run they changed; live streams
//! (`crate::live`) wake on it and read what is new. Also the server's closing signal, which
//! ends every stream so a graceful stop never waits on one.

use tokio::sync::{broadcast, watch};

/// Change notices (run ids) and the server's closing signal.
pub struct Events {
    changed: broadcast::Sender<i64>,
    closing: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            changed: broadcast::channel(1024).0,
            closing: watch::channel(false).0,
        }
    }
}

impl Events {
    /// Tells live streams of `run` that something changed.
    pub fn touch(&self, run: i64) {
        let _ = self.changed.send(run);
    }

    /// Tells the live streams of what a job reports to that it changed (runs have live streams;
    /// an eval's page reads its progress by polling).
    pub fn touch_owner(&self, owner: super::logs::Owner) {
        if let super::logs::Owner::Run(run) = owner {
            self.touch(run);
        }
    }

    /// A receiver of change notices.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.changed.subscribe()
    }

    /// A receiver of the closing signal.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every live stream (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
