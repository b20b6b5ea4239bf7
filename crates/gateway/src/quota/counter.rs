//! One quota counter as this gateway holds it: the lease it may spend
//! without asking the database, its debt, and what the fleet last said.
//!
//! `balance` is the heart of it. A positive balance is quota the database
//! already granted this gateway (it is counted in the fleet's use); a
//! negative one is what this gateway admitted beyond its lease, owed to the
//! database and charged by the next sync. Requests spend it, settlements
//! give back what a reservation did not use or take what it missed, and the
//! sync ([`Counter::begin_sync`], [`Counter::finish_sync`]) trades debts for
//! fresh leases.

use std::time::{Duration, Instant};

use obleth_config::db::quota::LeaseGrant;

/// A lease is at most this many times one request's amount, or what this
/// gateway takes in [`LEASE_HORIZON`] at its recent rate if that is more,
/// so one gateway cannot hold quota another needs for long.
const MAX_LEASE_REQUESTS: i64 = 16;
/// How much of a busy counter's own traffic a lease may cover: long enough
/// that a refill round trip under load never leaves it empty.
const LEASE_HORIZON: Duration = Duration::from_millis(500);

/// How a counter admits right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// From its lease, with an overdraft of at most `overdraft`, unless the
    /// fleet's counter is known to be spent.
    Shared { overdraft: i64 },
    /// On its own, up to `allowance` in this window, overdrawn by at most
    /// `overdraft` while some of the allowance is left: embedded mode (the
    /// whole limit) or the database is away (this gateway's share).
    Local { allowance: i64, overdraft: i64 },
}

#[derive(Debug, Clone)]
pub struct Counter {
    /// The limit as last configured.
    pub limit: i64,
    /// Lease left (positive) or debt (negative).
    pub balance: i64,
    /// The last lease found no headroom: no overdraft until one grants again.
    pub exhausted: bool,
    /// The fleet's use of this counter when the database last answered.
    pub fleet_used: i64,
    /// The limit less the previous minute's weighted use, as last answered.
    pub ceiling: i64,
    /// The last grant, to judge when to refill.
    pub last_grant: i64,
    /// The amount of the last request, which sizes leases.
    pub demand: i64,
    /// Admitted here in this window, net of settlements.
    pub admitted_here: i64,
    /// Admitted here while the database was away, since it was last reached.
    pub offline_taken: i64,
    /// The sync should look at this counter (a refill, a debt, a poll).
    pub wants_sync: bool,
    /// The charge a sync under way has taken from the balance.
    pub in_flight: Option<i64>,
    pub last_activity: Instant,
    /// Taken since `rate_since`, to size leases by this gateway's rate.
    taken_recently: i64,
    rate_since: Instant,
    /// Taken per second here, as of the last sync.
    rate_per_sec: f64,
    /// The database has answered for this counter (or for the window it
    /// follows): its rate is known.
    known: bool,
}

/// The pace assumed for the overdraft of a counter the database has not
/// answered for yet (a gateway's first minute of a key): 100 ms of it is
/// 1,000 requests, still capped by a tenth of the limit over the gateways.
const FIRST_PACE_PER_SEC: f64 = 10_000.0;

impl Counter {
    pub fn new(limit: i64, now: Instant) -> Counter {
        Counter {
            limit,
            balance: 0,
            exhausted: false,
            fleet_used: 0,
            ceiling: limit,
            last_grant: 0,
            demand: 1,
            admitted_here: 0,
            offline_taken: 0,
            wants_sync: false,
            in_flight: None,
            last_activity: now,
            taken_recently: 0,
            rate_since: now,
            rate_per_sec: 0.0,
            known: false,
        }
    }

    /// Carries the previous window's pace over to this one: the rate and
    /// request size that size the first lease.
    pub fn follow(&mut self, previous: &Counter) {
        self.rate_per_sec = previous.rate_per_sec;
        self.demand = previous.demand;
        self.last_grant = previous.last_grant;
        self.known = previous.known;
    }

    /// Takes `amount` or refuses. A refusal in shared mode asks the sync to
    /// poll the fleet's counter, which may have room again.
    pub fn take(&mut self, amount: i64, how: Admit, now: Instant) -> bool {
        let amount = amount.max(0);
        self.last_activity = now;
        self.demand = amount.max(1);
        let ok = match how {
            Admit::Local {
                allowance,
                overdraft,
            } => {
                self.offline_taken + amount <= allowance
                    || (self.offline_taken < allowance
                        && self.offline_taken + amount - allowance <= overdraft)
            }
            Admit::Shared { overdraft } => {
                // A debt a sync is charging right now is still owed: it
                // counts against the overdraft until the database took it.
                let owed = self.in_flight.unwrap_or(0).max(0);
                self.balance >= amount
                    || (!self.exhausted && self.balance - owed - amount >= -overdraft)
            }
        };
        if !ok {
            self.wants_sync = true;
            return false;
        }
        self.balance -= amount;
        self.admitted_here += amount;
        self.taken_recently += amount;
        if matches!(how, Admit::Local { .. }) {
            self.offline_taken += amount;
        }
        if self.balance < self.low_water() {
            self.wants_sync = true;
        }
        true
    }

    /// Gives back (positive) or takes (negative) `delta` after the fact: an
    /// admission rolled back, or a reservation settled against what was used.
    pub fn adjust(&mut self, delta: i64) {
        self.balance += delta;
        self.admitted_here -= delta;
        if self.offline_taken > 0 {
            self.offline_taken = (self.offline_taken - delta).max(0);
        }
        if self.balance < 0 {
            self.wants_sync = true;
        }
    }

    /// Taken per second here, as of the last sync, for the rate part of the
    /// overdraft; before the database first answered for the counter, an
    /// assumed busy pace ([`FIRST_PACE_PER_SEC`]), so that a fresh
    /// gateway's first requests of a busy key are not refused while its
    /// first lease is fetched.
    pub fn overdraft_pace(&self) -> f64 {
        if self.known {
            self.rate_per_sec
        } else {
            FIRST_PACE_PER_SEC
        }
    }

    /// Below this much lease a refill is asked for: half the last grant, and
    /// never less than one request.
    fn low_water(&self) -> i64 {
        (self.last_grant / 2).max(self.demand)
    }

    /// How much lease to ask for: a share of the headroom the fleet last
    /// reported, split over twice the live gateways so that one gateway never
    /// holds most of what is left, between one request's worth and the more
    /// of [`MAX_LEASE_REQUESTS`] requests' worth and what this gateway took
    /// in [`LEASE_HORIZON`] at its recent rate.
    pub fn lease_size(&self, live_gateways: i64) -> i64 {
        let headroom = (self.ceiling - self.fleet_used).max(0);
        let share = headroom / (2 * live_gateways.max(1));
        let by_rate = (self.rate_per_sec * LEASE_HORIZON.as_secs_f64()).ceil() as i64;
        let most = (self.demand.saturating_mul(MAX_LEASE_REQUESTS)).max(by_rate);
        share.clamp(self.demand, most.max(self.demand))
    }

    /// Updates the rate this gateway takes at, from what it took since the
    /// last update.
    fn measure_rate(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.rate_since).as_secs_f64();
        if elapsed >= 0.01 {
            self.rate_per_sec = self.taken_recently.max(0) as f64 / elapsed;
            self.taken_recently = 0;
            self.rate_since = now;
        }
    }

    /// Starts a sync of this counter: answers the charge (its debt, or with
    /// `hand_back` its whole positive lease, negated) and how much more to
    /// ask for, or `None` when there is nothing to do or a sync is under way.
    /// The charge leaves the balance now and comes back if the sync fails.
    pub fn begin_sync(&mut self, hand_back: bool, live_gateways: i64) -> Option<(i64, i64)> {
        if self.in_flight.is_some() {
            return None;
        }
        let wants_more = std::mem::take(&mut self.wants_sync);
        self.measure_rate(Instant::now());
        let (charge, want) = if hand_back && self.balance > 0 {
            (-self.balance, 0)
        } else {
            let charge = (-self.balance).max(0);
            let want = if wants_more {
                (self.lease_size(live_gateways) - self.balance.max(0)).max(self.demand)
            } else {
                0
            };
            (charge, want)
        };
        if charge == 0 && want == 0 {
            return None;
        }
        self.balance += charge;
        self.in_flight = Some(charge);
        Some((charge, want))
    }

    /// The database answered the sync that asked for `want`.
    pub fn finish_sync(&mut self, want: i64, grant: LeaseGrant) {
        self.in_flight = None;
        self.known = true;
        self.offline_taken = 0;
        self.balance += grant.granted;
        self.fleet_used = grant.used;
        self.ceiling = grant.ceiling;
        if want > 0 {
            self.last_grant = grant.granted;
            self.exhausted = grant.granted == 0;
        }
        if grant.granted > 0 {
            self.exhausted = false;
        }
    }

    /// The sync failed: the charge is owed again.
    pub fn fail_sync(&mut self) {
        if let Some(charge) = self.in_flight.take() {
            self.balance -= charge;
        }
        self.wants_sync = true;
    }

    /// What is left of the limit as far as this gateway knows: the fleet's
    /// unleased headroom plus this gateway's own lease.
    pub fn remaining(&self, how: Admit) -> i64 {
        match how {
            Admit::Local { allowance, .. } => (allowance - self.offline_taken).max(0),
            Admit::Shared { .. } => ((self.ceiling - self.fleet_used).max(0) + self.balance).max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(used: i64, granted: i64, ceiling: i64) -> LeaseGrant {
        LeaseGrant {
            used,
            granted,
            ceiling,
        }
    }

    const SHARED: Admit = Admit::Shared { overdraft: 2 };

    #[test]
    fn a_fresh_counter_admits_on_overdraft_then_refuses_until_leased() {
        let now = Instant::now();
        let mut c = Counter::new(60, now);
        assert!(c.take(1, SHARED, now));
        assert!(c.take(1, SHARED, now));
        assert!(!c.take(1, SHARED, now), "overdraft is two requests");
        assert_eq!(c.balance, -2);
        let (charge, want) = c.begin_sync(false, 3).unwrap();
        assert_eq!(charge, 2, "the debt is charged");
        // 60 of headroom over 2 x 3 gateways: a lease of 10.
        assert_eq!(want, 10);
        assert_eq!(c.balance, 0);
        c.finish_sync(want, grant(12, 10, 60));
        assert_eq!(c.balance, 10);
        assert!(c.take(1, SHARED, now));
    }

    #[test]
    fn an_exhausted_counter_gives_no_overdraft_until_a_grant() {
        let now = Instant::now();
        let mut c = Counter::new(60, now);
        c.take(1, SHARED, now);
        let (_, want) = c.begin_sync(false, 1).unwrap();
        c.finish_sync(want, grant(60, 0, 60));
        assert!(c.exhausted);
        assert!(
            !c.take(1, SHARED, now),
            "no overdraft when the fleet is spent"
        );
        assert!(c.wants_sync, "a refusal asks the sync to poll");
        let (charge, want) = c.begin_sync(false, 1).unwrap();
        assert_eq!((charge, want), (0, 1));
        c.finish_sync(want, grant(31, 1, 32));
        assert!(!c.exhausted);
        assert!(c.take(1, SHARED, now));
    }

    #[test]
    fn a_failed_sync_owes_its_charge_again() {
        let now = Instant::now();
        let mut c = Counter::new(10, now);
        c.take(2, SHARED, now);
        let (charge, _) = c.begin_sync(false, 1).unwrap();
        assert_eq!((charge, c.balance), (2, 0));
        assert!(c.begin_sync(false, 1).is_none(), "one sync at a time");
        c.fail_sync();
        assert_eq!(c.balance, -2);
        assert!(c.wants_sync);
    }

    #[test]
    fn a_debt_being_charged_still_counts_against_the_overdraft() {
        let now = Instant::now();
        let mut c = Counter::new(10, now);
        assert!(c.take(1, SHARED, now));
        assert!(c.take(1, SHARED, now));
        c.begin_sync(false, 1).unwrap();
        assert_eq!(c.balance, 0, "the debt moved into the sync");
        assert!(
            !c.take(1, SHARED, now),
            "no new overdraft while it is charged"
        );
        c.finish_sync(10, grant(12, 0, 10));
        assert!(c.exhausted);
        assert!(!c.take(1, SHARED, now));
    }

    #[test]
    fn settlements_give_back_or_take_and_a_debt_asks_for_a_sync() {
        let now = Instant::now();
        let mut c = Counter::new(10_000, now);
        c.balance = 1000;
        assert!(c.take(600, Admit::Shared { overdraft: 600 }, now));
        c.wants_sync = false;
        c.adjust(500);
        assert_eq!(c.balance, 900);
        assert!(!c.wants_sync);
        c.adjust(-1000);
        assert_eq!(c.balance, -100);
        assert!(c.wants_sync);
    }

    #[test]
    fn hand_back_returns_the_whole_lease() {
        let now = Instant::now();
        let mut c = Counter::new(100, now);
        c.balance = 7;
        let (charge, want) = c.begin_sync(true, 1).unwrap();
        assert_eq!((charge, want, c.balance), (-7, 0, 0));
        c.finish_sync(want, grant(3, 0, 100));
        assert!(!c.exhausted, "a hand-back does not judge exhaustion");
    }

    #[test]
    fn leases_are_a_bounded_share_of_the_headroom() {
        let now = Instant::now();
        let mut c = Counter::new(60, now);
        assert_eq!(c.lease_size(1), 16, "at most 16 requests");
        assert_eq!(c.lease_size(3), 10);
        c.fleet_used = 58;
        assert_eq!(c.lease_size(3), 1, "at least one request");
        c.demand = 500;
        c.ceiling = 1_000_000;
        c.fleet_used = 0;
        assert_eq!(c.lease_size(3), 8000);
        // A busy counter leases half a second of its own traffic.
        c.demand = 1;
        c.ceiling = 1_000_000;
        c.rate_per_sec = 3000.0;
        assert_eq!(c.lease_size(3), 1500);
        c.ceiling = 600;
        assert_eq!(c.lease_size(3), 100, "never more than the share");
    }

    #[test]
    fn local_admission_stays_within_its_allowance() {
        let now = Instant::now();
        let mut c = Counter::new(30, now);
        let local = Admit::Local {
            allowance: 10,
            overdraft: 0,
        };
        let admitted = (0..30).filter(|_| c.take(1, local, now)).count();
        assert_eq!(admitted, 10);
        assert_eq!(c.balance, -10, "what was admitted offline is owed");
        assert_eq!(c.remaining(local), 0);
        // A reservation larger than what is left fits once, as overdraft.
        let mut t = Counter::new(20, now);
        let tokens = Admit::Local {
            allowance: 20,
            overdraft: 1000,
        };
        assert!(t.take(1000, tokens, now));
        assert!(!t.take(1000, tokens, now), "nothing left to overdraw from");
        t.adjust(1000 - 18);
        assert!(t.take(1000, tokens, now), "18 of 20 used");
        t.adjust(1000 - 18);
        assert!(!t.take(1000, tokens, now), "36 of 20 used");
    }

    #[test]
    fn a_new_minute_of_a_busy_key_is_carried_by_its_rate_until_the_lease_comes() {
        use crate::quota::overdraft;
        use obleth_config::db::quota::Dimension;
        let now = Instant::now();
        // The previous minute ran at 13,000 requests a second here.
        let mut previous = Counter::new(1_000_000_000, now);
        previous.rate_per_sec = 13_000.0;
        previous.known = true;
        let mut c = Counter::new(1_000_000_000, now);
        c.follow(&previous);
        // No lease yet: the overdraft alone admits 100 ms of that traffic,
        // not 16 requests.
        let how = Admit::Shared {
            overdraft: overdraft(Dimension::Requests, 1_000_000_000, 1, 1, c.overdraft_pace()),
        };
        let admitted = (0..2_000).take_while(|_| c.take(1, how, now)).count();
        assert_eq!(admitted, 1_300);
        assert!(c.wants_sync, "the refill is asked for at once");
    }

    #[test]
    fn a_fresh_counter_overdraws_up_to_a_first_lease_worth_within_the_share() {
        use crate::quota::overdraft;
        use obleth_config::db::quota::Dimension;
        let now = Instant::now();
        let admitted = |limit: i64, live: i64| {
            let mut c = Counter::new(limit, now);
            let how = Admit::Shared {
                overdraft: overdraft(Dimension::Requests, limit, 1, live, c.overdraft_pace()),
            };
            (0..5_000).take_while(|_| c.take(1, how, now)).count()
        };
        // A busy key on a fresh gateway: 100 ms at the assumed pace.
        assert_eq!(admitted(1_000_000_000, 3), 1_000);
        // Never past a tenth of the limit over the live gateways...
        assert_eq!(admitted(6_000, 3), 200);
        // ...and small limits keep their two requests.
        assert_eq!(admitted(60, 3), 2);
        // Once the database answered, the counter's own rate counts.
        let mut c = Counter::new(1_000_000_000, now);
        c.finish_sync(
            1,
            LeaseGrant {
                used: 0,
                granted: 0,
                ceiling: 1_000_000_000,
            },
        );
        assert_eq!(c.overdraft_pace(), 0.0);
    }
}
