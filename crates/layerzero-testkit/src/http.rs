//! The part every loopback HTTP test server here needs: reading one request's head.
//!
//! The CIFAR-10 downloader's tests (`layerzero-data`) and the `hf://` download test
//! (`layerzero-models`, feature `hub`) each answer with their own replies; both read the
//! request the same way, one connection per request (they answer `Connection: close`).

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

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
    use std::io::Write;
    use std::net::TcpListener;

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
