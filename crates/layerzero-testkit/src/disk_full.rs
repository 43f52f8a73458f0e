//! A full disk, simulated: one `#[ignore]`d test of the calling test binary run as a child
//! process with `RLIMIT_FSIZE` set and `SIGXFSZ` ignored, so that a write past the limit fails
//! with `EFBIG` instead of killing the process. The child finds its folder in [`DIR_ENV`]
//! ([`child_dir`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable that passes the folder to work in to the child.
pub const DIR_ENV: &str = "LAYERZERO_DISK_FULL_DIR";

/// Runs the ignored test `child` of this test binary, working in `dir`, with every file it
/// writes limited to `limit` bytes. Returns its stdout and stderr.
///
/// # Panics
/// When the child fails, or did not run exactly one test (a misspelt `child`).
pub fn run_limited(child: &str, dir: &Path, limit: u64) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        child,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_ENV, dir);
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {child} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {child} did not run:\n{text}"
    );
    text
}

/// The folder [`run_limited`] gave the child.
///
/// # Panics
/// Outside such a child.
pub fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR_ENV).expect("run by a disk-full test"))
}

/// The names in `dir`, sorted: what a failed write left there.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}
