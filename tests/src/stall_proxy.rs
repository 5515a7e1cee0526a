//! A TCP proxy in front of a server that can be made to stop answering, as a Redis primary lost
//! in a failover looks to its clients: [`StallProxy::stop`] keeps every socket open and forwards
//! nothing on them, ever again (half-open connections), and so do the connections accepted while
//! stopped; after [`StallProxy::resume`] new connections are forwarded again (the new primary).
//! A client that waits on an old socket without a timeout hangs forever.
//! [`StallProxy::served_bytes`] counts what the server sent to the clients: what a client read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub struct StallProxy {
    port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: String,
    /// Bumped by each stop: a connection forwards only while the epoch it was accepted in lasts.
    epoch: watch::Sender<u64>,
    stopped: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: watch::Sender<usize>,
    /// Bytes forwarded from the server to the clients.
    served: AtomicU64,
    /// The accept loop and every connection's tasks, ended when the proxy is dropped.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl StallProxy {
    /// A proxy on a spare port of 127.0.0.1 to `upstream` (`host:port`), forwarding.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the proxy");
        let port = listener.local_addr().expect("its address").port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            epoch: watch::channel(0).0,
            stopped: watch::channel(false).0,
            accepted: watch::channel(0).0,
            served: AtomicU64::new(0),
            tasks: Mutex::new(vec![]),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        Self { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops answering: the connections open now, and those accepted until [`Self::resume`],
    /// forward nothing more, ever; their sockets stay open.
    pub fn stop(&self) {
        self.shared.stopped.send_replace(true);
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// New connections are forwarded again (those frozen by [`Self::stop`] stay frozen).
    pub fn resume(&self) {
        self.shared.stopped.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.shared.accepted.borrow()
    }

    /// Bytes the server has sent to the clients so far, over every connection.
    pub fn served_bytes(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for more than `n` connections in all; false if none came.
    pub async fn accepted_more_than(&self, n: usize, within: Duration) -> bool {
        let mut rx = self.shared.accepted.subscribe();
        let came = tokio::time::timeout(within, rx.wait_for(|a| *a > n)).await.is_ok();
        came
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        shared.accepted.send_modify(|a| *a += 1);
        let epoch = *shared.epoch.borrow();
        let task = if *shared.stopped.borrow() {
            // Accepted, then never answered: held until the proxy is dropped.
            tokio::spawn(async move {
                let _held = client;
                std::future::pending::<()>().await;
            })
        } else {
            tokio::spawn(forward(client, shared.clone(), epoch))
        };
        shared.tasks.lock().unwrap().push(task.abort_handle());
    }
}

async fn forward(client: TcpStream, shared: Arc<Shared>, epoch: u64) {
    let Ok(server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let (client_in, client_out) = client.into_split();
    let (server_in, server_out) = server.into_split();
    let up = tokio::spawn(pump(client_in, server_out, shared.epoch.subscribe(), epoch, None));
    let down = tokio::spawn(pump(server_in, client_out, shared.epoch.subscribe(), epoch, Some(shared.clone())));
    let mut tasks = shared.tasks.lock().unwrap();
    tasks.push(up.abort_handle());
    tasks.push(down.abort_handle());
}

/// Copies `from` to `to` while the epoch is still `epoch`; after a stop, what it reads is dropped
/// and both halves are held open, silent, until the task is aborted. Counts what it forwards in
/// `counted`'s `served`, when given.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    current: watch::Receiver<u64>,
    epoch: u64,
    counted: Option<Arc<Shared>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if *current.borrow() != epoch {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(shared) = &counted {
            shared.served.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    // Half-open: keep reading (so the peer's writes succeed) and forward nothing.
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
    let _held = to;
    std::future::pending::<()>().await;
}
