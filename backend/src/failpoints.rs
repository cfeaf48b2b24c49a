//! Named points where a test can make the server fail as if it crashed there (after
//! meilisearch's `FailureLocation`): the work before the point is stored, the work after it is
//! not, and the caller gets a 500. Crash tests arm a point and restart the server, instead of
//! killing processes at a moment found by polling.
//!
//! Compiled in only with the `failpoints` feature (the integration tests turn it on); without
//! it [`Armed::hit`] is an empty inline function. A point is armed once: it fires on the next
//! hit and is disarmed.

/// Where a failure can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// A worker's claim was committed; the answer never reaches it.
    AfterClaim,
    /// A checkpoint's files were uploaded; its commit (the resume point) never happens.
    BetweenUploadAndCommit,
    /// A train job's final model was uploaded and laid out; its completion is never recorded.
    BeforeCompletion,
}

/// The points armed on a server.
#[derive(Debug, Default)]
pub struct Armed {
    #[cfg(feature = "failpoints")]
    points: std::sync::Mutex<Vec<FailPoint>>,
}

impl Armed {
    /// Makes the next hit of `point` fail (test builds only).
    #[cfg(feature = "failpoints")]
    pub fn arm(&self, point: FailPoint) {
        self.points.lock().expect("failpoints").push(point);
    }

    /// Fails here if `point` is armed (and disarms it).
    #[cfg(feature = "failpoints")]
    pub fn hit(&self, point: FailPoint) -> crate::error::Result<()> {
        let mut points = self.points.lock().expect("failpoints");
        match points.iter().position(|p| *p == point) {
            Some(at) => {
                points.remove(at);
                tracing::warn!(?point, "failpoint hit");
                Err(crate::error::Error::Internal(format!(
                    "failpoint {point:?}"
                )))
            }
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub fn hit(&self, _point: FailPoint) -> crate::error::Result<()> {
        Ok(())
    }
}
