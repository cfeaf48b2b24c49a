//! What a job reports while it works: its log lines and metric points, buffered and sent in
//! batches; what the server could not take stays buffered for the next send.

use std::sync::Mutex;

use still_api::{LogLine, MetricPoint};

use crate::client::{Client, status_of};

/// The worker's lines of one attempt's log, numbered so a resent line is stored once.
#[derive(Default)]
pub struct RunLog {
    lines: Mutex<(i64, Vec<LogLine>)>,
}

impl RunLog {
    pub fn line(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        eprintln!("worker: {message}");
        let mut guard = self.lines.lock().expect("log lock");
        let seq = guard.0;
        guard.0 += 1;
        guard.1.push(LogLine {
            seq,
            level: level.to_string(),
            message,
        });
    }

    pub fn info(&self, message: impl Into<String>) {
        self.line("info", message)
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.line("warn", message)
    }

    /// Sends the buffered lines; keeps them when the server cannot take them.
    pub fn flush(&self, client: &Client, job_id: i64) -> anyhow::Result<()> {
        let lines = std::mem::take(&mut self.lines.lock().expect("log lock").1);
        if lines.is_empty() {
            return Ok(());
        }
        let sent =
            client.post::<_, serde_json::Value>(&format!("/api/worker/jobs/{job_id}/logs"), &lines);
        if sent.as_ref().is_err_and(|e| !refused(e)) {
            let mut guard = self.lines.lock().expect("log lock");
            let mut restored = lines;
            restored.append(&mut guard.1);
            guard.1 = restored;
        }
        sent.map(|_| ())
    }
}

/// Whether the server answered 400/413/422: the content itself was refused.
fn refused(e: &anyhow::Error) -> bool {
    matches!(status_of(e), Some(400 | 413 | 422))
}

/// Sends buffered metric points; keeps them when the server cannot be reached.
pub fn flush_metrics(
    client: &Client,
    job_id: i64,
    buffer: &Mutex<Vec<MetricPoint>>,
) -> anyhow::Result<()> {
    let points: Vec<MetricPoint> = std::mem::take(&mut *buffer.lock().expect("metrics lock"));
    if points.is_empty() {
        return Ok(());
    }
    match client
        .post::<_, serde_json::Value>(&format!("/api/worker/jobs/{job_id}/metrics"), &points)
    {
        Ok(_) => Ok(()),
        // The server refused the batch itself: sending it again would be refused again.
        Err(e) if refused(&e) => Err(e.context(format!("{} metric points dropped", points.len()))),
        Err(e) => {
            // Put them back in front: the server keeps each (step, name) once, so a retry is safe.
            let mut guard = buffer.lock().expect("metrics lock");
            let mut restored = points;
            restored.append(&mut guard);
            *guard = restored;
            Err(e)
        }
    }
}
