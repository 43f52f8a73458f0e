//! Harness pieces that the kill-and-resume, disk-full and download tests of several crates
//! share (`layerzero-train`, `layerzero-ablate`, the CLI and xtask; `layerzero-data` and
//! `layerzero-models`). A dev-dependency only: no library or binary of layerzero uses it, and
//! it knows nothing of their types. What each test checks after a kill, a failed write or a
//! download stays in that test; what is here only produces the kill or the full disk, or
//! serves the replies a test chose.
//!
//! - [`kill`]: start a child, then SIGKILL it at a [`kill::KillPoint`] (a moment, the start of
//!   an atomic write, a file appearing), with moments drawn from a seed the test prints so a
//!   failure can be replayed.
//! - [`disk_full`]: run one `#[ignore]`d test of the same test binary as a child process whose
//!   files are limited to some bytes, so its next write fails with `EFBIG` as on a full disk.
//! - [`http`]: a loopback HTTP server answering with the test's reply function (the CIFAR-10
//!   downloader's and the `hf://` download's tests).
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use layerzero_testkit::kill::{kill_at, KillPoint, Killed, Moments};
//!
//! let mut moments = Moments::from_env();
//! let child = Command::new("sleep").arg("5").spawn().unwrap();
//! let point = KillPoint::After(moments.within(Duration::from_secs(5), 0.1, 0.9));
//! assert_eq!(kill_at(child, &point, Duration::from_secs(60)), Killed::Yes);
//! ```

pub mod disk_full;
pub mod http;
pub mod kill;
