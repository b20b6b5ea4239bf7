//! PostgreSQL's eight table lock modes and which of them conflict, as the
//! "Explicit Locking" chapter of the PostgreSQL manual tabulates them.

use std::fmt;

use serde::{Serialize, Serializer};

/// A table-level lock mode, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

/// For each mode (by its index), the bit set of the modes it conflicts with.
const CONFLICTS: [u8; 8] = [
    0b1000_0000, // ACCESS SHARE: ACCESS EXCLUSIVE
    0b1100_0000, // ROW SHARE: EXCLUSIVE, ACCESS EXCLUSIVE
    0b1111_0000, // ROW EXCLUSIVE: SHARE and stronger
    0b1111_1000, // SHARE UPDATE EXCLUSIVE: itself and stronger
    0b1110_1100, // SHARE: ROW EXCLUSIVE, SHARE UPDATE EXCLUSIVE, SHARE ROW EXCLUSIVE and stronger
    0b1111_1100, // SHARE ROW EXCLUSIVE: ROW EXCLUSIVE and stronger
    0b1111_1110, // EXCLUSIVE: ROW SHARE and stronger
    0b1111_1111, // ACCESS EXCLUSIVE: everything
];

impl LockMode {
    pub const ALL: [LockMode; 8] = [
        LockMode::AccessShare,
        LockMode::RowShare,
        LockMode::RowExclusive,
        LockMode::ShareUpdateExclusive,
        LockMode::Share,
        LockMode::ShareRowExclusive,
        LockMode::Exclusive,
        LockMode::AccessExclusive,
    ];

    /// The name as SQL spells it, such as `SHARE ROW EXCLUSIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Parses the `mode` column of `pg_locks`, such as `AccessExclusiveLock`.
    pub fn from_pg_locks(mode: &str) -> Option<LockMode> {
        Some(match mode {
            "AccessShareLock" => LockMode::AccessShare,
            "RowShareLock" => LockMode::RowShare,
            "RowExclusiveLock" => LockMode::RowExclusive,
            "ShareUpdateExclusiveLock" => LockMode::ShareUpdateExclusive,
            "ShareLock" => LockMode::Share,
            "ShareRowExclusiveLock" => LockMode::ShareRowExclusive,
            "ExclusiveLock" => LockMode::Exclusive,
            "AccessExclusiveLock" => LockMode::AccessExclusive,
            _ => return None,
        })
    }

    /// Parses the lowercase words of `LOCK TABLE ... IN <mode> MODE`.
    pub fn from_words(words: &[&str]) -> Option<LockMode> {
        LockMode::ALL.into_iter().find(|m| {
            m.as_str()
                .to_ascii_lowercase()
                .split(' ')
                .eq(words.iter().copied())
        })
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether a lock in this mode and one in `other` cannot be held at the
    /// same time by two sessions. The relation is symmetric.
    pub fn conflicts_with(self, other: LockMode) -> bool {
        CONFLICTS[self.index()] & (1 << other.index()) != 0
    }

    /// Whether the lock stops other sessions' `INSERT`, `UPDATE` and `DELETE`.
    pub fn blocks_writes(self) -> bool {
        self.conflicts_with(LockMode::RowExclusive)
    }

    /// Whether the lock stops other sessions' plain `SELECT`.
    pub fn blocks_reads(self) -> bool {
        self.conflicts_with(LockMode::AccessShare)
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LockMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_symmetric_and_match_the_manual() {
        for a in LockMode::ALL {
            for b in LockMode::ALL {
                assert_eq!(a.conflicts_with(b), b.conflicts_with(a), "{a} vs {b}");
            }
        }
        use LockMode::*;
        assert!(!AccessShare.conflicts_with(Exclusive));
        assert!(AccessShare.conflicts_with(AccessExclusive));
        assert!(!RowExclusive.conflicts_with(RowExclusive));
        assert!(RowExclusive.conflicts_with(Share));
        assert!(!RowExclusive.conflicts_with(ShareUpdateExclusive));
        assert!(ShareUpdateExclusive.conflicts_with(ShareUpdateExclusive));
        assert!(!Share.conflicts_with(Share));
        assert!(ShareRowExclusive.conflicts_with(ShareRowExclusive));
        assert!(!RowShare.conflicts_with(Share));
        assert!(Share.blocks_writes() && !Share.blocks_reads());
        assert!(!ShareUpdateExclusive.blocks_writes());
        assert!(AccessExclusive.blocks_reads());
    }

    #[test]
    fn parses_both_spellings() {
        for m in LockMode::ALL {
            let words: Vec<String> = m
                .as_str()
                .to_ascii_lowercase()
                .split(' ')
                .map(str::to_owned)
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_eq!(LockMode::from_words(&words), Some(m));
            let camel = format!("{m:?}Lock");
            assert_eq!(LockMode::from_pg_locks(&camel), Some(m));
        }
        assert_eq!(LockMode::from_words(&["share", "exclusive"]), None);
        assert_eq!(LockMode::from_pg_locks("SIReadLock"), None);
    }
}
