//! The upstream client's name resolver: the system resolver, then the
//! `[egress]` address policy on what it answered.
//!
//! A provider's host name is judged by the addresses it resolves to at connect
//! time, not when the provider was written: a name may resolve to
//! 169.254.169.254 (by design or by DNS rebinding) long after the admin
//! accepted it. Refused addresses are dropped; when none is left the attempt
//! fails with the [`EgressRefusal`], which the upstream client reports as a
//! refusal, and no connection is made.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use obleth_config::egress::EgressRefusal;
use obleth_config::EgressSettings;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`GaiResolver`] whose answers pass the egress policy.
#[derive(Debug, Clone)]
pub struct EgressResolver {
    inner: GaiResolver,
    policy: Arc<EgressSettings>,
}

impl EgressResolver {
    pub fn new(policy: Arc<EgressSettings>) -> EgressResolver {
        EgressResolver {
            inner: GaiResolver::new(),
            policy,
        }
    }
}

impl Service<Name> for EgressResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        // Metadata names are refused before they are looked up at all.
        let by_name = policy.check_host(name.as_str());
        let lookup = self.inner.call(name);
        Box::pin(async move {
            by_name.map_err(BoxError::from)?;
            let addrs = lookup.await.map_err(BoxError::from)?;
            allowed(&policy, addrs)
                .map(Vec::into_iter)
                .map_err(BoxError::from)
        })
    }
}

/// The addresses `policy` allows, or the first refusal when it allows none.
fn allowed(
    policy: &EgressSettings,
    addrs: impl Iterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, EgressRefusal> {
    let mut kept = Vec::new();
    let mut first_refusal = None;
    for addr in addrs {
        match policy.check_ip(addr.ip()) {
            Ok(()) => kept.push(addr),
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    match (kept.is_empty(), first_refusal) {
        (true, Some(refusal)) => Err(refusal),
        _ => Ok(kept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn refused_addresses_are_dropped_and_none_left_is_a_refusal() {
        let policy = EgressSettings::default();
        let mixed = addrs(&["169.254.169.254:80", "93.184.216.34:80"]);
        assert_eq!(
            allowed(&policy, mixed.into_iter()).unwrap(),
            addrs(&["93.184.216.34:80"])
        );
        let metadata = addrs(&["169.254.169.254:80", "[fe80::1]:80"]);
        let e = allowed(&policy, metadata.into_iter()).unwrap_err();
        assert!(e.to_string().contains("169.254.169.254"), "{e}");
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_refused() {
        let strict = Arc::new(EgressSettings {
            allow_private_networks: false,
            ..EgressSettings::default()
        });
        let mut resolver = EgressResolver::new(strict);
        let e = resolver
            .call("localhost".parse().unwrap())
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<EgressRefusal>().is_some(), "{e}");

        let mut resolver = EgressResolver::new(Arc::new(EgressSettings::default()));
        let ok: Vec<_> = resolver
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!ok.is_empty());
        let e = resolver
            .call("metadata.google.internal".parse().unwrap())
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<EgressRefusal>().is_some(), "{e}");
    }
}
