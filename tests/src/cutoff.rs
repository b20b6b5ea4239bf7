//! A TCP forwarder on loopback that can cut its path: every open connection
//! closed and new ones refused, as when a network partition parts a process
//! from its database, then restored. No `tc netem` here, so this is the fault.

use std::sync::Arc;

use obleth_testkit::proc::free_port;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running forwarder from `port` to `127.0.0.1:target`.
#[derive(Debug)]
pub struct Cutoff {
    pub port: u16,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cutoff {
    pub async fn start(target: u16) -> anyhow::Result<Cutoff> {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let state = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *state.borrow() {
                    // Cut: accepted and dropped at once, as a partition's
                    // reset would end it.
                    continue;
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Cutoff { port, cut, task })
    }

    /// Closes every open connection and refuses new ones until [`Cutoff::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Cutoff {
    fn drop(&mut self) {
        self.task.abort();
    }
}
