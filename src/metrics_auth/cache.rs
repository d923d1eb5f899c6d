//! Review answers per token digest, for a short time. Pure: the caller passes the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What the reviews said about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Authenticated and allowed to `get` `/metrics`.
    Allowed,
    /// Authenticated, not allowed (403).
    Forbidden,
    /// Not a token the API server accepts (401).
    Unauthenticated,
}

/// The key a token is remembered by: its SHA-256, so the cache never holds a usable token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Bounded, time-limited answers.
#[derive(Debug)]
pub struct DecisionCache {
    entries: HashMap<[u8; 32], (Decision, Instant)>,
    ttl: Duration,
    capacity: usize,
}

impl DecisionCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            capacity,
        }
    }

    /// The answer for `digest` if it is younger than the TTL at `now`.
    pub fn get(&self, digest: &[u8; 32], now: Instant) -> Option<Decision> {
        self.entries
            .get(digest)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(decision, _)| *decision)
    }

    /// Remembers an answer given at `now`. When full, expired answers are dropped first; if none is,
    /// the new answer is not kept (it is reviewed again next time).
    pub fn put(&mut self, digest: [u8; 32], decision: Decision, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&digest) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        self.entries.insert(digest, (decision, now));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_last_for_the_ttl_only() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(Duration::from_secs(60), 8);
        let a = token_digest("token-a");
        assert_eq!(cache.get(&a, start), None);
        cache.put(a, Decision::Allowed, start);
        assert_eq!(
            cache.get(&a, start + Duration::from_secs(59)),
            Some(Decision::Allowed)
        );
        assert_eq!(cache.get(&a, start + Duration::from_secs(60)), None);
        // A clock reading before the answer (never on a monotonic clock) does not panic.
        assert_eq!(cache.get(&a, start), Some(Decision::Allowed));
        assert_ne!(token_digest("token-a"), token_digest("token-b"));
    }

    #[test]
    fn the_cache_is_bounded_and_prefers_dropping_expired_answers() {
        let start = Instant::now();
        let mut cache = DecisionCache::new(Duration::from_secs(60), 2);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(token_digest);
        cache.put(a, Decision::Allowed, start);
        cache.put(b, Decision::Forbidden, start + Duration::from_secs(30));
        // Full, nothing expired: c is not kept.
        cache.put(
            c,
            Decision::Unauthenticated,
            start + Duration::from_secs(31),
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&c, start + Duration::from_secs(31)), None);
        // Later a has expired and makes room for d; b stays.
        let later = start + Duration::from_secs(61);
        cache.put(d, Decision::Allowed, later);
        assert_eq!(cache.get(&d, later), Some(Decision::Allowed));
        assert_eq!(cache.get(&b, later), Some(Decision::Forbidden));
        assert_eq!(cache.len(), 2);
        // Updating a known token never needs room.
        cache.put(b, Decision::Allowed, later);
        assert_eq!(cache.get(&b, later), Some(Decision::Allowed));
    }
}
