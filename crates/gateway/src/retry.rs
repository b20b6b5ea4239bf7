//! Resilience routing: which of a route's targets each upstream attempt of
//! a request goes to, how long it waits first, and the passive health of
//! every target.
//!
//! Each request puts its route's targets in an order of its own
//! ([`plan_order`]): by `priority`, lowest first; within one priority, a
//! weighted random draw without replacement among the targets of weight
//! above 0, then the standbys (weight 0) in route order. A route without
//! priorities has each target at its position, so it is tried in route
//! order, as before weights.
//!
//! A request makes at most `routing.max_attempts` attempts over its route's
//! targets, before its first byte reaches the client. An attempt that fails
//! (a 5xx, a 429, no connection, a timeout) moves on to the next target in
//! the request's order at once; a target is tried again only after its
//! back-off (`backoff_base_ms` doubled a retry, with full jitter, up to
//! `backoff_max_ms`) or the `retry-after` it sent. No attempt starts past
//! `retry_budget_ms` after the first, and every attempt's wait for headers
//! ends at most [`HEADERS_DEADLINE`] after the first began, so a retried
//! request is never longer than the drain allows.
//!
//! [`TargetHealth`] is kept per provider: `eject_after_failures` consecutive
//! failures eject it for `eject_ms`; then a single request tries it
//! (half-open): a success brings it back, a failure ejects it again. While
//! every target of a route is ejected the route is tried anyway, in order,
//! rather than failed unasked. A provider's key pool is benched credential
//! by credential the same way ([`crate::catalog`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use obleth_config::model::MAX_PROVIDER_TIMEOUT_MS;

use crate::catalog::Target;
use crate::settings::RoutingSettings;

/// The longest all of a request's attempts may wait for an upstream's
/// headers, from the first: the longest one provider may take.
pub const HEADERS_DEADLINE: Duration = Duration::from_millis(MAX_PROVIDER_TIMEOUT_MS as u64);

/// Milliseconds since the first call in this process: a monotonic clock
/// that fits an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What happened to a target's health after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth a metric or a log line.
    None,
    /// It was ejected now.
    Ejected,
    /// It was ejected and answered again.
    Recovered,
}

/// The passive health of one target: its consecutive failures and, while
/// ejected, until when.
#[derive(Debug, Default)]
pub struct TargetHealth {
    failures: AtomicU32,
    /// [`now_ms`] until which it is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// The one half-open trial is under way.
    probing: AtomicBool,
}

/// Whether a target takes traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    Healthy,
    /// Ejected, but its cool-down is over and no trial is under way: the
    /// next request may be that trial.
    Trial,
    Ejected,
}

impl TargetHealth {
    fn availability(&self, now: u64) -> Availability {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            Availability::Healthy
        } else if now >= until && !self.probing.load(Ordering::Acquire) {
            Availability::Trial
        } else {
            Availability::Ejected
        }
    }

    /// Claims the half-open trial; false when another request got it.
    fn claim_trial(&self) -> bool {
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the target is ejected now (its cool-down not over, or its
    /// trial under way).
    pub fn is_ejected(&self) -> bool {
        self.availability(now_ms()) == Availability::Ejected
    }

    /// The target answered (any status but a 5xx or 429).
    pub fn succeeded(&self) -> Transition {
        self.failures.store(0, Ordering::Release);
        let was = self.ejected_until.swap(0, Ordering::AcqRel);
        self.probing.store(false, Ordering::Release);
        if was == 0 {
            Transition::None
        } else {
            Transition::Recovered
        }
    }

    /// The target failed an attempt.
    pub fn failed(&self, settings: &RoutingSettings) -> Transition {
        let now = now_ms();
        if self.ejected_until.load(Ordering::Acquire) != 0 {
            // A failed trial, or a request sent while every target was out:
            // out again for a whole cool-down.
            self.ejected_until.store(
                now.saturating_add(settings.eject_ms).max(1),
                Ordering::Release,
            );
            self.probing.store(false, Ordering::Release);
            return Transition::None;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if settings.eject_after_failures > 0 && failures >= settings.eject_after_failures {
            self.ejected_until.store(
                now.saturating_add(settings.eject_ms).max(1),
                Ordering::Release,
            );
            Transition::Ejected
        } else {
            Transition::None
        }
    }
}

/// One attempt to make: the target, how long to wait before it, and the
/// longest it may wait for the upstream's headers.
#[derive(Debug)]
pub struct Step<'a> {
    pub index: usize,
    pub target: &'a Target,
    pub wait: Duration,
    pub headers_within: Duration,
}

#[derive(Debug, Clone, Default)]
struct TargetState {
    tries: u32,
    not_before: Option<Instant>,
    /// This target cannot take this request (its protocol refuses it).
    unusable: bool,
}

/// The attempts of one request over its route's targets.
#[derive(Debug)]
pub struct Attempts<'a> {
    targets: &'a [Target],
    settings: &'a RoutingSettings,
    started: Option<Instant>,
    made: u32,
    state: Vec<TargetState>,
    /// The order this request tries the targets in: indices into `targets`.
    order: Order,
    /// Where the next search in `order` begins.
    cursor: usize,
    /// A target to try again at once, before any other (the same provider
    /// with its next credential).
    again: Option<usize>,
}

/// The most targets an [`Order`] holds without allocating; the admin API
/// allows no more in a route.
const INLINE_TARGETS: usize = 16;

/// A permutation of a route's target indices, inline for routes of up to
/// [`INLINE_TARGETS`] targets.
#[derive(Debug, Clone)]
pub struct Order {
    inline: [u16; INLINE_TARGETS],
    heap: Vec<u16>,
    len: usize,
}

impl Order {
    /// The targets in route order.
    fn identity(n: usize) -> Order {
        let mut order = Order {
            inline: [0; INLINE_TARGETS],
            heap: Vec::new(),
            len: n,
        };
        if n > INLINE_TARGETS {
            order.heap = (0..n)
                .map(|i| u16::try_from(i).unwrap_or(u16::MAX))
                .collect();
        } else {
            for (slot, i) in order.inline.iter_mut().zip(0u16..) {
                *slot = i;
            }
        }
        order
    }

    pub fn as_slice(&self) -> &[u16] {
        if self.len > INLINE_TARGETS {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        if self.len > INLINE_TARGETS {
            &mut self.heap
        } else {
            &mut self.inline[..self.len]
        }
    }

    /// The target index at position `k`.
    fn at(&self, k: usize) -> usize {
        usize::from(self.as_slice()[k])
    }
}

/// The order one request tries `targets` in: by priority, lowest first
/// (route order breaks ties); within a priority, a weighted random draw
/// without replacement among targets of weight above 0, then those of
/// weight 0 in route order. `rng` is drawn from only for a priority shared
/// by two targets or more, so a plain route costs no random numbers.
pub fn plan_order<R: rand::Rng + ?Sized>(targets: &[Target], rng: &mut R) -> Order {
    let mut order = Order::identity(targets.len());
    let slots = order.as_mut_slice();
    // Insertion sort: stable, in place, and quick on the short, usually
    // already sorted lists routes are.
    for i in 1..slots.len() {
        let mut j = i;
        while j > 0 && priority(targets, slots[j - 1]) > priority(targets, slots[j]) {
            slots.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut start = 0;
    while start < slots.len() {
        let p = priority(targets, slots[start]);
        let mut end = start + 1;
        while end < slots.len() && priority(targets, slots[end]) == p {
            end += 1;
        }
        if end - start > 1 {
            weighted_shuffle(targets, &mut slots[start..end], rng);
        }
        start = end;
    }
    order
}

fn priority(targets: &[Target], slot: u16) -> u32 {
    targets[usize::from(slot)].priority
}

fn weight(targets: &[Target], slot: u16) -> u64 {
    u64::from(targets[usize::from(slot)].weight)
}

/// Orders one priority's targets by repeated weighted draws; each drawn
/// target is rotated to the front of what is left, which keeps the others,
/// standbys included, in route order.
fn weighted_shuffle<R: rand::Rng + ?Sized>(targets: &[Target], group: &mut [u16], rng: &mut R) {
    for pos in 0..group.len() {
        let total: u64 = group[pos..].iter().map(|&t| weight(targets, t)).sum();
        if total == 0 {
            // Only standbys are left, already in route order.
            return;
        }
        let mut draw = rng.random_range(0..total);
        let mut pick = pos;
        for (k, &t) in group.iter().enumerate().skip(pos) {
            let w = weight(targets, t);
            if draw < w {
                pick = k;
                break;
            }
            draw -= w;
        }
        group[pos..=pick].rotate_right(1);
    }
}

impl<'a> Attempts<'a> {
    /// The attempts of a request over `targets`, in an order of its own
    /// drawn with the thread's random number generator.
    pub fn new(targets: &'a [Target], settings: &'a RoutingSettings) -> Attempts<'a> {
        Attempts::in_order(targets, settings, plan_order(targets, &mut rand::rng()))
    }

    /// The attempts of a request over `targets` in `order` (from
    /// [`plan_order`]).
    pub fn in_order(
        targets: &'a [Target],
        settings: &'a RoutingSettings,
        order: Order,
    ) -> Attempts<'a> {
        Attempts {
            targets,
            settings,
            started: None,
            made: 0,
            state: vec![TargetState::default(); targets.len()],
            order,
            cursor: 0,
            again: None,
        }
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// The next attempt, or `None` when the attempts, the budget or the
    /// targets are used up. A target whose cool-down is over is claimed
    /// for its half-open trial here.
    pub fn next_step(&mut self) -> Option<Step<'a>> {
        if self.made >= self.settings.max_attempts || self.targets.is_empty() {
            return None;
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let elapsed = now.duration_since(started);
        let budget = Duration::from_millis(self.settings.retry_budget_ms);
        let clock = now_ms();
        let n = self.targets.len();
        let wait_of = |i: usize| {
            self.state[i]
                .not_before
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
        };
        let fits = |wait: Duration| self.made == 0 || elapsed + wait <= budget;
        if let Some(index) = self.again.take() {
            if fits(Duration::ZERO) {
                return Some(self.step(index, Duration::ZERO, elapsed));
            }
        }
        // Targets that take traffic, the soonest first (the request's order
        // breaks ties); when every usable one is ejected, those, as a last
        // resort.
        let mut pick = None;
        for fail_open in [false, true] {
            let mut best: Option<(usize, usize, Duration)> = None;
            for k in 0..n {
                let position = (self.cursor + k) % n;
                let i = self.order.at(position);
                if self.state[i].unusable {
                    continue;
                }
                let availability = self.targets[i].provider.health.availability(clock);
                if !fail_open && availability == Availability::Ejected {
                    continue;
                }
                let wait = wait_of(i);
                if !fits(wait) {
                    continue;
                }
                if best.is_none_or(|(_, _, w)| wait < w) {
                    best = Some((i, position, wait));
                }
            }
            if let Some((i, position, wait)) = best {
                let health = &self.targets[i].provider.health;
                if !fail_open
                    && health.availability(clock) == Availability::Trial
                    && !health.claim_trial()
                {
                    // Another request took the trial meanwhile: as ejected.
                    continue;
                }
                pick = Some((i, position, wait));
                break;
            }
        }
        let (index, position, wait) = pick?;
        self.cursor = (position + 1) % n;
        Some(self.step(index, wait, elapsed))
    }

    fn step(&mut self, index: usize, wait: Duration, elapsed: Duration) -> Step<'a> {
        self.made += 1;
        let headers_within = HEADERS_DEADLINE
            .saturating_sub(elapsed + wait)
            .max(Duration::from_millis(1));
        Step {
            index,
            target: &self.targets[index],
            wait,
            headers_within,
        }
    }

    /// Whether another attempt may start now: one is left and the budget
    /// is not spent.
    pub fn attempt_left(&self) -> bool {
        self.made < self.settings.max_attempts
            && self.started.is_none_or(|started| {
                started.elapsed() <= Duration::from_millis(self.settings.retry_budget_ms)
            })
    }

    /// The attempt at `index` failed for its credential only (a 429, 401
    /// or 403 from a provider with a key pool): the next attempt tries the
    /// same target again at once, with its next credential, if the
    /// attempts and the budget allow.
    pub fn again_at_once(&mut self, index: usize) {
        self.again = Some(index);
    }

    /// The attempt at `index` failed: the target waits its back-off, or
    /// `retry_after` when it sent one, before this request tries it again.
    pub fn failed(&mut self, index: usize, retry_after: Option<Duration>) {
        let state = &mut self.state[index];
        state.tries = state.tries.saturating_add(1);
        let wait = retry_after.unwrap_or_else(|| backoff(self.settings, state.tries));
        state.not_before = Some(Instant::now() + wait);
    }

    /// The attempt at `index` failed in a way another try of that target
    /// would repeat (an answer past `max_response_bytes`): only other
    /// targets are tried.
    pub fn done_with(&mut self, index: usize) {
        self.state[index].unusable = true;
    }

    /// The target at `index` cannot take this request at all: it is not
    /// tried again, and the step counts as no attempt.
    pub fn unusable(&mut self, index: usize) {
        self.state[index].unusable = true;
        self.made = self.made.saturating_sub(1);
    }
}

/// The back-off before a target's `tries`-th retry: `backoff_base_ms`
/// doubled each retry, capped at `backoff_max_ms`, with full jitter.
fn backoff(settings: &RoutingSettings, tries: u32) -> Duration {
    let exp = tries.saturating_sub(1).min(20);
    let ceiling = settings
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(settings.backoff_max_ms);
    Duration::from_millis(rand::random_range(0..=ceiling))
}

/// A `retry-after` header: seconds, or an HTTP date; `None` when absent or
/// unreadable.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::ProviderRuntime;
    use crate::settings::MockSettings;
    use obleth_config::model::ProviderKind;

    fn targets(n: usize) -> Vec<Target> {
        let plain: Vec<(u32, u32)> = (0..n).map(|i| (1, u32::try_from(i).unwrap())).collect();
        weighted(&plain)
    }

    /// Targets `p0`, `p1`... with these (weight, priority) pairs.
    fn weighted(spec: &[(u32, u32)]) -> Vec<Target> {
        spec.iter()
            .enumerate()
            .map(|(i, &(weight, priority))| Target {
                provider: Arc::new(ProviderRuntime::new(
                    format!("p{i}"),
                    ProviderKind::Mock,
                    "mock://".to_owned(),
                    None,
                    Duration::from_secs(5),
                    MockSettings::default(),
                    Default::default(),
                )),
                upstream_model: None,
                weight,
                priority,
            })
            .collect()
    }

    fn order_of(t: &[Target], rng: &mut impl rand::Rng) -> Vec<u16> {
        plan_order(t, rng).as_slice().to_vec()
    }

    fn seeded() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    #[test]
    fn a_route_without_priorities_or_weights_is_tried_in_route_order() {
        let t = targets(5);
        let mut rng = seeded();
        for _ in 0..100 {
            assert_eq!(order_of(&t, &mut rng), [0, 1, 2, 3, 4]);
        }
        let s = settings();
        let mut a = Attempts::new(&t, &s);
        for expected in 0..4 {
            let step = a.next_step().unwrap();
            assert_eq!(step.index, expected);
            a.failed(step.index, Some(Duration::from_secs(1)));
        }
        assert!(a.next_step().is_none(), "max_attempts");
    }

    #[test]
    fn priorities_come_lowest_first_and_a_shared_priority_is_shuffled_within() {
        // p1 and p3 share priority 0; then p2 (1), then p0 (5).
        let t = weighted(&[(1, 5), (1, 0), (1, 1), (1, 0)]);
        let mut rng = seeded();
        let mut firsts = [0u32; 4];
        for _ in 0..1_000 {
            let order = order_of(&t, &mut rng);
            let mut head = [order[0], order[1]];
            head.sort_unstable();
            assert_eq!(head, [1, 3], "{order:?}");
            assert_eq!(&order[2..], [2, 0], "{order:?}");
            firsts[usize::from(order[0])] += 1;
        }
        assert!(
            (400..=600).contains(&firsts[1]) && firsts[1] + firsts[3] == 1_000,
            "{firsts:?}"
        );
    }

    #[test]
    fn weights_split_the_first_attempts_in_proportion() {
        let t = weighted(&[(3, 0), (1, 0)]);
        let mut rng = seeded();
        let draws = 10_000;
        let first_is_heavy = (0..draws)
            .filter(|_| order_of(&t, &mut rng)[0] == 0)
            .count();
        // 3:1 is 7,500 of 10,000; the bounds are loose on purpose.
        assert!(
            (7_100..=7_900).contains(&first_is_heavy),
            "{first_is_heavy} of {draws}"
        );
        // The thread's generator splits too.
        let s = settings();
        let heavy = (0..2_000)
            .filter(|_| Attempts::new(&t, &s).next_step().unwrap().index == 0)
            .count();
        assert!((1_300..=1_700).contains(&heavy), "{heavy} of 2000");
    }

    #[test]
    fn standbys_of_weight_zero_come_after_the_others_in_route_order() {
        let t = weighted(&[(0, 0), (2, 0), (0, 0), (1, 0), (1, 1)]);
        let mut rng = seeded();
        for _ in 0..1_000 {
            let order = order_of(&t, &mut rng);
            let mut head = [order[0], order[1]];
            head.sort_unstable();
            assert_eq!(head, [1, 3], "{order:?}");
            assert_eq!(&order[2..], [0, 2, 4], "{order:?}");
        }
        // A priority of standbys only keeps route order.
        let t = weighted(&[(0, 0), (0, 0), (0, 0)]);
        assert_eq!(order_of(&t, &mut rng), [0, 1, 2]);
    }

    #[test]
    fn the_attempts_follow_the_planned_order_and_skip_ejected_targets() {
        let t = weighted(&[(1, 0), (1, 0), (1, 0)]);
        let s = settings();
        let mut order = Order::identity(3);
        order.as_mut_slice().copy_from_slice(&[2, 0, 1]);
        let mut a = Attempts::in_order(&t, &s, order.clone());
        let picks: Vec<usize> = (0..3)
            .map(|_| {
                let step = a.next_step().unwrap();
                a.failed(step.index, Some(Duration::from_secs(1)));
                step.index
            })
            .collect();
        assert_eq!(picks, [2, 0, 1]);
        t[2].provider.health.failed(&s);
        t[2].provider.health.failed(&s);
        let mut a = Attempts::in_order(&t, &s, order);
        assert_eq!(a.next_step().unwrap().index, 0, "ejected p2 passed over");
    }

    #[test]
    fn a_credential_failure_tries_the_same_target_again_at_once() {
        let t = targets(2);
        let s = settings();
        let mut a = Attempts::new(&t, &s);
        assert_eq!(a.next_step().unwrap().index, 0);
        a.again_at_once(0);
        let again = a.next_step().unwrap();
        assert_eq!((again.index, again.wait), (0, Duration::ZERO));
        a.failed(0, Some(Duration::from_secs(5)));
        assert_eq!(a.next_step().unwrap().index, 1);
        assert_eq!(a.made(), 3, "the second try counts as an attempt");
        assert!(a.attempt_left());
        a.failed(1, None);
        assert!(a.next_step().is_some());
        assert!(!a.attempt_left(), "max_attempts spent");
    }

    #[test]
    fn routes_longer_than_the_inline_order_are_planned_too() {
        let spec: Vec<(u32, u32)> = (0..20).map(|i| (1, i % 2)).collect();
        let t = weighted(&spec);
        let order = order_of(&t, &mut seeded());
        assert_eq!(order.len(), 20);
        assert!(order[..10].iter().all(|&i| i % 2 == 0), "{order:?}");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<u16>>());
    }

    fn settings() -> RoutingSettings {
        RoutingSettings {
            max_attempts: 4,
            retry_budget_ms: 10_000,
            backoff_base_ms: 1,
            backoff_max_ms: 1,
            eject_after_failures: 2,
            eject_ms: 60_000,
        }
    }

    #[test]
    fn failures_move_on_in_route_order_then_come_back_after_the_back_off() {
        let t = targets(2);
        let s = settings();
        let mut a = Attempts::new(&t, &s);
        let first = a.next_step().unwrap();
        assert_eq!((first.index, first.wait), (0, Duration::ZERO));
        a.failed(0, None);
        let second = a.next_step().unwrap();
        assert_eq!((second.index, second.wait), (1, Duration::ZERO));
        a.failed(1, Some(Duration::from_secs(5)));
        // Target 0's back-off (at most 1 ms) is shorter than 1's retry-after.
        let third = a.next_step().unwrap();
        assert_eq!(third.index, 0);
        assert!(third.wait <= Duration::from_millis(1));
        a.failed(0, Some(Duration::from_secs(60)));
        // 60 s does not fit the 10 s budget; 1's 5 s does.
        let fourth = a.next_step().unwrap();
        assert_eq!(fourth.index, 1);
        assert!(fourth.wait > Duration::from_secs(4), "{:?}", fourth.wait);
        assert!(a.next_step().is_none(), "max_attempts");
    }

    #[test]
    fn an_unusable_target_is_skipped_and_a_budget_ends_the_attempts() {
        let t = targets(2);
        let s = RoutingSettings {
            retry_budget_ms: 0,
            ..settings()
        };
        let mut a = Attempts::new(&t, &s);
        assert_eq!(a.next_step().unwrap().index, 0);
        a.unusable(0);
        assert_eq!(a.next_step().unwrap().index, 1);
        assert_eq!(a.made(), 1, "the unusable target cost no attempt");
        a.failed(1, None);
        assert!(a.next_step().is_none(), "no budget for a retry");
    }

    #[test]
    fn consecutive_failures_eject_then_one_trial_brings_it_back() {
        let s = RoutingSettings {
            eject_ms: 1,
            ..settings()
        };
        let h = TargetHealth::default();
        assert_eq!(h.failed(&s), Transition::None);
        assert_eq!(
            h.succeeded(),
            Transition::None,
            "a success resets the count"
        );
        assert_eq!(h.failed(&s), Transition::None);
        assert_eq!(h.failed(&s), Transition::Ejected);
        std::thread::sleep(Duration::from_millis(5));
        let now = now_ms();
        assert_eq!(h.availability(now), Availability::Trial);
        assert!(h.claim_trial());
        assert!(!h.claim_trial(), "one trial at a time");
        assert_eq!(h.availability(now), Availability::Ejected);
        // The trial fails: out again.
        assert_eq!(h.failed(&s), Transition::None);
        assert!(h.ejected_until.load(Ordering::Acquire) != 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.claim_trial());
        assert_eq!(h.succeeded(), Transition::Recovered);
        assert_eq!(h.availability(now_ms()), Availability::Healthy);
    }

    #[test]
    fn ejected_targets_are_passed_over_unless_every_target_is_out() {
        let t = targets(2);
        let s = settings();
        t[0].provider.health.failed(&s);
        t[0].provider.health.failed(&s);
        let mut a = Attempts::new(&t, &s);
        assert_eq!(a.next_step().unwrap().index, 1);
        t[1].provider.health.failed(&s);
        t[1].provider.health.failed(&s);
        let mut b = Attempts::new(&t, &s);
        assert_eq!(
            b.next_step().unwrap().index,
            0,
            "all out: tried anyway, in order"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let date = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(http::header::RETRY_AFTER, date.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d >= Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
