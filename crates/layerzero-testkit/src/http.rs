//! Loopback HTTP test servers: [`Server`] accepts connections and answers each request with
//! what the test's reply function gives; [`read_request_head`] reads one request.
//!
//! The CIFAR-10 downloader's tests (`layerzero-data`) and the `hf://` download test
//! (`layerzero-models`, feature `hub`) each answer with their own replies; both serve one
//! request per connection (their replies say `Connection: close`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server on a fresh loopback port, answering in a thread of its own until it has accepted
/// `max_connections` connections or 120 s have passed, whichever comes first.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Answers each request with the bytes `reply(method, path)` gives (status line, headers
    /// and body, written as they are: a test can announce more than it sends), then closes the
    /// connection.
    pub fn start(
        max_connections: usize,
        reply: impl Fn(&str, &str) -> Vec<u8> + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut accepted = 0;
            while accepted < max_connections && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        accepted += 1;
                        let _ = answer(stream, &reply, &log);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { base, seen }
    }

    /// The requests answered so far, as `METHOD path`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(
    mut stream: TcpStream,
    reply: &impl Fn(&str, &str) -> Vec<u8>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some(head) = read_request_head(&mut stream)? else {
        return Ok(());
    };
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    log.lock().unwrap().push(format!("{method} {path}"));
    stream.write_all(&reply(method, path))?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// Reads `stream` up to the blank line that ends an HTTP request's head, and returns the head
/// (request line and headers, lossily decoded); `None` if the client closed the connection
/// first. Makes the stream blocking (a listener polled without blocking hands out
/// non-blocking streams) with a 10 s read timeout, so a stuck client fails the read rather
/// than hanging the test.
pub fn read_request_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answers_with_the_reply_and_logs_the_request() {
        let server = Server::start(2, |method, path| {
            format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Seen: {method} {path}\r\n\r\n")
                .into_bytes()
        });
        let addr = server.base.strip_prefix("http://").unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /x/y HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("X-Seen: GET /x/y\r\n"), "{got}");
        assert_eq!(server.requests(), ["GET /x/y"]);
    }

    #[test]
    fn reads_the_head_and_stops_at_the_blank_line() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"HEAD /a/b HTTP/1.1\r\nHost: x\r\n\r\nBODY")
                .unwrap();
            // A second connection closed before its head ends.
            let mut c2 = TcpStream::connect(addr).unwrap();
            c2.write_all(b"GET /c HTTP/1.1\r\n").unwrap();
            drop(c2);
            c
        });
        let (mut s, _) = listener.accept().unwrap();
        let head = read_request_head(&mut s).unwrap().unwrap();
        assert_eq!(head, "HEAD /a/b HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"BODY");
        let (mut s2, _) = listener.accept().unwrap();
        assert_eq!(read_request_head(&mut s2).unwrap(), None);
        drop(client.join().unwrap());
    }
}
