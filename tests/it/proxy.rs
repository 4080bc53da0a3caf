//! A TCP proxy on loopback that the tests break on purpose: it forwards connections to a
//! target and can cut every connection after a chosen number of bytes from the target,
//! refuse to forward anything (a partition), freeze (keep the sockets open and forward
//! nothing: a host that vanished without closing its connections), or throttle (a slow link).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward both ways.
    Forward,
    /// Close every connection, open or new: the target is cut off.
    Cut,
    /// Keep connections open, forward nothing.
    Freeze,
    /// Forward both ways, the client's bytes at no more than this many per second (a slow
    /// link towards the target).
    Throttle(u64),
}

/// A running proxy; dropping it stops accepting.
pub(crate) struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    budgets: Arc<Mutex<VecDeque<usize>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy on `127.0.0.1` (any free port) to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("address");
        let (mode, modes) = watch::channel(Mode::Forward);
        let budgets: Arc<Mutex<VecDeque<usize>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let task = {
            let budgets = Arc::clone(&budgets);
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else { return };
                    connections.fetch_add(1, Ordering::SeqCst);
                    if *modes.borrow() == Mode::Cut {
                        drop(client);
                        continue;
                    }
                    let budget = budgets.lock().expect("lock").pop_front();
                    tokio::spawn(connection(client, target, modes.clone(), budget));
                }
            })
        };
        Self { addr, mode, budgets, connections, task }
    }

    /// The address to connect to instead of the target.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Changes what the proxy does, for open connections too.
    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The next connections are each closed after forwarding this many bytes from the
    /// target, one budget per connection in order; later connections are not cut.
    pub(crate) fn cut_after(&self, bytes: impl IntoIterator<Item = usize>) {
        self.budgets.lock().expect("lock").extend(bytes);
    }

    /// Forgets the budgets no connection took.
    pub(crate) fn clear_cuts(&self) {
        self.budgets.lock().expect("lock").clear();
    }
}

async fn connection(client: TcpStream, target: SocketAddr, mut modes: watch::Receiver<Mode>, budget: Option<usize>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    let mut left = budget.unwrap_or(usize::MAX);
    loop {
        let mode = *modes.borrow_and_update();
        match mode {
            Mode::Cut => return,
            Mode::Freeze => {
                // Hold the sockets, forward nothing, until told otherwise.
                if modes.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Forward | Mode::Throttle(_) => {}
        }
        tokio::select! {
            _ = modes.changed() => {}
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                    if let Mode::Throttle(rate) = mode {
                        // The link's pace: these bytes take n / rate seconds to cross it.
                        tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate.max(1) as f64)).await;
                    }
                }
            },
            read = server_read.read(&mut down[..left.clamp(1, 16 * 1024)]) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                    left = left.saturating_sub(n);
                    if left == 0 {
                        return;
                    }
                }
            },
        }
    }
}
