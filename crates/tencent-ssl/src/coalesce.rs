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
    /// The cache's size bound: a weight per value and the total allowed; the oldest entries go first.
    budget: Option<Budget<V>>,
}

/// A weight per cached value, and the total weight allowed.
type Budget<V> = (fn(&V) -> usize, usize);

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
            budget: None,
        }
    }

    /// Like [`Coalescer::new`], with the cached values' total `weigh`t kept within `max_total`.
    pub(crate) fn with_budget(ttl: Duration, weigh: fn(&V) -> usize, max_total: usize) -> Self {
        Self {
            budget: Some((weigh, max_total)),
            ..Self::new(ttl)
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
    /// made by `fetch` and shared with every caller that arrives before it completes. `coalesced` hears
    /// `"cache"` or `"in_flight"` when the caller is served without a fetch of its own.
    pub(crate) async fn get(
        &self,
        key: K,
        max_age: Duration,
        fetch: impl FnOnce() -> BoxFuture<'static, Result<V, TencentError>>,
        coalesced: impl FnOnce(&'static str),
    ) -> Result<V, TencentError> {
        if let Some(value) = self.cached(&key, max_age) {
            coalesced("cache");
            return Ok(value);
        }
        let shared = {
            let mut in_flight = lock(&self.maps.in_flight);
            // Checked again under the in-flight lock: a fetch stores its result before it leaves the
            // in-flight map, so a caller that just missed the fetch finds the result here instead of
            // starting a second one.
            if let Some(value) = self.cached(&key, max_age) {
                drop(in_flight);
                coalesced("cache");
                return Ok(value);
            }
            match in_flight.get(&key) {
                Some(shared) => {
                    let shared = shared.clone();
                    drop(in_flight);
                    coalesced("in_flight");
                    shared
                }
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
        let budget = self.budget;
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
                if let Some((weigh, max_total)) = budget {
                    evict_oldest_beyond(&mut cache, weigh, max_total);
                }
            }
            lock(&maps.in_flight).remove(&key);
            result
        }
        .boxed()
        .shared()
    }
}

/// Drops the oldest entries until the total weight is within `max_total`.
pub fn evict_oldest_beyond<K: Clone + Eq + Hash, V>(
    cache: &mut HashMap<K, (Instant, V)>,
    weigh: fn(&V) -> usize,
    max_total: usize,
) {
    let mut total: usize = cache.values().map(|(_, v)| weigh(v)).sum();
    if total <= max_total {
        return;
    }
    let mut by_age: Vec<(Instant, K, usize)> = cache
        .iter()
        .map(|(k, (at, v))| (*at, k.clone(), weigh(v)))
        .collect();
    by_age.sort_by_key(|(at, _, _)| *at);
    for (_, key, weight) in by_age {
        if total <= max_total {
            break;
        }
        cache.remove(&key);
        total = total.saturating_sub(weight);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts fetches and records how callers were served without one.
    #[derive(Default)]
    struct Probe {
        fetches: Arc<AtomicUsize>,
        coalesced: Mutex<Vec<&'static str>>,
    }

    impl Probe {
        async fn get(
            &self,
            coalescer: &Coalescer<&'static str, u32>,
            key: &'static str,
            max_age: Duration,
            delay: Duration,
            outcome: Result<u32, TencentError>,
        ) -> Result<u32, TencentError> {
            let fetches = self.fetches.clone();
            let fetch = move || {
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    outcome
                }
                .boxed()
            };
            coalescer
                .get(key, max_age, fetch, |source| {
                    lock(&self.coalesced).push(source)
                })
                .await
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn take_coalesced(&self) -> Vec<&'static str> {
            std::mem::take(&mut *lock(&self.coalesced))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_later_ones_the_cache() {
        let coalescer = Coalescer::new(Duration::from_secs(60));
        let ttl = coalescer.ttl();
        let probe = Probe::default();
        let slow = Duration::from_millis(100);
        let results = futures::future::join_all(
            (0..20).map(|_| probe.get(&coalescer, "k", ttl, slow, Ok(7))),
        )
        .await;
        assert!(results.iter().all(|r| r == &Ok(7)));
        assert_eq!(probe.fetches(), 1);
        assert_eq!(probe.take_coalesced(), vec!["in_flight"; 19]);

        let cached = probe.get(&coalescer, "k", ttl, Duration::ZERO, Ok(8)).await;
        assert_eq!((cached, probe.fetches()), (Ok(7), 1));
        assert_eq!(probe.take_coalesced(), ["cache"]);

        // Another key, or a caller that wants fresher data, fetches.
        let other = probe
            .get(&coalescer, "other", ttl, Duration::ZERO, Ok(1))
            .await;
        assert_eq!(other, Ok(1));
        let fresh = probe
            .get(&coalescer, "k", Duration::ZERO, Duration::ZERO, Ok(9))
            .await;
        assert_eq!((fresh, probe.fetches()), (Ok(9), 3));
        assert!(probe.take_coalesced().is_empty());

        // The cache expires.
        tokio::time::advance(Duration::from_secs(61)).await;
        let expired = probe
            .get(&coalescer, "k", ttl, Duration::ZERO, Ok(10))
            .await;
        assert_eq!((expired, probe.fetches()), (Ok(10), 4));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_shared_but_not_cached() {
        let coalescer = Coalescer::new(Duration::from_secs(60));
        let ttl = coalescer.ttl();
        let probe = Probe::default();
        let failure = TencentError::Malformed {
            action: "A".into(),
            detail: "x".into(),
        };
        let results = futures::future::join_all((0..5).map(|_| {
            probe.get(
                &coalescer,
                "k",
                ttl,
                Duration::from_millis(10),
                Err(failure.clone()),
            )
        }))
        .await;
        assert!(results.iter().all(|r| r == &Err(failure.clone())));
        assert_eq!(probe.fetches(), 1);
        let retried = probe.get(&coalescer, "k", ttl, Duration::ZERO, Ok(3)).await;
        assert_eq!((retried, probe.fetches()), (Ok(3), 2));
    }

    #[tokio::test]
    async fn a_zero_ttl_shares_in_flight_fetches_but_caches_nothing() {
        let coalescer = Coalescer::new(Duration::ZERO);
        let probe = Probe::default();
        let first = probe
            .get(
                &coalescer,
                "k",
                Duration::from_secs(60),
                Duration::ZERO,
                Ok(1),
            )
            .await;
        let second = probe
            .get(
                &coalescer,
                "k",
                Duration::from_secs(60),
                Duration::ZERO,
                Ok(2),
            )
            .await;
        assert_eq!((first, second, probe.fetches()), (Ok(1), Ok(2), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_keeps_the_newest_values_within_its_budget() {
        let coalescer: Coalescer<u32, Vec<u8>> =
            Coalescer::with_budget(Duration::from_secs(300), |v| v.len(), 2500);
        for key in 0..5u32 {
            let value = coalescer
                .get(
                    key,
                    Duration::from_secs(300),
                    move || async move { Ok(vec![0u8; 1000]) }.boxed(),
                    |_| {},
                )
                .await
                .unwrap();
            assert_eq!(value.len(), 1000);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let cached: Vec<u32> = {
            let cache = lock(&coalescer.maps.cache);
            let mut keys: Vec<u32> = cache.keys().copied().collect();
            keys.sort();
            keys
        };
        assert_eq!(cached, vec![3, 4], "the two newest fit in 2,500 bytes");
    }
}
