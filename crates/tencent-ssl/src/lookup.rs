//! What each certificate id currently is — status, validity window, renewal links — asked of Tencent once
//! per (credentials, certificate id) per wave and shared by every resource naming that id.
//!
//! Lookups are batched into `DescribeCertificates` calls with `CertIds` (Tencent accepts at most 50 per
//! request): callers that ask within a short gather window share one request, and an answer serves later
//! callers while it is younger than the age they accept.
//!
//! **One lookup clock per credentials.** Refreshes of thousands of resources are spread over time (jitter,
//! and a first sync that itself took minutes), so answers aged per id would expire one id at a time and a
//! wave would re-ask ids several times over. Instead each credential set has one clock: a *round* starts
//! when a caller finds its answer stale and the current round is at least half its accepted age old, and
//! a round re-asks **every** remembered id of those credentials at once (⌈K/50⌉ requests). After it, all
//! answers have the same age and go stale together, so an unchanged wave costs one round, ⌈K/50⌉ requests,
//! plus ids first asked about since (new resources), whatever the refresh interval. A stale id within a
//! young round (first asked about, or its round answer failed) is asked about alone; a caller that accepts
//! no cached answer (an explicit refresh) never starts a round.
//!
//! [`Book`] holds the per-credentials state and makes every decision without I/O; the client drives it
//! (`Client::lookup_certificate`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::TencentError;
use super::priority::Priority;
use crate::renewal::LinkInfo;

/// Tencent's cap on `CertIds` per `DescribeCertificates` request.
pub const MAX_IDS_PER_REQUEST: usize = 50;
/// How long the first caller of a batch waits for others to join it.
pub const GATHER_WINDOW: Duration = Duration::from_millis(20);
/// Ids nobody asked about for this long are forgotten (and no longer swept).
pub const RETENTION: Duration = Duration::from_secs(2 * 3600);

/// The answer for one id: `None` when Tencent does not list it for these credentials.
pub type Answer = Result<Option<LinkInfo>, TencentError>;

struct Entry {
    fetched_at: Instant,
    info: Option<LinkInfo>,
    last_wanted: Instant,
}

/// One credential set's lookups: answers, ids queued for the next request, and who waits for them.
#[derive(Default)]
pub struct Book {
    entries: HashMap<String, Entry>,
    /// Ids to ask about, oldest request first, each once (`queued` mirrors it).
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Ids in a request now: not queued again until it answers, and their waiters get that answer. Without
    /// this, the prefetch of every reconcile starting while a first sync's requests were out queued their
    /// ids a second time (the 20,000-resource benchmark asked 3,550 ids in 71 requests for 2,000 ids).
    in_flight: HashSet<String>,
    /// The highest priority among callers waiting for queued ids.
    priority: Priority,
    waiters: HashMap<String, Vec<oneshot::Sender<Answer>>>,
    /// Whether a flush task is running for this book.
    pub flushing: bool,
    /// When the current round began (see the module docs): the credentials' one lookup clock.
    round_started: Option<Instant>,
}

/// What [`Book::want`] decided.
pub enum Want {
    /// A young enough answer exists.
    Answered(Option<LinkInfo>),
    /// The id is queued; the answer arrives on the receiver.
    Queued(oneshot::Receiver<Answer>),
}

impl Book {
    fn enqueue(&mut self, id: &str) {
        if !self.in_flight.contains(id) && self.queued.insert(id.to_string()) {
            self.queue.push_back(id.to_string());
        }
    }

    /// Whether a stale caller accepting `max_age` starts a new round now: never for a caller that accepts
    /// no cached answer, else when no round ran yet or the current one is at least `max_age / 2` old.
    fn round_due(&self, max_age: Duration, now: Instant) -> bool {
        !max_age.is_zero()
            && self
                .round_started
                .is_none_or(|started| now.saturating_duration_since(started) >= max_age / 2)
    }

    /// Starts a round: every remembered id still wanted is queued, so all answers get the same age.
    fn start_round(&mut self, now: Instant) {
        self.round_started = Some(now);
        let wanted: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.last_wanted) < RETENTION)
            .map(|(id, _)| id.clone())
            .collect();
        for id in wanted {
            self.enqueue(&id);
        }
    }

    /// Asks for `id`, accepting an answer younger than `max_age`. A stale or missing answer queues the id;
    /// if the round is due (see [`Book::round_due`]) a new round queues every other remembered id too.
    pub fn want(&mut self, id: &str, max_age: Duration, priority: Priority, now: Instant) -> Want {
        let aged = match self.entries.get_mut(id) {
            Some(entry) => {
                entry.last_wanted = now;
                if now.saturating_duration_since(entry.fetched_at) < max_age {
                    return Want::Answered(entry.info.clone());
                }
                true
            }
            None => false,
        };
        self.enqueue(id);
        // An id asked about for the first time is asked alone (with whatever else is queued): only an
        // answer that aged out moves the clock.
        if aged && self.round_due(max_age, now) {
            self.start_round(now);
        }
        // A waiter of an id already in a request waits for that answer; it raises no later batch.
        if self.queued.contains(id) {
            self.priority = self.priority.max(priority);
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters.entry(id.to_string()).or_default().push(sender);
        Want::Queued(receiver)
    }

    /// Whether a lookup of `id` would be answered, or is already on its way, without queueing anything.
    pub fn is_covered(&self, id: &str, max_age: Duration, now: Instant) -> bool {
        self.queued.contains(id)
            || self.in_flight.contains(id)
            || self
                .entries
                .get(id)
                .is_some_and(|e| now.saturating_duration_since(e.fetched_at) < max_age)
    }

    /// Queues ids other resources with the same credentials will ask about soon (no one waits for them
    /// yet), so they join this batch instead of trickling in one request each as reconciles start.
    pub fn prefetch(
        &mut self,
        ids: impl IntoIterator<Item = String>,
        max_age: Duration,
        now: Instant,
    ) {
        for id in ids {
            if !self.is_covered(&id, max_age, now) {
                self.entries
                    .entry(id.clone())
                    .and_modify(|e| e.last_wanted = now);
                self.enqueue(&id);
            }
        }
    }

    /// Up to [`MAX_IDS_PER_REQUEST`] queued ids for one request, oldest first, with the priority to send
    /// it at. Empty when nothing is queued.
    pub fn take_batch(&mut self) -> (Vec<String>, Priority) {
        let count = self.queue.len().min(MAX_IDS_PER_REQUEST);
        let batch: Vec<String> = self.queue.drain(..count).collect();
        for id in &batch {
            self.queued.remove(id);
            self.in_flight.insert(id.clone());
        }
        let priority = self.priority;
        if self.queue.is_empty() {
            self.priority = Priority::Routine;
        }
        (batch, priority)
    }

    /// Records the answer to a request for `batch`: ids absent from `found` are not listed. Every waiter for
    /// those ids gets its answer; entries nobody wanted for [`RETENTION`] are dropped.
    pub fn record(
        &mut self,
        batch: &[String],
        found: Result<Vec<LinkInfo>, TencentError>,
        now: Instant,
    ) {
        for id in batch {
            self.in_flight.remove(id);
        }
        match found {
            Ok(found) => {
                let mut by_id: HashMap<String, LinkInfo> = found
                    .into_iter()
                    .map(|info| (info.id.clone(), info))
                    .collect();
                for id in batch {
                    let info = by_id.remove(id);
                    let last_wanted = self.entries.get(id).map_or(now, |e| e.last_wanted);
                    self.entries.insert(
                        id.clone(),
                        Entry {
                            fetched_at: now,
                            info: info.clone(),
                            last_wanted,
                        },
                    );
                    for waiter in self.waiters.remove(id).unwrap_or_default() {
                        let _ = waiter.send(Ok(info.clone()));
                    }
                }
            }
            // Nothing is cached on failure: the next caller asks again.
            Err(err) => {
                for id in batch {
                    for waiter in self.waiters.remove(id).unwrap_or_default() {
                        let _ = waiter.send(Err(err.clone()));
                    }
                }
            }
        }
        self.entries
            .retain(|_, entry| now.saturating_duration_since(entry.last_wanted) < RETENTION);
    }

    /// How many ids wait for a request.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing remembered, queued or awaited: the book can go.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
            && self.queue.is_empty()
            && self.in_flight.is_empty()
            && self.waiters.is_empty()
            && !self.flushing
    }

    #[cfg(test)]
    fn queued_ids(&self) -> Vec<String> {
        self.queue.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> LinkInfo {
        LinkInfo {
            id: id.into(),
            status: Some(1),
            ..LinkInfo::default()
        }
    }

    fn queued(want: Want) -> oneshot::Receiver<Answer> {
        match want {
            Want::Queued(receiver) => receiver,
            Want::Answered(_) => panic!("expected the id to be queued"),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn many_callers_over_k_ids_make_ceil_k_over_50_requests() {
        let mut book = Book::default();
        let now = Instant::now();
        // 1,000 resources over 120 ids, all asking before the first request leaves.
        let mut receivers = Vec::new();
        for resource in 0..1000 {
            let id = format!("id{:03}", resource % 120);
            receivers.push((
                id.clone(),
                queued(book.want(&id, MINUTE, Priority::Urgent, now)),
            ));
        }
        let mut requests = 0;
        loop {
            let (batch, priority) = book.take_batch();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= MAX_IDS_PER_REQUEST);
            assert_eq!(priority, Priority::Urgent);
            requests += 1;
            let found = batch
                .iter()
                .filter(|id| *id != "id007")
                .map(|id| info(id))
                .collect();
            book.record(&batch, Ok(found), now);
        }
        assert_eq!(requests, 3, "⌈120/50⌉");
        for (id, mut receiver) in receivers {
            let answer = receiver.try_recv().unwrap().unwrap();
            if id == "id007" {
                assert_eq!(answer, None, "an id Tencent does not list is not found");
            } else {
                assert_eq!(answer.unwrap().id, id);
            }
        }
        // Later callers within the accepted age are answered without a request.
        assert!(matches!(
            book.want(
                "id001",
                MINUTE,
                Priority::Routine,
                now + Duration::from_secs(30)
            ),
            Want::Answered(Some(_))
        ));
        assert!(book.take_batch().0.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_answer_sweeps_in_the_other_ageing_ids() {
        let mut book = Book::default();
        let start = Instant::now();
        let ids: Vec<String> = (0..80).map(|i| format!("c{i}")).collect();
        for id in &ids {
            let _ = book.want(id, MINUTE, Priority::Routine, start);
        }
        while let (batch, _) = book.take_batch()
            && !batch.is_empty()
        {
            let found = batch.iter().map(|id| info(id)).collect();
            book.record(&batch, Ok(found), start);
        }
        // A refresh wave spread over time: the first stale caller refreshes every id older than half
        // the accepted age, so the rest of the wave is answered from that sweep.
        let later = start + Duration::from_secs(61);
        let _receiver = queued(book.want("c5", MINUTE, Priority::Routine, later));
        assert_eq!(book.queued_ids().len(), 80);
        let mut requests = 0;
        while let (batch, _) = book.take_batch()
            && !batch.is_empty()
        {
            requests += 1;
            let found = batch.iter().map(|id| info(id)).collect();
            book.record(&batch, Ok(found), later);
        }
        assert_eq!(requests, 2);
        for id in &ids {
            assert!(matches!(
                book.want(
                    id,
                    MINUTE,
                    Priority::Routine,
                    later + Duration::from_secs(20)
                ),
                Want::Answered(Some(_))
            ));
        }
    }

    /// Answers every queued batch at `now`; the number of requests it took.
    fn drain(book: &mut Book, now: Instant) -> usize {
        let mut requests = 0;
        while let (batch, _) = book.take_batch()
            && !batch.is_empty()
        {
            requests += 1;
            let found = batch.iter().map(|id| info(id)).collect();
            book.record(&batch, Ok(found), now);
        }
        requests
    }

    #[tokio::test(start_paused = true)]
    async fn ids_first_asked_at_different_times_share_one_clock_afterwards() {
        // 200 ids first asked over 100 s (a slow first sync), one at a time: one request each, and no
        // re-asking of the ids asked earlier (a new id moves no clock).
        let mut book = Book::default();
        let start = Instant::now();
        let ids: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
        let mut first_sync = 0;
        for (i, id) in ids.iter().enumerate() {
            let at = start + Duration::from_millis(500 * i as u64);
            let _ = book.want(id, MINUTE, Priority::Urgent, at);
            first_sync += drain(&mut book, at);
        }
        assert_eq!(first_sync, 200);
        // Then refresh waves spread over 100 s each, for several intervals: each wave costs one round of
        // ⌈200/50⌉ = 4 requests (two when a wave spans two rounds), not a request per ageing id.
        for wave in 1..=5u64 {
            let mut requests = 0;
            for (i, id) in ids.iter().enumerate() {
                let at =
                    start + Duration::from_secs(100 * wave) + Duration::from_millis(500 * i as u64);
                if let Want::Queued(_) = book.want(id, MINUTE, Priority::Routine, at) {
                    requests += drain(&mut book, at);
                }
            }
            assert!(requests <= 8, "wave {wave}: {requests} requests");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_lookup_or_an_explicit_refresh_asks_about_its_own_id_only() {
        let mut book = Book::default();
        let start = Instant::now();
        for id in ["a", "b", "c"] {
            let _ = book.want(id, MINUTE, Priority::Routine, start);
        }
        drain(&mut book, start);
        let later = start + 2 * MINUTE;
        let _ = book.want("new", MINUTE, Priority::Urgent, later);
        assert_eq!(book.queued_ids(), vec!["new"], "a new id moves no clock");
        drain(&mut book, later);
        let _ = book.want("a", Duration::ZERO, Priority::Urgent, later);
        assert_eq!(
            book.queued_ids(),
            vec!["a"],
            "an explicit refresh sweeps nothing"
        );
        drain(&mut book, later);
        // A routine caller whose answer aged out starts the round: every remembered id at once.
        let _ = book.want("b", MINUTE, Priority::Routine, later);
        assert_eq!(book.queued_ids().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_reach_every_waiter_and_are_not_cached() {
        let mut book = Book::default();
        let now = Instant::now();
        let mut a = queued(book.want("a", MINUTE, Priority::Routine, now));
        let mut b = queued(book.want("a", MINUTE, Priority::Routine, now));
        let (batch, _) = book.take_batch();
        assert_eq!(batch, vec!["a".to_string()], "one id is asked about once");
        let err = TencentError::Timeout {
            action: "DescribeCertificates".into(),
            after: Duration::from_secs(10),
        };
        book.record(&batch, Err(err.clone()), now);
        assert_eq!(a.try_recv().unwrap(), Err(err.clone()));
        assert_eq!(b.try_recv().unwrap(), Err(err));
        assert!(matches!(
            book.want("a", MINUTE, Priority::Routine, now),
            Want::Queued(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn ids_nobody_wants_any_more_are_forgotten() {
        let mut book = Book::default();
        let now = Instant::now();
        let _ = book.want("old", MINUTE, Priority::Routine, now);
        let (batch, _) = book.take_batch();
        book.record(&batch, Ok(vec![info("old")]), now);
        let much_later = now + RETENTION + MINUTE;
        let _ = book.want("new", MINUTE, Priority::Routine, much_later);
        assert_eq!(book.queued_ids(), vec!["new".to_string()], "not swept");
        let (batch, _) = book.take_batch();
        book.record(&batch, Ok(vec![info("new")]), much_later);
        assert!(!book.entries.contains_key("old"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_waiter_raises_the_batch_priority() {
        let mut book = Book::default();
        let now = Instant::now();
        let _ = book.want("a", MINUTE, Priority::Routine, now);
        let _ = book.want("b", MINUTE, Priority::Urgent, now);
        assert_eq!(book.take_batch().1, Priority::Urgent);
        let _ = book.want("c", MINUTE, Priority::Routine, now);
        assert_eq!(book.take_batch().1, Priority::Routine);
    }

    #[tokio::test(start_paused = true)]
    async fn prefetched_ids_join_the_first_batch() {
        let mut book = Book::default();
        let now = Instant::now();
        assert!(!book.is_covered("a", MINUTE, now));
        let mut a = queued(book.want("a", MINUTE, Priority::Urgent, now));
        assert!(book.is_covered("a", MINUTE, now), "queued");
        book.prefetch(["a", "b", "c"].map(String::from), MINUTE, now);
        assert_eq!(book.queued_ids(), vec!["a", "b", "c"]);
        let (batch, _) = book.take_batch();
        book.record(&batch, Ok(vec![info("a"), info("b"), info("c")]), now);
        assert_eq!(a.try_recv().unwrap().unwrap().unwrap().id, "a");
        // The resources naming b and c find their answers waiting.
        assert!(matches!(
            book.want("b", MINUTE, Priority::Urgent, now),
            Want::Answered(Some(_))
        ));
        assert!(book.is_covered("c", MINUTE, now));
    }

    #[tokio::test(start_paused = true)]
    async fn ids_in_a_request_are_not_queued_again_and_their_late_waiters_share_its_answer() {
        let mut book = Book::default();
        let now = Instant::now();
        let ids: Vec<String> = (0..100).map(|i| format!("c{i:03}")).collect();
        book.prefetch(ids.clone(), MINUTE, now);
        let (first, _) = book.take_batch();
        assert_eq!(first.len(), 50);
        // Reconciles starting while the first request is out prefetch the same ids and wait for their own.
        for id in &first {
            assert!(book.is_covered(id, MINUTE, now), "in the request");
        }
        book.prefetch(ids.clone(), MINUTE, now);
        let mut late = queued(book.want(&first[0], MINUTE, Priority::Urgent, now));
        assert_eq!(
            book.queued_ids(),
            ids[50..].to_vec(),
            "only the ids not asked yet"
        );
        assert_eq!(
            book.take_batch().1,
            Priority::Routine,
            "no batch raised for it"
        );
        book.record(&first, Ok(first.iter().map(|id| info(id)).collect()), now);
        assert_eq!(late.try_recv().unwrap().unwrap().unwrap().id, first[0]);
        assert!(book.take_batch().0.is_empty(), "100 ids, 2 requests");
        // A failed request lets its ids be asked again.
        let _ = book.want("retry", MINUTE, Priority::Routine, now);
        let (batch, _) = book.take_batch();
        book.record(
            &batch,
            Err(TencentError::Malformed {
                action: "DescribeCertificates".into(),
                detail: "test".into(),
            }),
            now,
        );
        assert!(!book.is_covered("retry", MINUTE, now));
        let _ = book.want("retry", MINUTE, Priority::Routine, now);
        assert_eq!(book.queued_ids(), vec!["retry"]);
    }
}
