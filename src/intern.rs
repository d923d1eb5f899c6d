//! Shared strings for the controller's cache: one allocation per distinct text, however many cached
//! resources hold it. Ten resources naming one certificate hold the same id, fingerprint, issuer, DNS
//! names, validity and condition messages; 20,000 resources over 2,000 ids held each of those strings ten
//! times (issue 23's heap profile: ~1 KiB of status strings per cached resource).
//!
//! The pool is process-wide because serde's `Deserialize` has no context to carry one. It holds each
//! distinct text once and forgets the texts nothing else holds whenever it has doubled since it last did
//! (amortised O(1) per string), so it never holds more than twice the texts in use.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

/// A string shared with every other cached value of the same text. Compares, hashes and prints as its
/// text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shared(Arc<str>);

/// Below this many texts the pool is not swept.
const SWEEP_FLOOR: usize = 1024;

struct Pool {
    texts: HashSet<Arc<str>>,
    sweep_at: usize,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| {
    Mutex::new(Pool {
        texts: HashSet::new(),
        sweep_at: SWEEP_FLOOR,
    })
});

impl Shared {
    /// The shared string of `text`.
    pub fn new(text: &str) -> Self {
        let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = pool.texts.get(text) {
            return Self(known.clone());
        }
        if pool.texts.len() >= pool.sweep_at {
            // Texts only the pool holds: no cached value uses them any more.
            pool.texts.retain(|text| Arc::strong_count(text) > 1);
            pool.sweep_at = (pool.texts.len() * 2).max(SWEEP_FLOOR);
        }
        let text: Arc<str> = Arc::from(text);
        pool.texts.insert(text.clone());
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` are one allocation (tests).
    pub fn same_allocation(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How many distinct texts the pool holds (tests and benchmarks).
pub fn pooled() -> usize {
    POOL.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .texts
        .len()
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Shared {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// For label sets that hold `Arc<str>` (the metric series).
impl From<Shared> for Arc<str> {
    fn from(shared: Shared) -> Self {
        shared.0
    }
}

impl From<&Shared> for String {
    fn from(shared: &Shared) -> Self {
        shared.0.to_string()
    }
}

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Shared;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            // A text already pooled costs no allocation: serde_json lends it from its input.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Shared, E> {
                Ok(Shared::new(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_allocation_and_different_ones_do_not() {
        let a = Shared::new("ab:cd:ef fingerprint of intern tests");
        let b: Shared = serde_json::from_str("\"ab:cd:ef fingerprint of intern tests\"").unwrap();
        let c = Shared::new("another text of intern tests");
        assert!(a.same_allocation(&b));
        assert_eq!(a, b);
        assert!(!a.same_allocation(&c));
        assert_eq!(&*a, "ab:cd:ef fingerprint of intern tests");
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            "\"ab:cd:ef fingerprint of intern tests\""
        );
        // Escapes are decoded before pooling.
        let escaped: Shared = serde_json::from_str("\"quote \\\" in intern tests\"").unwrap();
        assert_eq!(&*escaped, "quote \" in intern tests");
        assert!(serde_json::from_str::<Shared>("12").is_err());
    }

    #[test]
    fn texts_nothing_holds_any_more_are_swept_and_texts_in_use_are_kept() {
        let kept = Shared::new("kept by the sweep test");
        for i in 0..(4 * SWEEP_FLOOR) {
            drop(Shared::new(&format!(
                "transient text {i} of the sweep test"
            )));
        }
        // Other tests pool texts concurrently; the dropped ones cannot all still be there.
        assert!(pooled() < 4 * SWEEP_FLOOR);
        assert!(Shared::new("kept by the sweep test").same_allocation(&kept));
    }
}
