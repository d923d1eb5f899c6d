//! "Refresh now" within the minute after the last one acted upon (see `policy::refresh_request`): the
//! resource comes back at the minute's end, and the user is told once, in an event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use tracing::{debug, warn};

use super::Context;
use crate::crd::TencentCertificate;
use crate::policy::{self, Decision, RefreshRequest};
use crate::status;

pub const REASON_REFRESH_DEFERRED: &str = "RefreshDeferred";

/// The deferrals already told, per resource UID, so that a tenant rewriting the annotation in a loop
/// gets one event per minute and resource, not one per write.
#[derive(Debug, Default)]
pub struct Deferrals {
    told: Mutex<HashMap<String, jiff::Timestamp>>,
}

impl Deferrals {
    /// Whether the deferral of `uid` until `until` has not been told yet. Forgets deferrals that are over.
    fn first_time(&self, uid: &str, until: jiff::Timestamp, now: jiff::Timestamp) -> bool {
        let mut told = self
            .told
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        told.retain(|_, told_until| *told_until > now);
        told.insert(uid.to_string(), until) != Some(until)
    }
}

/// When a deferred refresh request of `cr` is due, if this reconcile leaves one (a download decided now
/// acts upon the request anyway). Publishes a `RefreshDeferred` event the first time.
pub async fn deferred(
    ctx: &Context,
    cr: &TencentCertificate,
    decision: &Decision,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if matches!(decision, Decision::Download(_)) {
        return None;
    }
    let RefreshRequest::Deferred { until } = policy::refresh_request(cr, now) else {
        return None;
    };
    let wait = Duration::try_from(until.duration_since(now)).unwrap_or(Duration::ZERO);
    let uid = cr.uid().unwrap_or_default();
    if ctx.refresh_deferrals.first_time(&uid, until, now) {
        debug!(namespace = cr.namespace().unwrap_or_default(), name = %cr.name_any(), until = %status::format_time(until), "refresh request deferred");
        let event = Event {
            type_: EventType::Normal,
            reason: REASON_REFRESH_DEFERRED.to_string(),
            note: Some(format!(
                "the refresh request is acted upon at {}: a refresh is forced at most once per minute",
                status::format_time(until)
            )),
            action: "Refresh".to_string(),
            secondary: None,
        };
        let reference = cr.object_ref(&());
        if let Err(err) = ctx.recorder().publish(&event, &reference).await
            && !crate::error::namespace_terminating(&err)
        {
            warn!(error = %err, reason = REASON_REFRESH_DEFERRED, "cannot publish event");
        }
    }
    Some(wait)
}

/// The requeue delay that also brings back a deferred refresh request in time.
pub fn sooner(requeue: Duration, deferred: Option<Duration>) -> Duration {
    match deferred {
        Some(wait) => requeue.min(wait.max(Duration::from_secs(1))),
        None => requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_deferral_is_told_once() {
        let deferrals = Deferrals::default();
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let until: jiff::Timestamp = "2030-01-01T00:00:40Z".parse().unwrap();
        assert!(deferrals.first_time("uid-1", until, now));
        assert!(!deferrals.first_time("uid-1", until, now));
        assert!(deferrals.first_time("uid-2", until, now));
        // The next minute's deferral is news again; the old ones are forgotten once over.
        let later: jiff::Timestamp = "2030-01-01T00:01:50Z".parse().unwrap();
        let next: jiff::Timestamp = "2030-01-01T00:02:00Z".parse().unwrap();
        assert!(deferrals.first_time("uid-1", next, later));
        assert_eq!(deferrals.told.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_requeue_comes_no_later_than_the_deferred_request() {
        let hour = Duration::from_secs(3600);
        assert_eq!(sooner(hour, None), hour);
        assert_eq!(
            sooner(hour, Some(Duration::from_secs(20))),
            Duration::from_secs(20)
        );
        assert_eq!(sooner(hour, Some(Duration::ZERO)), Duration::from_secs(1));
        assert_eq!(
            sooner(Duration::from_secs(5), Some(Duration::from_secs(20))),
            Duration::from_secs(5)
        );
    }
}
