//! Fleet-wide governance with real processes: three gateways behind HAProxy
//! (round-robin) on one PostgreSQL, the mock upstream, and bursts whose every
//! answer is kept. Shared rate limits of a key and of a team, a spend budget
//! spent through the whole fleet, and the fallback to a per-replica share
//! while PostgreSQL is down. Each scenario prints its counts; they run one at
//! a time (they share two cores).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod limits;
mod outage;
mod spend;

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use obleth_e2e::burst::{burst, Shot, Tally};
use obleth_e2e::clock::{left_in_minute, room_in_minute};
use obleth_testkit::http::Answer;
use sqlx::types::Uuid;
use sqlx::PgPool;

/// Requests of a limit burst, and the clients that send them at once.
const SENT: usize = 180;
const CLIENTS: usize = 6;

/// The `rpm_limit` of the limit scenarios, and what a burst of [`SENT`] in one
/// minute may be admitted: the limit, give or take the documented bound.
const RPM_LIMIT: i32 = 60;
const ADMITTED: RangeInclusive<usize> = 57..=66;

/// A burst starts with at least this much of its UTC minute left (see
/// `obleth_e2e::clock`); a burst of 180 takes a few seconds at most.
const ROOM: Duration = Duration::from_secs(20);

/// The body of every limit burst: the fleet's route `m`, no `max_tokens`.
fn body() -> bytes::Bytes {
    obleth_e2e::burst::chat_body("m", "count me against the limit", None)
}

/// Sends `shots` as [`CLIENTS`] concurrent clients within one UTC minute,
/// prints the counts as `scenario`, and answers every answer and the tally.
/// Panics if the burst ran into the next minute: its counts would then mean
/// nothing.
async fn burst_in_one_minute(scenario: &str, shots: Vec<Shot>) -> (Vec<Answer>, Tally) {
    let waited = room_in_minute(ROOM).await;
    let left = left_in_minute();
    let sent = shots.len();
    let started = Instant::now();
    let answers = burst(shots, body(), CLIENTS).await;
    let took = started.elapsed();
    let tally = Tally::of(&answers);
    obleth_e2e::evidence(&format!(
        "[{scenario}] sent {sent}: admitted {} refused {} other {:?} \
         (in {took:.1?}, {left:.1?} left of the minute, waited {waited:.1?} for it)",
        tally.admitted, tally.refused, tally.other
    ));
    assert!(
        took < left,
        "the burst took {took:?} and ran past the minute ({left:?} left); its counts mean nothing"
    );
    (answers, tally)
}

/// Prints where the admitted requests of `keys` were served, from their usage
/// rows, once the gateways have flushed as many as were admitted (or after
/// 15 s: this is evidence, not a check).
async fn print_admitted_by_node(scenario: &str, pool: &PgPool, keys: &[Uuid], admitted: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let by_node = obleth_e2e::governance::admitted_by_node(pool, keys)
            .await
            .unwrap_or_default();
        let rows: i64 = by_node.iter().map(|(_, n)| n).sum();
        if rows as usize >= admitted || Instant::now() > deadline {
            obleth_e2e::evidence(&format!(
                "[{scenario}] usage rows with status 200 by gateway: {by_node:?}"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
