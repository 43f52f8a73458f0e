//! Test helpers: synthetic CIFAR files and archives, and a loopback HTTP server.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// `n` CIFAR-10 records; record `i` has label `i % 10` and every pixel equal to `i % 251`.
pub fn records(n: usize, offset: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3073);
    for i in offset..offset + n {
        out.push((i % 10) as u8);
        out.extend(std::iter::repeat_n((i % 251) as u8, 3072));
    }
    out
}

/// Writes a complete, valid synthetic CIFAR-10 folder.
pub fn write_cifar10_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..5 {
        std::fs::write(
            dir.join(format!("data_batch_{}.bin", k + 1)),
            records(10_000, k * 10_000),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), records(10_000, 50_000)).unwrap();
    std::fs::write(
        dir.join("batches.meta.txt"),
        CLASS_NAMES.join("\n") + "\n\n",
    )
    .unwrap();
}

/// A `.tar.gz` holding `entries` (path inside the archive, contents).
pub fn tar_gz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`; write the raw name so traversal cases can be built too.
        let name = header.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A complete synthetic CIFAR-10 archive in the official layout.
pub fn synthetic_cifar10_archive() -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = (0..5)
        .map(|k| {
            (
                format!("cifar-10-batches-bin/data_batch_{}.bin", k + 1),
                records(10_000, k * 10_000),
            )
        })
        .collect();
    entries.push((
        "cifar-10-batches-bin/test_batch.bin".into(),
        records(10_000, 50_000),
    ));
    entries.push((
        "cifar-10-batches-bin/batches.meta.txt".into(),
        (CLASS_NAMES.join("\n") + "\n").into_bytes(),
    ));
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.clone()))
        .collect();
    tar_gz(&refs)
}

/// How the test server answers a path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Arc<Vec<u8>>),
    /// 200 announcing the full length, then closing after `sent` bytes.
    CutShort(Arc<Vec<u8>>, usize),
    /// 404.
    NotFound,
}

/// A loopback HTTP/1.1 server on an ephemeral port that answers every request with `reply`.
/// It stops by itself after `max_requests` connections or 120 s.
pub struct TestServer {
    pub url: String,
    server: layerzero_testkit::http::Server,
}

impl TestServer {
    pub fn start(reply: Reply, max_requests: usize) -> Self {
        let server =
            layerzero_testkit::http::Server::start(max_requests, move |_, _| response(&reply));
        TestServer {
            url: format!("{}/cifar-10-binary.tar.gz", server.base),
            server,
        }
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> usize {
        self.server.requests().len()
    }
}

fn response(reply: &Reply) -> Vec<u8> {
    let (head, body): (String, &[u8]) = match reply {
        Reply::Body(body) => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            body,
        ),
        Reply::CutShort(body, sent) => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body[..*sent],
        ),
        Reply::NotFound => {
            let msg = b"no such file";
            (
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    msg.len()
                ),
                msg,
            )
        }
    };
    [head.as_bytes(), body].concat()
}

/// Every entry under `dir`, relative, sorted (empty if `dir` does not exist).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}
