//! The garbage collector: a background task that, shortly after an object goes, deletes the objects whose
//! `ownerReferences` no longer resolve (background propagation), and drops dangling references from
//! objects that still have another owner. The delay keeps GC asynchronous, as it is on a real cluster,
//! so tests cannot pass by accident on synchronous cascades.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::server::Shared;
use crate::store::GcJob;

/// Tracks outstanding GC work so tests can wait for it to settle.
pub struct GcTracker {
    pub pending: Arc<AtomicUsize>,
    pub idle: Notify,
}

impl GcTracker {
    pub async fn settled(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub async fn run(
    shared: Arc<Shared>,
    tracker: Arc<GcTracker>,
    mut jobs: UnboundedReceiver<GcJob>,
    delay: Duration,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
        // Everything queued during the delay is handled in one pass.
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let n = batch.len();
        {
            let mut state = shared.state();
            for job in batch {
                // Follow-up work (cascades) is queued, and counted, before this batch is counted done.
                state.collect(job);
            }
        }
        if tracker.pending.fetch_sub(n, Ordering::SeqCst) == n {
            tracker.idle.notify_waiters();
        }
    }
}
