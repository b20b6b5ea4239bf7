//! Process facts and signals shared by the services: host name, node id, and
//! the shutdown signal.

/// The host name, from `HOSTNAME` or `/etc/hostname`.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// A node id for the fleet view: the host name (or `service`) plus a random
/// suffix, unique per process.
pub fn default_node_id(service: &str) -> String {
    let host = hostname().unwrap_or_else(|| service.to_owned());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Resolves on SIGTERM or SIGINT, the start of a drain.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGTERM.");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_ids_are_unique_per_call() {
        let a = super::default_node_id("gateway");
        let b = super::default_node_id("gateway");
        assert_ne!(a, b);
        assert_eq!(a.rsplit('-').next().map(str::len), Some(8));
    }
}
