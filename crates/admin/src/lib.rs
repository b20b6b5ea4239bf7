//! obleth-admin: filled in by its own issue; for now it carries the shared
//! command line so the binary, its `--help` and its version exist.
