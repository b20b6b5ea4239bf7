//! The limits of one listener, and fitting the connection caps to the
//! process's file-descriptor limit.

use std::time::Duration;

use tracing::warn;

/// Limits a listener applies to every connection. Each service reads them
/// from its `[server]` settings (`header_timeout_secs`, `idle_timeout_secs`,
/// `max_connections`, and for the admin `body_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers: from the
    /// connection's accept for its first request, from the first byte for
    /// later ones. Past it the connection is closed.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait, with no request in flight,
    /// for the first byte of its next request. Past it the connection is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once on this listener; more are accepted and
    /// closed at once with a static 503, counted and logged.
    pub max_connections: usize,
    /// How long a client may take to send a whole request body, measured from
    /// the request's headers; `None` where the service applies its own (the
    /// gateway's proxy does, to answer in OpenAI's error shape).
    pub body_timeout: Option<Duration>,
}

/// Descriptors kept free for everything but client connections: the
/// database pool, upstream connections, the listeners, files and logs.
pub const FD_RESERVE: u64 = 256;

/// The soft limit on open files of this process, from `/proc/self/limits`;
/// `None` where that file is missing (not Linux) or says `unlimited`.
pub fn soft_fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_soft_fd_limit(&text)
}

fn parse_soft_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// A cap to fit: its setting's name, the limits holding it, and the
/// descriptors each of its connections may hold (the gateway's proxy: 2,
/// its client's and, while a request is in flight, its upstream's).
pub type Cap<'a> = (&'a str, &'a mut ConnectionLimits, u64);

/// Lowers the connection caps in `caps` so that their connections, with the
/// descriptors each may hold, fit together into the soft file-descriptor
/// limit less [`FD_RESERVE`], scaling each in proportion, and logs a warning
/// naming the settings when it does. A cap past the limit would let idle or
/// slow clients exhaust descriptors (`EMFILE`), so that accepts or upstream
/// connects fail for everyone; a lowered cap refuses the excess instead.
pub fn fit_caps_to_fd_limit(caps: &mut [Cap<'_>]) {
    if let Some(limit) = soft_fd_limit() {
        fit_caps(limit, caps);
    }
}

fn fit_caps(fd_limit: u64, caps: &mut [Cap<'_>]) {
    let available = fd_limit.saturating_sub(FD_RESERVE).max(caps.len() as u64);
    let total: u64 = caps
        .iter()
        .map(|(_, l, fds)| l.max_connections as u64 * (*fds).max(1))
        .sum();
    if total <= available {
        return;
    }
    let mut lowered = Vec::new();
    for (setting, limits, _) in caps.iter_mut() {
        let cap = limits.max_connections as u64;
        let fitted = (cap * available / total).max(1);
        limits.max_connections = usize::try_from(fitted).unwrap_or(limits.max_connections);
        lowered.push(format!("{setting} {cap} -> {fitted}"));
    }
    warn!(
        fd_limit,
        reserve = FD_RESERVE,
        lowered = %lowered.join(", "),
        "Connection caps exceed the open-file limit (ulimit -n); lowered them to fit. Raise the limit or lower the settings named."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: max,
            body_timeout: None,
        }
    }

    #[test]
    fn parses_the_soft_limit_of_open_files() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             unlimited            unlimited            processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_soft_fd_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_soft_fd_limit(unlimited), None);
        assert_eq!(parse_soft_fd_limit(""), None);
    }

    #[test]
    fn this_process_has_a_readable_limit() {
        assert!(soft_fd_limit().is_some_and(|l| l > 0));
    }

    #[test]
    fn caps_over_the_limit_are_scaled_down_in_proportion() {
        let (mut proxy, mut ops) = (limits(10_000), limits(1_000));
        fit_caps(
            1_356,
            &mut [
                ("server.max_connections", &mut proxy, 1),
                ("server.ops_max_connections", &mut ops, 1),
            ],
        );
        assert_eq!((proxy.max_connections, ops.max_connections), (1_000, 100));
        let mut fits = limits(500);
        fit_caps(20_000, &mut [("server.max_connections", &mut fits, 1)]);
        assert_eq!(fits.max_connections, 500);
    }

    #[test]
    fn a_proxy_connection_counts_its_upstream_descriptor_too() {
        // 20,000 descriptors: 10,000 proxied connections and their 10,000
        // upstream connections would not fit beside the reserve.
        let (mut proxy, mut ops) = (limits(10_000), limits(64));
        fit_caps(
            20_000,
            &mut [
                ("server.max_connections", &mut proxy, 2),
                ("server.ops_max_connections", &mut ops, 1),
            ],
        );
        let used = proxy.max_connections as u64 * 2 + ops.max_connections as u64;
        assert!(used <= 20_000 - FD_RESERVE, "{used}");
        assert_eq!((proxy.max_connections, ops.max_connections), (9_840, 62));
        let mut fits = limits(9_000);
        fit_caps(20_000, &mut [("server.max_connections", &mut fits, 2)]);
        assert_eq!(fits.max_connections, 9_000);
    }
}
