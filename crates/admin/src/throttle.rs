//! The brake on admin token guessing: failures counted per client in a fixed
//! window. Its warnings are limited with `obleth_service::ratelog`.
//!
//! A client is its IP address (an IPv6 client its /64, which one host usually
//! holds whole). A client past `auth.max_failures` failures within
//! `auth.failure_window_secs` is answered 429 before its token is even looked
//! at, so guessing slows to `max_failures` a window whatever the client sends.
//! The cost: clients behind one NAT share a budget, and one of them guessing
//! locks the others out until the window ends; tokens are long enough that the
//! default budget leaves no room for guessing.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Most clients remembered at once; past this the least recently seen are
/// forgotten, which bounds memory under a spray from many addresses.
const MAX_CLIENTS: u64 = 100_000;

/// The bucket a request counts against: its client's address, or one shared
/// bucket when the server did not say who the client is.
pub type ClientKey = Option<IpAddr>;

/// The key for a peer address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6
/// as the IPv4 address).
pub fn client_key(ip: Option<IpAddr>) -> ClientKey {
    ip.map(|ip| match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    })
}

/// One client's failures in its current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    failures: AtomicU32,
}

/// Failures per client, forgotten when their window ends.
#[derive(Debug, Clone)]
pub struct AuthThrottle {
    clients: Cache<ClientKey, Arc<Window>>,
    max_failures: u32,
    window: Duration,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration) -> AuthThrottle {
        AuthThrottle {
            // Time to live from insertion: the window starts at the first
            // failure and its entry goes when it ends.
            clients: Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_live(window)
                .build(),
            max_failures,
            window,
        }
    }

    /// When `client` has used up its failures: how long until its window
    /// ends (at least one second, for `Retry-After`).
    pub fn blocked(&self, client: ClientKey) -> Option<Duration> {
        let window = self.clients.get(&client)?;
        if window.failures.load(Ordering::Relaxed) < self.max_failures {
            return None;
        }
        let left = self.window.saturating_sub(window.started.elapsed());
        Some(left.max(Duration::from_secs(1)))
    }

    /// Counts a failure of `client`.
    pub fn record_failure(&self, client: ClientKey) {
        let window = self.clients.get_with(client, || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        window.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_blocked_after_its_failures_and_others_are_not() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(60));
        let a = client_key(Some("10.0.0.1".parse().unwrap()));
        let b = client_key(Some("10.0.0.2".parse().unwrap()));
        for _ in 0..3 {
            assert_eq!(throttle.blocked(a), None);
            throttle.record_failure(a);
        }
        let left = throttle.blocked(a).unwrap();
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
        assert_eq!(throttle.blocked(b), None);
        assert_eq!(throttle.blocked(None), None);
    }

    #[test]
    fn a_window_ends_and_the_client_may_try_again() {
        let throttle = AuthThrottle::new(1, Duration::from_millis(50));
        throttle.record_failure(None);
        assert!(throttle.blocked(None).is_some());
        let deadline = Instant::now() + Duration::from_secs(30);
        while throttle.blocked(None).is_some() {
            assert!(Instant::now() < deadline, "the window never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let one = client_key(Some("2001:db8:1:2::1".parse().unwrap()));
        let other = client_key(Some("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_eq!(one, other);
        assert_ne!(one, client_key(Some("2001:db8:1:3::1".parse().unwrap())));
        assert_eq!(
            client_key(Some("::ffff:10.0.0.1".parse().unwrap())),
            client_key(Some("10.0.0.1".parse().unwrap()))
        );
    }
}
