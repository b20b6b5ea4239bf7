//! Resilience routing: which of a route's targets each upstream attempt of
//! a request goes to, how long it waits first, and the passive health of
//! every target.
//!
//! A request makes at most `routing.max_attempts` attempts over its route's
//! targets, before its first byte reaches the client. An attempt that fails
//! (a 5xx, a 429, no connection, a timeout) moves on to the next target in
//! the route's order at once; a target is tried again only after its
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
//! rather than failed unasked.

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
    /// Where the next search in route order begins.
    cursor: usize,
}

impl<'a> Attempts<'a> {
    pub fn new(targets: &'a [Target], settings: &'a RoutingSettings) -> Attempts<'a> {
        Attempts {
            targets,
            settings,
            started: None,
            made: 0,
            state: vec![TargetState::default(); targets.len()],
            cursor: 0,
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
        let order: Vec<usize> = (0..n).map(|k| (self.cursor + k) % n).collect();
        let wait_of = |i: usize| {
            self.state[i]
                .not_before
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
        };
        let fits = |wait: Duration| self.made == 0 || elapsed + wait <= budget;
        // Targets that take traffic, the soonest first (route order breaks
        // ties); when every usable one is ejected, those, as a last resort.
        let mut pick = None;
        for fail_open in [false, true] {
            let mut best: Option<(usize, Duration)> = None;
            for &i in &order {
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
                if best.is_none_or(|(_, w)| wait < w) {
                    best = Some((i, wait));
                }
            }
            if let Some((i, wait)) = best {
                let health = &self.targets[i].provider.health;
                if !fail_open
                    && health.availability(clock) == Availability::Trial
                    && !health.claim_trial()
                {
                    // Another request took the trial meanwhile: as ejected.
                    continue;
                }
                pick = Some((i, wait));
                break;
            }
        }
        let (index, wait) = pick?;
        self.made += 1;
        self.cursor = (index + 1) % n;
        let headers_within = HEADERS_DEADLINE
            .saturating_sub(elapsed + wait)
            .max(Duration::from_millis(1));
        Some(Step {
            index,
            target: &self.targets[index],
            wait,
            headers_within,
        })
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
        (0..n)
            .map(|i| Target {
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
                weight: 1,
                priority: u32::try_from(i).unwrap(),
            })
            .collect()
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
