//! A TCP relay on a loopback port between two real servers (a Redis replica
//! and its master), which a test can cut and restore: the link between two
//! "regions" going down and coming back, without root or namespaces.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The relay; cut on drop.
pub struct LinkCut {
    /// The port clients dial.
    pub port: u16,
    target: u16,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl LinkCut {
    /// Relays `port` (a free one) to `127.0.0.1:target`.
    pub fn new(target: u16) -> LinkCut {
        let link = LinkCut {
            port: crate::fixtures::free_port(),
            target,
            open: Arc::new(AtomicBool::new(false)),
            streams: Arc::default(),
        };
        link.restore();
        link
    }

    /// Opens the relay again (on the same port).
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (open, streams, target) = (self.open.clone(), self.streams.clone(), self.target);
        std::thread::spawn(move || {
            while open.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        let mut kept = streams.lock().unwrap();
                        kept.push(client.try_clone().unwrap());
                        kept.push(server.try_clone().unwrap());
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // The listener closes here: new connections are refused.
        });
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Let the accept loop see the flag and drop its listener.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
