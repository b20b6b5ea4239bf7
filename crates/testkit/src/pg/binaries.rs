//! Finding the PostgreSQL server binaries and running them as the right user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming the directory that holds `initdb`, `pg_ctl` and `postgres`.
const BINDIR_VAR: &str = "OBLETH_PG_BINDIR";

/// Where Debian and Ubuntu install each major version's server binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// The server binaries of one PostgreSQL installation and the user that runs them.
#[derive(Debug, Clone)]
pub(super) struct Binaries {
    dir: PathBuf,
    /// True when this process is root: `initdb` and `postgres` refuse to run
    /// as root, so they run as the `postgres` user through `runuser`.
    as_postgres: bool,
}

impl Binaries {
    /// Finds the binaries in `$OBLETH_PG_BINDIR`, then the highest version
    /// under `/usr/lib/postgresql/*/bin`, then `$PATH`.
    pub(super) fn find(as_postgres: bool) -> anyhow::Result<Binaries> {
        let dir = find_dir(
            std::env::var_os(BINDIR_VAR),
            Path::new(DEBIAN_ROOT),
            std::env::var_os("PATH"),
        )?;
        Ok(Binaries { dir, as_postgres })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the argument vector that runs `program` from this installation
    /// as the right user; the caller appends the program's own arguments.
    pub(super) fn argv(&self, program: &str) -> Vec<OsString> {
        let path = self.dir.join(program).into_os_string();
        if self.as_postgres {
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
                path,
            ]
        } else {
            vec![path]
        }
    }

    /// Returns a command for `program` with stdin closed and its working
    /// directory set to `cwd`, which the `postgres` user can enter (the
    /// caller's may be a directory only root can).
    pub(super) fn command(&self, program: &str, cwd: &Path) -> Command {
        let argv = self.argv(program);
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null());
        command
    }
}

/// Returns the first directory that holds all the server binaries, looking
/// in `bindir_var`, then the versions under `debian_root`, then `path`.
fn find_dir(
    bindir_var: Option<OsString>,
    debian_root: &Path,
    path: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    match bindir_var {
        Some(dir) if !dir.is_empty() => {
            looked.push(format!("{BINDIR_VAR}={}", Path::new(&dir).display()));
            candidates.push(PathBuf::from(dir));
        }
        _ => looked.push(format!("${BINDIR_VAR} (unset)")),
    }
    looked.push(format!("{}/*/bin", debian_root.display()));
    candidates.extend(debian_bindirs(debian_root));
    looked.push("$PATH".to_owned());
    if let Some(path) = path {
        candidates.extend(std::env::split_paths(&path));
    }

    candidates
        .into_iter()
        .find(|dir| REQUIRED.iter().all(|bin| dir.join(bin).is_file()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "PostgreSQL server binaries not found (looked in {}); install them with \
                 `apt-get install postgresql` or set DATABASE_URL",
                looked.join(", ")
            )
        })
}

/// Returns `<debian_root>/<version>/bin` for each installed version, highest first.
fn debian_bindirs(debian_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(debian_root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        for bin in REQUIRED {
            std::fs::write(dir.join(bin), "").unwrap();
        }
        dir.to_owned()
    }

    #[test]
    fn missing_binaries_are_reported_with_the_places_searched_and_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let partial = root.path().join("partial");
        std::fs::create_dir(&partial).unwrap();
        std::fs::write(partial.join("pg_ctl"), "").unwrap();

        let error = find_dir(None, &root.path().join("none"), Some(partial.into()))
            .unwrap_err()
            .to_string();

        assert!(error.starts_with("PostgreSQL server binaries not found (looked in "));
        assert!(error.contains("/none/*/bin"), "{error}");
        assert!(error.contains("$PATH"), "{error}");
        assert!(
            error.contains("`apt-get install postgresql` or set DATABASE_URL"),
            "{error}"
        );
    }

    #[test]
    fn the_highest_debian_version_wins_over_path() {
        let root = tempfile::tempdir().unwrap();
        let debian = root.path().join("debian");
        install(&debian.join("9.6/bin"));
        let newest = install(&debian.join("15/bin"));
        install(&debian.join("13/bin"));
        let on_path = install(&root.path().join("path"));

        let found = find_dir(None, &debian, Some(on_path.into())).unwrap();

        assert_eq!(found, newest);
    }

    #[test]
    fn the_environment_variable_wins_and_path_is_the_last_resort() {
        let root = tempfile::tempdir().unwrap();
        let chosen = install(&root.path().join("chosen"));
        let on_path = install(&root.path().join("path"));
        let debian = root.path().join("debian");

        let with_var = find_dir(
            Some(chosen.clone().into()),
            &debian,
            Some(on_path.clone().into()),
        );
        let without_var = find_dir(None, &debian, Some(on_path.clone().into()));

        assert_eq!(with_var.unwrap(), chosen);
        assert_eq!(without_var.unwrap(), on_path);
    }
}
