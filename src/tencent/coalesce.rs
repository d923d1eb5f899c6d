//! Request coalescing with a short-lived result cache, shared by the client's download and list paths.
//!
//! Concurrent callers with the same key await one shared future; a successful result then serves later
//! callers for `ttl`. Failures are never cached: the next caller tries again. Keys must include a digest
//! of the credentials (see `Credentials::fingerprint`) so results never cross tenants.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::error::TencentError;

type SharedResult<V> = Shared<BoxFuture<'static, Result<V, TencentError>>>;

struct Maps<K, V> {
    in_flight: Mutex<HashMap<K, SharedResult<V>>>,
    cache: Mutex<HashMap<K, (Instant, V)>>,
}

pub(crate) struct Coalescer<K, V> {
    ttl: Duration,
    maps: Arc<Maps<K, V>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; the maps stay consistent enough to keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K, V> Coalescer<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            maps: Arc::new(Maps {
                in_flight: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn cached(&self, key: &K, max_age: Duration) -> Option<V> {
        lock(&self.maps.cache)
            .get(key)
            .filter(|(fetched_at, _)| fetched_at.elapsed() < max_age)
            .map(|(_, value)| value.clone())
    }

    /// The cached value if younger than `max_age`, else the in-flight fetch for `key`, else a new fetch
    /// made by `fetch` and shared with every caller that arrives before it completes.
    pub(crate) async fn get(
        &self,
        key: K,
        max_age: Duration,
        fetch: impl FnOnce() -> BoxFuture<'static, Result<V, TencentError>>,
    ) -> Result<V, TencentError> {
        if let Some(value) = self.cached(&key, max_age) {
            return Ok(value);
        }
        let shared = {
            let mut in_flight = lock(&self.maps.in_flight);
            // Checked again under the in-flight lock: a fetch stores its result before it leaves the
            // in-flight map, so a caller that just missed the fetch finds the result here instead of
            // starting a second one.
            if let Some(value) = self.cached(&key, max_age) {
                return Ok(value);
            }
            match in_flight.get(&key) {
                Some(shared) => shared.clone(),
                None => {
                    let shared = self.start(key.clone(), fetch());
                    in_flight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    fn start(&self, key: K, fetch: BoxFuture<'static, Result<V, TencentError>>) -> SharedResult<V> {
        let maps = self.maps.clone();
        let ttl = self.ttl;
        async move {
            let result = fetch.await;
            if let Ok(value) = &result {
                let now = Instant::now();
                let mut cache = lock(&maps.cache);
                // Expired entries go on every store, so the map stays bounded by the keys of one TTL.
                cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
                if !ttl.is_zero() {
                    cache.insert(key.clone(), (now, value.clone()));
                }
            }
            lock(&maps.in_flight).remove(&key);
            result
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting_fetch(
        calls: &Arc<AtomicUsize>,
        delay: Duration,
        outcome: Result<u32, TencentError>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u32, TencentError>> + use<> {
        let calls = calls.clone();
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                outcome
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_later_ones_the_cache() {
        let coalescer = Coalescer::<&str, u32>::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let results = futures::future::join_all((0..20).map(|_| {
            coalescer.get(
                "k",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::from_millis(100), Ok(7)),
            )
        }))
        .await;
        assert!(results.iter().all(|r| r == &Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let cached = coalescer
            .get(
                "k",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::ZERO, Ok(8)),
            )
            .await;
        assert_eq!((cached, calls.load(Ordering::SeqCst)), (Ok(7), 1));
        // Another key, or a caller that wants fresher data, fetches.
        coalescer
            .get(
                "other",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::ZERO, Ok(1)),
            )
            .await
            .unwrap();
        let fresh = coalescer
            .get(
                "k",
                Duration::ZERO,
                counting_fetch(&calls, Duration::ZERO, Ok(9)),
            )
            .await;
        assert_eq!((fresh, calls.load(Ordering::SeqCst)), (Ok(9), 3));
        // The cache expires.
        tokio::time::advance(Duration::from_secs(61)).await;
        let expired = coalescer
            .get(
                "k",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::ZERO, Ok(10)),
            )
            .await;
        assert_eq!(expired, Ok(10));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_shared_but_not_cached() {
        let coalescer = Coalescer::<&str, u32>::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let failure = TencentError::Malformed {
            action: "A".into(),
            detail: "x".into(),
        };
        let results = futures::future::join_all((0..5).map(|_| {
            coalescer.get(
                "k",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::from_millis(10), Err(failure.clone())),
            )
        }))
        .await;
        assert!(results.iter().all(|r| r == &Err(failure.clone())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let retried = coalescer
            .get(
                "k",
                coalescer.ttl(),
                counting_fetch(&calls, Duration::ZERO, Ok(3)),
            )
            .await;
        assert_eq!((retried, calls.load(Ordering::SeqCst)), (Ok(3), 2));
    }
}
