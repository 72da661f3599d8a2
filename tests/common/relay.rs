//! A TCP relay between Sluice and a real server (the machine's Redis), which a test can take
//! away and bring back: the way a store fails in the field, without touching the shared
//! server itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Relay {
    pub port: u16,
    target: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let relay = Arc::new(Self {
            port: listener.local_addr().expect("addr").port(),
            target,
            tasks: Mutex::default(),
        });
        relay.serve(listener);
        relay
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let relay = self.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = relay.target;
                let connection = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                relay.tasks.lock().unwrap().push(connection);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every relayed connection: the server is gone.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn resume(self: &Arc<Self>) {
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                // The aborted accept task may take a moment to drop its socket.
                Err(_) => tokio::task::yield_now().await,
            }
        };
        self.serve(listener);
    }
}
