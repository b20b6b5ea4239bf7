//! The memory check at start: the key store must fit the cgroup's memory
//! limit. A gateway whose keys would not fit says so and exits before its
//! warm-up, instead of being killed by the kernel in the middle of it.

use std::path::{Path, PathBuf};

use tracing::warn;

/// Resident memory a stored key takes, in bytes, warm-up included: the
/// 120-byte slab slot, its two index entries at the tables' load, and the
/// allocator's share of the warm-up's transient rows (`bench/keystore`
/// measured 142 at 1M keys and 137 at 10M; this leaves headroom).
pub const BYTES_PER_KEY: u64 = 200;
/// Resident memory of a gateway holding no key, with headroom for the
/// connection pools and buffers of a loaded gateway, in bytes.
pub const BASE_BYTES: u64 = 64 << 20;
/// A file to read the memory limit from instead of the cgroup's (tests).
pub const LIMIT_FILE_ENV: &str = "OBLETH_CGROUP_MEMORY_MAX_FILE";

/// Limits at or above this are "no limit" (cgroup v1 writes a page-rounded
/// `i64::MAX`).
const UNLIMITED: u64 = 1 << 62;

/// The store would not fit the memory limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the key store would not fit the memory limit: {keys} keys to load \
     ({active} active in the database, cache.max_keys = {max_keys}) take about \
     {needed_mib} MiB with the gateway's base ({BYTES_PER_KEY} B a key + {base_mib} MiB), \
     over the cgroup memory limit of {limit_mib} MiB; raise the memory limit \
     or lower cache.max_keys"
)]
pub struct WouldNotFit {
    pub keys: u64,
    pub active: u64,
    pub max_keys: u64,
    pub needed_mib: u64,
    pub base_mib: u64,
    pub limit_mib: u64,
}

/// Resident memory a gateway holding `keys` keys needs, in bytes.
pub fn needed(keys: u64) -> u64 {
    BASE_BYTES.saturating_add(keys.saturating_mul(BYTES_PER_KEY))
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Whether `active` keys, of which at most `max_keys` are stored, fit `limit`
/// bytes (none: no limit).
pub fn check(active: u64, max_keys: u64, limit: Option<u64>) -> Result<(), WouldNotFit> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let keys = active.min(max_keys);
    let needed = needed(keys);
    if needed <= limit {
        return Ok(());
    }
    Err(WouldNotFit {
        keys,
        active,
        max_keys,
        needed_mib: mib(needed),
        base_mib: mib(BASE_BYTES),
        limit_mib: limit / (1 << 20),
    })
}

/// Warns when `max_keys` keys would not fit `limit`: the store may grow past
/// the limit as keys are created.
pub fn warn_if_max_keys_exceeds(max_keys: u64, limit: Option<u64>) {
    if let Some(limit) = limit {
        if needed(max_keys) > limit {
            warn!(
                max_keys,
                needed_mib = mib(needed(max_keys)),
                limit_mib = limit / (1 << 20),
                "cache.max_keys keys would not fit the cgroup memory limit ({} B a key + {} MiB); \
                 the gateway may be killed as keys are created. Lower cache.max_keys or raise the limit.",
                BYTES_PER_KEY,
                mib(BASE_BYTES)
            );
        }
    }
}

/// This process's memory limit in bytes: from the file named by
/// `OBLETH_CGROUP_MEMORY_MAX_FILE` if set, else from its cgroup (v2
/// `memory.max`, v1 `memory.limit_in_bytes`, the lowest along the path to
/// the root). None: no limit, or none could be read.
pub fn limit() -> Option<u64> {
    if let Some(file) = std::env::var_os(LIMIT_FILE_ENV) {
        return read_limit(Path::new(&file));
    }
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_under(Path::new("/sys/fs/cgroup"), &cgroups)
}

/// The limit found under the cgroup file system mounted at `root` for a
/// process whose `/proc/self/cgroup` reads `cgroups`.
pub fn limit_under(root: &Path, cgroups: &str) -> Option<u64> {
    let mut found: Option<u64> = None;
    let mut lowest = |limit: Option<u64>| {
        if let Some(l) = limit {
            found = Some(found.map_or(l, |f| f.min(l)));
        }
    };
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            lowest(along(root, path, "memory.max"));
            // A hybrid mount keeps v2 under `unified`.
            lowest(along(&root.join("unified"), path, "memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            lowest(along(&root.join("memory"), path, "memory.limit_in_bytes"));
        }
    }
    found
}

/// The lowest limit in `file` from the cgroup at `path` under `mount` up to
/// the mount itself.
fn along(mount: &Path, path: &str, file: &str) -> Option<u64> {
    let mut dir: PathBuf = mount.join(path.trim_start_matches('/'));
    let mut found: Option<u64> = None;
    loop {
        if let Some(l) = read_limit(&dir.join(file)) {
            found = Some(found.map_or(l, |f| f.min(l)));
        }
        if dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return found;
        }
    }
}

/// A limit file's value: bytes, or none for `max`, an unlimited value or a
/// file that cannot be read.
fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: u64 = text.trim().parse().ok()?;
    (value < UNLIMITED).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_past_the_limit_are_refused_naming_the_figures() {
        let limit = needed(1000);
        assert_eq!(check(1000, 2_000_000, Some(limit)), Ok(()));
        assert_eq!(check(1_000_000, 2_000_000, None), Ok(()));
        // cache.max_keys caps what is loaded.
        assert_eq!(check(5000, 1000, Some(limit)), Ok(()));
        let e = check(1001, 2_000_000, Some(limit)).unwrap_err();
        assert_eq!((e.keys, e.active, e.max_keys), (1001, 1001, 2_000_000));
        let message = e.to_string();
        assert!(message.contains("cache.max_keys = 2000000"), "{message}");
        assert!(message.contains("1001 keys"), "{message}");
    }

    #[test]
    fn cgroup_limits_are_read_for_v2_v1_and_hybrid_mounts() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v2, namespaced: the process sits at the root of its mount.
        write("memory.max", "1073741824\n");
        assert_eq!(limit_under(root.path(), "0::/\n"), Some(1 << 30));
        // v2 nested: the lowest limit along the path holds; `max` is none.
        write("a/memory.max", "max\n");
        write("a/b/memory.max", "536870912\n");
        assert_eq!(limit_under(root.path(), "0::/a/b\n"), Some(1 << 29));
        assert_eq!(limit_under(root.path(), "0::/a\n"), Some(1 << 30));
        // v1: the memory controller's line; an "unlimited" value is none.
        write("memory/x/memory.limit_in_bytes", "268435456\n");
        write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        let v1 = "4:memory:/x\n3:cpu,cpuacct:/x\n0::/\n";
        std::fs::remove_file(root.path().join("memory.max")).unwrap();
        assert_eq!(limit_under(root.path(), v1), Some(1 << 28));
        assert_eq!(limit_under(root.path(), "4:memory:/\n"), None);
        assert_eq!(limit_under(root.path(), ""), None);
    }
}
