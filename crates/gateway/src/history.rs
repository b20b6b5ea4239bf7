//! Whether the change log still continues what the feed last read: the
//! feed's mark (the last change applied, and the server that answered) and
//! the judgement that makes it reload everything instead of catching up.

use chrono::{DateTime, Utc};
use obleth_config::db::changes::LogBounds;
use obleth_config::model::Change;

/// Where the feed stands: the last change it applied (or the log's
/// high-water mark at its last full load) and the server it read it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedMark {
    /// The last seq applied; 0 for an empty log.
    pub seq: i64,
    /// When that change was made, to know it again; none for an empty log.
    pub seq_at: Option<DateTime<Utc>>,
    /// `pg_postmaster_start_time()` of the server read.
    pub server_started: DateTime<Utc>,
}

/// Why the feed reloads everything instead of catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadReason {
    /// Rows after the mark were pruned: a catch-up would miss them.
    Pruned,
    /// The log went back: its newest row is below the mark, or the marked
    /// row is gone or another one (a restore, a standby that missed the last
    /// commits); what the feed applied may not be in the database.
    Rewound,
    /// Another server answers (a restart, a failover, a restore): it may
    /// lack commits the feed applied, and its history may differ.
    ServerChanged,
}

impl ReloadReason {
    /// The metric label and the log's word.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadReason::Pruned => "pruned",
            ReloadReason::Rewound => "rewound",
            ReloadReason::ServerChanged => "server_changed",
        }
    }
}

impl FeedMark {
    /// The mark of a full load that read `bounds` before anything else: the
    /// log's newest row on that server.
    pub fn loaded(bounds: &LogBounds) -> FeedMark {
        FeedMark {
            seq: bounds.newest.unwrap_or(0),
            seq_at: bounds.newest_at,
            server_started: bounds.server_started,
        }
    }

    /// The mark after applying `change`.
    pub fn applied(&mut self, change: &Change) {
        self.seq = change.seq;
        self.seq_at = Some(change.changed_at);
    }

    /// Whether a catch-up from this mark can be trusted, given the log's
    /// `bounds` read (with the marked seq's time) after the catch-up's page:
    /// none when it can, else why everything must be reloaded.
    ///
    /// Seqs are not dense: a rolled-back transaction burns one. When the
    /// burnt seq is the one just after the mark and pruning removed the rows
    /// before it, the log looks pruned past the mark and the feed reloads
    /// for nothing; that costs a reload, never a missed change.
    pub fn judge(&self, bounds: &LogBounds) -> Option<ReloadReason> {
        if bounds.server_started != self.server_started {
            return Some(ReloadReason::ServerChanged);
        }
        if bounds.newest.unwrap_or(0) < self.seq {
            return Some(ReloadReason::Rewound);
        }
        let oldest = bounds.oldest.unwrap_or(i64::MAX);
        if self.seq > 0 {
            match (bounds.at_seq, self.seq_at) {
                // The marked row is there, made at another time: another
                // history that reached the same seq.
                (Some(now), Some(then)) if now != then => return Some(ReloadReason::Rewound),
                // The marked row is gone from inside the kept range: pruning
                // only removes a prefix, so something else deleted it.
                (None, _) if oldest <= self.seq => return Some(ReloadReason::Rewound),
                _ => {}
            }
        }
        if bounds.oldest.is_some() && self.seq.saturating_add(1) < oldest {
            return Some(ReloadReason::Pruned);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A log on the server started at `at(0)` holding seqs `oldest..=newest`,
    /// each made at `at(seq)`, asked about `seq`.
    fn log(oldest: i64, newest: i64, seq: i64) -> LogBounds {
        let held = |s: i64| (oldest..=newest).contains(&s).then(|| at(s));
        LogBounds {
            server_started: at(0),
            oldest: Some(oldest),
            newest: Some(newest),
            newest_at: Some(at(newest)),
            at_seq: held(seq),
        }
    }

    fn mark(seq: i64) -> FeedMark {
        FeedMark {
            seq,
            seq_at: (seq > 0).then(|| at(seq)),
            server_started: at(0),
        }
    }

    #[test]
    fn a_log_that_continues_the_mark_is_caught_up() {
        for (oldest, newest, seq) in [(1, 10, 10), (1, 10, 4), (5, 10, 5), (5, 10, 4)] {
            assert_eq!(
                mark(seq).judge(&log(oldest, newest, seq)),
                None,
                "{oldest}..={newest} from {seq}"
            );
        }
    }

    #[test]
    fn rows_pruned_past_the_mark_make_a_reload() {
        assert_eq!(mark(4).judge(&log(6, 10, 4)), Some(ReloadReason::Pruned));
        assert_eq!(
            mark(0).judge(&log(2, 10, 0)),
            Some(ReloadReason::Pruned),
            "a burnt seq 1 costs a reload"
        );
    }

    #[test]
    fn an_empty_log_continues_an_empty_mark() {
        let empty = LogBounds {
            server_started: at(0),
            oldest: None,
            newest: None,
            newest_at: None,
            at_seq: None,
        };
        assert_eq!(mark(0).judge(&empty), None);
        assert_eq!(FeedMark::loaded(&empty), mark(0));
        assert_eq!(
            mark(3).judge(&empty),
            Some(ReloadReason::Rewound),
            "the log was emptied"
        );
    }

    #[test]
    fn a_log_that_went_back_makes_a_reload() {
        assert_eq!(mark(10).judge(&log(1, 8, 10)), Some(ReloadReason::Rewound));
        // Went back, then grew again past the mark: row 10 is another one.
        let mut regrown = log(1, 12, 10);
        regrown.at_seq = Some(at(99));
        assert_eq!(mark(10).judge(&regrown), Some(ReloadReason::Rewound));
        // Row 10 deleted from the middle of the log.
        let mut holed = log(1, 12, 10);
        holed.at_seq = None;
        assert_eq!(mark(10).judge(&holed), Some(ReloadReason::Rewound));
    }

    #[test]
    fn another_server_makes_a_reload_whatever_its_log_says() {
        let mut other = log(1, 10, 10);
        other.server_started = at(1);
        assert_eq!(mark(10).judge(&other), Some(ReloadReason::ServerChanged));
    }

    #[test]
    fn a_load_marks_the_newest_row_of_the_server_read() {
        let bounds = log(3, 9, 0);
        assert_eq!(FeedMark::loaded(&bounds), mark(9));
        assert_eq!(mark(9).judge(&log(3, 9, 9)), None);
    }
}
