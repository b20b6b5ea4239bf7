//! Rate limits and budgets, shared by every gateway on one database.
//!
//! Each limit of a key or team is a counter per window: requests and tokens
//! per clock minute (with the previous minute weighted by its overlap, a
//! sliding window), tokens and micro-dollars per budget period. The fleet's
//! count of each lives in `quota_counters`; a gateway admits from a lease it
//! borrowed from that row, so the request path never waits on PostgreSQL.
//! The background sync ([`sync`]) refills a lease when it runs low, charges
//! what was admitted beyond it, and hands unused budget leases back. A
//! request may overdraw an empty lease by a little (two requests, or one
//! request's reservation) while the fleet's counter is not known to be
//! spent: that overdraft is the whole of the overshoot, so the fleet admits
//! at most `limit + live gateways × overdraft`. Token and spend amounts are
//! reserved at admission (an estimate) and settled when the request ends.
//! Without a database a gateway counts alone ([`counter::Admit::Local`]);
//! while the database is away, each gateway admits its share, the limit
//! divided by the live gateways.

mod counter;
mod shards;
pub mod sync;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use obleth_config::db::quota::Dimension;
use obleth_config::model::{BudgetPeriod, Team};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::ApiError;
use crate::keycache::KeyRecord;
use counter::{Admit, Counter};

/// Requests a gateway may always admit beyond its lease while the fleet's
/// counter is not known to be spent (per counter); tokens and spend may
/// always overdraw one request's reservation.
pub const REQUEST_OVERDRAFT: i64 = 2;

/// A larger limit allows a larger overdraft, so that a key's first requests
/// on a gateway (before its first lease arrives) are not refused: up to this
/// many requests or reservations...
const OVERDRAFT_MAX_REQUESTS: i64 = 16;
/// ...as long as the whole fleet's overdraft stays within this share of
/// the limit.
const OVERDRAFT_SHARE_OF_LIMIT: i64 = 10;

/// What a gateway may admit beyond its lease on a counter of `limit` for
/// requests of `amount`: the base (two requests, or one reservation), or,
/// when more, up to the more of 16 requests' worth and what this gateway
/// took in [`OVERDRAFT_HORIZON`] at its recent rate (`pace`, from
/// `Counter::overdraft_pace`), as long as the live gateways together stay
/// within a tenth of the limit. The rate's part is what carries a busy key
/// over the round trip of a lease call: at a new minute, whose counter
/// starts empty, 16 requests last about a millisecond at 13,000 a second.
pub fn overdraft(
    dimension: Dimension,
    limit: i64,
    amount: i64,
    live_gateways: i64,
    pace: f64,
) -> i64 {
    let base = if dimension == Dimension::Requests {
        REQUEST_OVERDRAFT
    } else {
        amount
    };
    let share = limit / (OVERDRAFT_SHARE_OF_LIMIT * live_gateways.max(1));
    let by_rate = (pace * OVERDRAFT_HORIZON.as_secs_f64()).ceil() as i64;
    let wanted = amount.saturating_mul(OVERDRAFT_MAX_REQUESTS).max(by_rate);
    base.max(share.min(wanted))
}

/// The rate part of the overdraft: this much of a counter's recent traffic.
const OVERDRAFT_HORIZON: std::time::Duration = std::time::Duration::from_millis(100);

/// What a request is expected to use, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub tokens: i64,
    pub micros: i64,
}

/// One counter: a subject (key or team), what it counts, and its window
/// (the minute's or the period's start, in Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterId {
    pub subject: Uuid,
    pub dimension: Dimension,
    pub window: i64,
}

#[derive(Debug, Clone)]
struct Slot {
    counter: Arc<Mutex<Counter>>,
    period: Option<BudgetPeriod>,
}

/// The quota state of this gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct Quota(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    enabled: bool,
    /// Counters are shared through the database (database mode).
    database: bool,
    /// The database is away: admit this gateway's share.
    fallback: AtomicBool,
    /// Live gateways (this one included), from `nodes`.
    live: AtomicI64,
    counters: shards::Shards,
    pending: Mutex<HashSet<CounterId>>,
    wake: Notify,
    /// Notified after every answered or failed lease call, for requests
    /// waiting on a lease under way ([`Quota::admit`]).
    synced: Notify,
}

/// How long a request refused while a lease may still come waits for it
/// before the refusal stands: a fresh counter's first lease, or a refill
/// under way, is one database round trip.
pub const LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// One limit a request is judged against.
struct Check {
    subject: Uuid,
    owner: &'static str,
    dimension: Dimension,
    limit: i64,
    period: Option<BudgetPeriod>,
    amount: i64,
}

struct Take {
    counter: Arc<Mutex<Counter>>,
    id: CounterId,
    dimension: Dimension,
    amount: i64,
}

/// The reservations of an admitted request. Settle it with what the request
/// used; dropping it unsettled settles it as having used nothing.
#[derive(Default)]
pub struct Admission {
    quota: Option<Quota>,
    takes: Vec<Take>,
    /// The `x-ratelimit-*` headers for the answer.
    pub headers: HeaderMap,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("counters", &self.takes.len())
            .finish_non_exhaustive()
    }
}

fn unix(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn minute_start(at: DateTime<Utc>) -> i64 {
    unix(at).div_euclid(60) * 60
}

impl Quota {
    /// `database`: counters are shared through PostgreSQL; otherwise this
    /// gateway counts alone.
    pub fn new(enabled: bool, database: bool) -> Quota {
        Quota(Arc::new(Shared {
            enabled,
            database,
            fallback: AtomicBool::new(false),
            live: AtomicI64::new(1),
            counters: shards::Shards::default(),
            pending: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            synced: Notify::new(),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// Whether the gateway is admitting its share because the database is away.
    pub fn in_fallback(&self) -> bool {
        self.0.fallback.load(Ordering::Acquire)
    }

    /// Why limits fall back to this gateway's share, while they do.
    pub fn fallback_reason(&self) -> Option<String> {
        self.in_fallback().then(|| {
            format!(
                "quota database unreachable: each limit falls back to this gateway's share (limit / {} live gateways)",
                self.live_gateways()
            )
        })
    }

    pub fn live_gateways(&self) -> i64 {
        self.0.live.load(Ordering::Acquire).max(1)
    }

    /// Admits a request of `key` (and its `team`) expecting `demand`, or
    /// refuses it: budgets first, then rate limits, all or nothing.
    ///
    /// In database mode a refusal by a counter the fleet has not reported
    /// spent (its lease is being fetched, or refilled) waits for the lease
    /// call under way, up to [`LEASE_WAIT`], and the request is judged
    /// again: a budget with room left is not refused because this gateway's
    /// share of it is still on its way. A counter the fleet reported spent
    /// refuses at once.
    pub async fn admit(
        &self,
        key: &KeyRecord,
        team: Option<&Team>,
        demand: Demand,
    ) -> Result<Admission, ApiError> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            // Registered before judging, so a sync that ends in between is
            // not missed.
            let synced = self.0.synced.notified();
            tokio::pin!(synced);
            synced.as_mut().enable();
            match self.judge(key, team, demand, Utc::now()) {
                Ok(admission) => return Ok(admission),
                Err((error, false)) => return Err(error),
                Err((error, true)) => {
                    if tokio::time::timeout_at(deadline, synced).await.is_err() {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Wakes the requests waiting in [`Quota::admit`]: a lease call ended.
    pub(crate) fn synced(&self) {
        self.0.synced.notify_waiters();
    }

    pub fn admit_at(
        &self,
        key: &KeyRecord,
        team: Option<&Team>,
        demand: Demand,
        now_utc: DateTime<Utc>,
    ) -> Result<Admission, ApiError> {
        self.judge(key, team, demand, now_utc)
            .map_err(|(error, _)| error)
    }

    /// [`Quota::admit_at`], answering with a refusal whether a lease under
    /// way may lift it: database mode, not in fallback, and the refusing
    /// counter not reported spent by the fleet.
    fn judge(
        &self,
        key: &KeyRecord,
        team: Option<&Team>,
        demand: Demand,
        now_utc: DateTime<Utc>,
    ) -> Result<Admission, (ApiError, bool)> {
        if !self.0.enabled {
            return Ok(Admission::default());
        }
        let checks = checks(key, team, demand);
        if checks.is_empty() {
            return Ok(Admission::default());
        }
        let now = Instant::now();
        let mut admission = Admission {
            quota: Some(self.clone()),
            takes: Vec::with_capacity(checks.len()),
            headers: HeaderMap::new(),
        };
        let mut urgent = false;
        let mut refusal = None;
        let mut may_lift = false;
        // What is left of each rate limit, as the counter stood once this
        // request was judged, for the `x-ratelimit-*` headers.
        let mut left: Vec<(Dimension, i64, i64)> = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            let id = self.counter_id(check, now_utc);
            let counter = self.counter(id, check.limit, check.period, now);
            // Read before the counter is locked: the previous minute's
            // counter is another lock.
            let carry = if !self.0.database && check.dimension.per_minute() {
                self.carry(&id, now_utc)
            } else {
                0
            };
            let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
            let how = self.admit_mode(check, &c, carry);
            c.limit = check.limit;
            let taken = c.take(check.amount, how, now);
            if check.dimension.per_minute() {
                left.push((check.dimension, check.limit, c.remaining(how)));
            }
            let queue = c.wants_sync;
            urgent |= taken && queue && !c.exhausted;
            if !taken {
                may_lift = self.0.database && !self.in_fallback() && !c.exhausted;
            }
            drop(c);
            if queue && self.0.database {
                self.queue(id);
            }
            if !taken {
                refusal = Some((check, i));
                break;
            }
            admission.takes.push(Take {
                counter,
                id,
                dimension: check.dimension,
                amount: check.amount,
            });
        }
        if urgent && self.0.database {
            self.0.wake.notify_one();
        }
        if let Some((check, i)) = refusal {
            // The rate limits after the refusing one were not judged; their
            // headers say where they stand.
            for later in checks[i + 1..].iter().filter(|c| c.dimension.per_minute()) {
                left.push((later.dimension, later.limit, self.remaining(later, now_utc)));
            }
            admission.roll_back();
            if may_lift {
                // The refusing counter was queued: have its sync start now.
                self.0.wake.notify_one();
            }
            return Err((
                refusal_error(check, now_utc, headers(&left, now_utc)),
                may_lift,
            ));
        }
        admission.headers = headers(&left, now_utc);
        Ok(admission)
    }

    fn counter_id(&self, check: &Check, now_utc: DateTime<Utc>) -> CounterId {
        let window = match check.period {
            Some(period) => unix(period.start(now_utc)),
            None => minute_start(now_utc),
        };
        CounterId {
            subject: check.subject,
            dimension: check.dimension,
            window,
        }
    }

    /// What is left of a rate limit this request did not judge: the whole
    /// limit when this gateway holds no counter for it yet.
    fn remaining(&self, check: &Check, now_utc: DateTime<Utc>) -> i64 {
        let id = self.counter_id(check, now_utc);
        let Some(counter) = self.peek(&id) else {
            return check.limit;
        };
        let carry = if self.0.database {
            0
        } else {
            self.carry(&id, now_utc)
        };
        let c = counter.lock().unwrap_or_else(|e| e.into_inner());
        c.remaining(self.admit_mode(check, &c, carry))
    }

    fn counter(
        &self,
        id: CounterId,
        limit: i64,
        period: Option<BudgetPeriod>,
        now: Instant,
    ) -> Arc<Mutex<Counter>> {
        let mut counters = self.0.counters.lock(&id);
        if let Some(slot) = counters.get(&id) {
            return Arc::clone(&slot.counter);
        }
        // A new minute starts from the previous minute's pace here, so its
        // first lease is sized for the traffic it will see.
        let mut counter = Counter::new(limit, now);
        if period.is_none() {
            let previous = CounterId {
                window: id.window - 60,
                ..id
            };
            if let Some(slot) = counters.get(&previous) {
                counter.follow(&slot.counter.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
        let counter = Arc::new(Mutex::new(counter));
        counters.insert(
            id,
            Slot {
                counter: Arc::clone(&counter),
                period,
            },
        );
        counter
    }

    fn peek(&self, id: &CounterId) -> Option<Arc<Mutex<Counter>>> {
        self.0
            .counters
            .lock(id)
            .get(id)
            .map(|s| Arc::clone(&s.counter))
    }

    /// How `check` is admitted now: alone (embedded), by this gateway's
    /// share (database away), or from the lease.
    /// `carry`: in embedded mode, the previous minute's weighted admissions.
    fn admit_mode(&self, check: &Check, c: &Counter, carry: i64) -> Admit {
        let per_minute = check.dimension.per_minute();
        // Requests are counted exactly when counting alone; a token or spend
        // reservation may overdraw what is left once, so that a request
        // without max_tokens can still spend the last of a budget.
        let local_overdraft = if check.dimension == Dimension::Requests {
            0
        } else {
            check.amount
        };
        if !self.0.database {
            return Admit::Local {
                allowance: check.limit - carry,
                overdraft: local_overdraft,
            };
        }
        let live = self.live_gateways();
        if !self.in_fallback() {
            return Admit::Shared {
                overdraft: overdraft(
                    check.dimension,
                    check.limit,
                    check.amount,
                    live,
                    c.overdraft_pace(),
                ),
            };
        }
        let allowance = if per_minute {
            // This window's share, less what was admitted here before the
            // database went away.
            div_ceil(check.limit, live) - (c.admitted_here - c.offline_taken)
        } else {
            div_ceil((c.ceiling - c.fleet_used).max(0), live)
        };
        Admit::Local {
            allowance,
            overdraft: local_overdraft,
        }
    }

    /// Embedded mode's sliding window: the previous minute's admissions
    /// weighted by how much of it still overlaps the last 60 seconds.
    fn carry(&self, id: &CounterId, now_utc: DateTime<Utc>) -> i64 {
        let previous = CounterId {
            window: id.window - 60,
            ..*id
        };
        let Some(counter) = self.peek(&previous) else {
            return 0;
        };
        let admitted = counter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admitted_here
            .max(0);
        let into = (now_utc.timestamp_millis() - id.window * 1000) as f64 / 60_000.0;
        (admitted as f64 * (1.0 - into.clamp(0.0, 1.0))).ceil() as i64
    }

    fn queue(&self, id: CounterId) {
        self.0
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }
}

/// The `x-ratelimit-*` headers from what is `left` of each rate limit: for
/// requests and tokens, the limit and what remains of the stricter of the
/// key's and the team's.
fn headers(left: &[(Dimension, i64, i64)], now_utc: DateTime<Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let reset = 60 - now_utc.timestamp().rem_euclid(60);
    for (dimension, [limit_name, remaining_name, reset_name]) in [
        (
            Dimension::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            Dimension::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        let strictest = left
            .iter()
            .filter(|(d, _, _)| *d == dimension)
            .map(|(_, limit, remaining)| (*limit, (*remaining).min(*limit).max(0)))
            .min_by_key(|(_, remaining)| *remaining);
        if let Some((limit, remaining)) = strictest {
            headers.insert(
                HeaderName::from_static(limit_name),
                HeaderValue::from(limit),
            );
            headers.insert(
                HeaderName::from_static(remaining_name),
                HeaderValue::from(remaining),
            );
            headers.insert(HeaderName::from_static(reset_name), reset_value(reset));
        }
    }
    headers
}

/// `Ns` for the seconds until the window resets (1 to 60).
fn reset_value(seconds: i64) -> HeaderValue {
    let mut buf = [0u8; 24];
    let mut out = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut out, format_args!("{seconds}s"));
    let used = 24 - out.len();
    HeaderValue::from_bytes(&buf[..used]).unwrap_or_else(|_| HeaderValue::from_static("60s"))
}

fn div_ceil(a: i64, b: i64) -> i64 {
    let b = b.max(1);
    (a + b - 1).div_euclid(b)
}

/// The limits that apply to a request: the key's and its team's budgets,
/// then their rate limits. Where both set one, both are checked, so the
/// stricter holds.
fn checks(key: &KeyRecord, team: Option<&Team>, demand: Demand) -> Vec<Check> {
    // An unpriced request reserves one micro-dollar, so a spent spend
    // budget refuses it too; the settlement gives it back.
    let micros = demand.micros.max(1);
    let tokens = demand.tokens.max(1);
    let mut checks = Vec::new();
    let mut subject = |id: Uuid,
                       owner: &'static str,
                       token_budget: Option<i64>,
                       budget_usd_micros: Option<i64>,
                       period: BudgetPeriod| {
        if let Some(limit) = token_budget {
            checks.push(Check {
                subject: id,
                owner,
                dimension: Dimension::BudgetTokens,
                limit,
                period: Some(period),
                amount: tokens,
            });
        }
        if let Some(limit) = budget_usd_micros {
            checks.push(Check {
                subject: id,
                owner,
                dimension: Dimension::BudgetMicros,
                limit,
                period: Some(period),
                amount: micros,
            });
        }
    };
    subject(
        key.id,
        "API key",
        key.token_budget(),
        key.budget_usd_micros(),
        key.budget_period,
    );
    if let Some(team) = team {
        subject(
            team.id,
            "team",
            team.token_budget,
            team.budget_usd_micros,
            team.budget_period,
        );
    }
    let mut rate = |id: Uuid, owner: &'static str, rpm: Option<i32>, tpm: Option<i32>| {
        if let Some(limit) = rpm {
            checks.push(Check {
                subject: id,
                owner,
                dimension: Dimension::Requests,
                limit: i64::from(limit),
                period: None,
                amount: 1,
            });
        }
        if let Some(limit) = tpm {
            checks.push(Check {
                subject: id,
                owner,
                dimension: Dimension::Tokens,
                limit: i64::from(limit),
                period: None,
                amount: tokens,
            });
        }
    };
    rate(key.id, "API key", key.rpm_limit(), key.tpm_limit());
    if let Some(team) = team {
        rate(team.id, "team", team.rpm_limit, team.tpm_limit);
    }
    checks
}

fn refusal_error(check: &Check, now_utc: DateTime<Utc>, headers: HeaderMap) -> ApiError {
    match check.dimension {
        Dimension::Requests | Dimension::Tokens => ApiError::RateLimited {
            what: if check.dimension == Dimension::Requests {
                "requests"
            } else {
                "tokens"
            },
            owner: check.owner,
            limit: check.limit,
            retry_after_secs: u64::try_from(60 - now_utc.timestamp().rem_euclid(60)).unwrap_or(60),
            headers: Box::new(headers),
        },
        Dimension::BudgetTokens | Dimension::BudgetMicros => {
            let period = check.period.unwrap_or_default();
            ApiError::BudgetExhausted {
                what: if check.dimension == Dimension::BudgetTokens {
                    "token"
                } else {
                    "spend"
                },
                owner: check.owner,
                period: period.as_str(),
                retry_after_secs: period
                    .next_start(now_utc)
                    .map(|at| u64::try_from((at - now_utc).num_seconds().max(1)).unwrap_or(1)),
            }
        }
    }
}

impl Admission {
    /// Settles the reservations against what the request used: tokens
    /// (reported or estimated) and its cost in micro-dollars.
    pub fn settle(mut self, tokens: i64, micros: i64) {
        self.settle_with(tokens, micros);
    }

    fn settle_with(&mut self, tokens: i64, micros: i64) {
        let Some(quota) = self.quota.take() else {
            return;
        };
        for take in self.takes.drain(..) {
            let used = match take.dimension {
                Dimension::Requests => continue,
                Dimension::Tokens | Dimension::BudgetTokens => tokens.max(0),
                Dimension::BudgetMicros => micros.max(0),
            };
            let delta = take.amount - used;
            if delta == 0 {
                continue;
            }
            let mut c = take.counter.lock().unwrap_or_else(|e| e.into_inner());
            c.adjust(delta);
            let queue = c.wants_sync;
            drop(c);
            if queue && quota.0.database {
                quota.queue(take.id);
            }
        }
    }

    /// Gives every reservation back: the request was refused by a later check.
    fn roll_back(&mut self) {
        for take in self.takes.drain(..) {
            take.counter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .adjust(take.amount);
        }
        self.quota = None;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.settle_with(0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use obleth_config::db::key_store::KeyColumns;
    use obleth_config::model::ApiKey;

    /// The record of `key`, as the key store keeps it.
    fn record(key: &ApiKey) -> KeyRecord {
        KeyRecord::new(&KeyColumns::of_key(key), None)
    }

    fn key(rpm: Option<i32>) -> ApiKey {
        let now = Utc::now();
        ApiKey {
            id: Uuid::new_v4(),
            public_id: "abc123def456".to_owned(),
            secret_hash: vec![0; 32],
            name: String::new(),
            owner: None,
            allowed_models: vec![],
            rpm_limit: rpm,
            tpm_limit: None,
            token_budget: None,
            expires_at: None,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            previous_secret_hash: None,
            previous_expires_at: None,
            team_id: None,
            budget_usd_micros: None,
            budget_period: BudgetPeriod::Total,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn embedded_rpm_holds_and_answers_headers() {
        let quota = Quota::new(true, false);
        let k = key(Some(3));
        let t = at("2026-11-28T10:00:10Z");
        for left in [2, 1, 0] {
            let a = quota
                .admit_at(&record(&k), None, Demand::default(), t)
                .unwrap();
            assert_eq!(
                a.headers["x-ratelimit-remaining-requests"],
                left.to_string().as_str()
            );
            assert_eq!(a.headers["x-ratelimit-limit-requests"], "3");
        }
        match quota.admit_at(&record(&k), None, Demand::default(), t) {
            Err(ApiError::RateLimited {
                retry_after_secs,
                owner,
                ..
            }) => assert_eq!((retry_after_secs, owner), (50, "API key")),
            other => panic!("{other:?}"),
        }
        // Half of the next minute later, half of the previous minute counts.
        let later = at("2026-11-28T10:01:30Z");
        assert!(quota
            .admit_at(&record(&k), None, Demand::default(), later)
            .is_ok());
        assert!(quota
            .admit_at(&record(&k), None, Demand::default(), later)
            .is_err());
    }

    #[test]
    fn the_stricter_of_key_and_team_holds_and_a_refusal_rolls_back() {
        let quota = Quota::new(true, false);
        let k = key(Some(10));
        let now = Utc::now();
        let team = Team {
            id: Uuid::new_v4(),
            name: "t".to_owned(),
            rpm_limit: Some(2),
            tpm_limit: None,
            token_budget: None,
            budget_usd_micros: None,
            budget_period: BudgetPeriod::Total,
            created_at: now,
            updated_at: now,
        };
        let t = at("2026-11-28T10:00:00Z");
        assert!(quota
            .admit_at(&record(&k), Some(&team), Demand::default(), t)
            .is_ok());
        assert!(quota
            .admit_at(&record(&k), Some(&team), Demand::default(), t)
            .is_ok());
        match quota.admit_at(&record(&k), Some(&team), Demand::default(), t) {
            Err(ApiError::RateLimited { owner, .. }) => assert_eq!(owner, "team"),
            other => panic!("{other:?}"),
        }
        // The key's own counter was given back on the team's refusal.
        let id = CounterId {
            subject: k.id,
            dimension: Dimension::Requests,
            window: minute_start(t),
        };
        let admitted = quota.peek(&id).unwrap().lock().unwrap().admitted_here;
        assert_eq!(admitted, 2);
    }

    #[test]
    fn budgets_reserve_settle_and_reset_with_their_period() {
        let quota = Quota::new(true, false);
        let mut k = key(None);
        k.budget_usd_micros = Some(1000);
        k.budget_period = BudgetPeriod::Day;
        let t = at("2026-11-28T23:59:00Z");
        let demand = Demand {
            tokens: 10,
            micros: 600,
        };
        let a = quota.admit_at(&record(&k), None, demand, t).unwrap();
        // A second reservation overdraws what is left once; a third finds
        // nothing left.
        let b = quota.admit_at(&record(&k), None, demand, t).unwrap();
        assert!(quota.admit_at(&record(&k), None, demand, t).is_err());
        a.settle(10, 100);
        b.settle(10, 850);
        // 950 of 1000 spent: one more request may spend the rest.
        let c = quota.admit_at(&record(&k), None, demand, t).unwrap();
        match quota.admit_at(&record(&k), None, demand, t) {
            Err(ApiError::BudgetExhausted {
                what,
                period,
                retry_after_secs,
                ..
            }) => assert_eq!((what, period, retry_after_secs), ("spend", "day", Some(60))),
            other => panic!("{other:?}"),
        }
        c.settle(10, 40);
        // Past midnight UTC the day's budget is whole again.
        assert!(quota
            .admit_at(&record(&k), None, demand, at("2026-11-29T00:00:01Z"))
            .is_ok());
    }

    #[test]
    fn a_dropped_admission_gives_its_reservation_back() {
        let quota = Quota::new(true, false);
        let mut k = key(None);
        k.token_budget = Some(100);
        let t = Utc::now();
        let demand = Demand {
            tokens: 80,
            micros: 0,
        };
        drop(quota.admit_at(&record(&k), None, demand, t).unwrap());
        assert!(quota.admit_at(&record(&k), None, demand, t).is_ok());
    }

    #[test]
    fn the_overdraft_grows_with_the_limit_up_to_a_tenth_of_it() {
        use Dimension::*;
        assert_eq!(overdraft(Requests, 60, 1, 3, 0.0), 2);
        assert_eq!(overdraft(Requests, 30, 1, 2, 0.0), 2);
        assert_eq!(overdraft(Requests, 600, 1, 3, 0.0), 16, "20 capped at 16");
        assert_eq!(overdraft(Requests, 300, 1, 3, 0.0), 10);
        assert_eq!(overdraft(Requests, 1_000_000, 1, 3, 0.0), 16);
        assert_eq!(
            overdraft(Tokens, 1_000, 500, 3, 0.0),
            500,
            "one reservation"
        );
        assert_eq!(overdraft(Tokens, 1_000_000, 1_000, 2, 0.0), 16_000);
        assert_eq!(overdraft(BudgetMicros, 90_000, 1_000, 3, 0.0), 3_000);
        // A busy counter may overdraw 100 ms of its recent traffic, still
        // within a tenth of the limit over the live gateways.
        assert_eq!(overdraft(Requests, 1_000_000_000, 1, 1, 13_000.0), 1_300);
        assert_eq!(overdraft(Requests, 60_000, 1, 3, 13_000.0), 1_300);
        assert_eq!(overdraft(Requests, 6_000, 1, 3, 13_000.0), 200);
        assert_eq!(overdraft(Requests, 600, 1, 3, 13_000.0), 20);
    }

    #[test]
    fn disabled_limits_admit_everything() {
        let quota = Quota::new(false, false);
        let k = key(Some(1));
        for _ in 0..5 {
            assert!(quota
                .admit_at(&record(&k), None, Demand::default(), Utc::now())
                .is_ok());
        }
    }
}
