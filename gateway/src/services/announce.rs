//! Says "listening on URL" (and "metrics on URL") only once each address takes a TCP
//! connection: Pingora binds its listeners after `main` hands it control, so a script
//! that connected on reading an earlier line could be refused.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Prints each line once its address accepts a TCP connection, in order.
pub struct Announce {
    pub lines: Vec<(std::net::SocketAddr, String)>,
}

#[async_trait]
impl BackgroundService for Announce {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);
        let started = std::time::Instant::now();
        for (addr, line) in &self.lines {
            loop {
                let probe = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    tokio::net::TcpStream::connect(addr),
                );
                if let Ok(Ok(_)) = probe.await {
                    break;
                }
                if started.elapsed() > GIVE_UP {
                    tracing::error!(%addr, "the listener never took a connection");
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
            println!("{line}");
        }
    }
}
