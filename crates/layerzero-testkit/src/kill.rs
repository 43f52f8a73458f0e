//! Killing a child process with SIGKILL at a chosen moment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The seed variable for [`Moments::from_env`].
pub const SEED_ENV: &str = "LAYERZERO_KILL_SEED";

/// Random kill moments from a seed: a small xorshift generator, since the moments need no
/// statistical quality, only a seed that replays them.
#[derive(Debug)]
pub struct Moments(u64);

impl Moments {
    /// Seeded from `LAYERZERO_KILL_SEED`, or from the clock when it is unset; the seed is
    /// printed on stderr, so a failing test's output says how to replay it.
    pub fn from_env() -> Self {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill moments from {SEED_ENV}={seed}");
        Moments::from_seed(seed)
    }

    /// Seeded from `seed` (any value: zero, which xorshift cannot leave, is avoided).
    pub fn from_seed(seed: u64) -> Self {
        Moments(seed | 1)
    }

    /// A duration uniform in `[lo, hi)` × `span`.
    pub fn within(&mut self, span: Duration, lo: f64, hi: f64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        span.mul_f64(lo + (hi - lo) * u)
    }
}

/// When to kill the child.
#[derive(Debug, Clone)]
pub enum KillPoint {
    /// This long after [`kill_at`] was called.
    After(Duration),
    /// As soon as a new file whose name contains `.tmp` appears in this folder: an atomic write
    /// (checkpoint, weights, results) is in progress. Temporary files already there when
    /// [`kill_at`] is called (an earlier kill's) do not count.
    DuringWrite(PathBuf),
    /// As soon as this file exists.
    OnceExists(PathBuf),
}

/// What happened at a kill point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// Killed with SIGKILL at the point.
    Yes,
    /// The child finished, successfully, before the point came.
    FinishedFirst,
}

/// The names in `dir` that contain `.tmp` (none when `dir` does not exist yet).
pub fn tmp_files(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect()
}

/// Waits for `point` and kills `child` with SIGKILL there, or returns
/// [`Killed::FinishedFirst`] when the child exits first.
///
/// # Panics
/// When the child exits unsuccessfully before the point, or the point has not come after
/// `give_up_after`.
pub fn kill_at(mut child: Child, point: &KillPoint, give_up_after: Duration) -> Killed {
    let start = Instant::now();
    let old_tmp = match point {
        KillPoint::DuringWrite(dir) => tmp_files(dir),
        _ => Vec::new(),
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed before {point:?}: {status}");
            return Killed::FinishedFirst;
        }
        let now = match point {
            KillPoint::After(d) => start.elapsed() >= *d,
            KillPoint::DuringWrite(dir) => tmp_files(dir).iter().any(|n| !old_tmp.contains(n)),
            KillPoint::OnceExists(p) => p.exists(),
        };
        if now {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return Killed::Yes;
        }
        assert!(start.elapsed() < give_up_after, "{point:?} never came");
        // A small network's checkpoint takes milliseconds to write: poll often while waiting
        // for one.
        std::thread::sleep(Duration::from_micros(match point {
            KillPoint::DuringWrite(_) => 100,
            _ => 2_000,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn moments_replay_from_the_seed_and_stay_in_range() {
        let span = Duration::from_secs(10);
        let draw = |seed| {
            let mut m = Moments::from_seed(seed);
            (0..50)
                .map(|_| m.within(span, 0.2, 0.6))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        assert!(a
            .iter()
            .all(|d| *d >= span.mul_f64(0.2) && *d < span.mul_f64(0.6)));
    }

    #[test]
    fn kills_a_running_child_and_sees_one_that_finished() {
        let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let t = Instant::now();
        let point = KillPoint::After(Duration::from_millis(50));
        assert_eq!(
            kill_at(sleeper, &point, Duration::from_secs(20)),
            Killed::Yes
        );
        assert!(t.elapsed() < Duration::from_secs(20));

        let quick = Command::new("true").spawn().unwrap();
        let never = KillPoint::OnceExists(PathBuf::from("/nonexistent/layerzero-testkit"));
        assert_eq!(
            kill_at(quick, &never, Duration::from_secs(20)),
            Killed::FinishedFirst
        );
    }

    #[test]
    fn a_write_already_in_progress_is_not_a_new_one() {
        let dir = std::env::temp_dir().join(format!("lz-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("old.tmp-1"), b"").unwrap();
        let writer = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 0.3; touch {}; sleep 30",
                dir.join("new.tmp-2").display()
            ))
            .spawn()
            .unwrap();
        let t = Instant::now();
        let point = KillPoint::DuringWrite(dir.clone());
        assert_eq!(
            kill_at(writer, &point, Duration::from_secs(20)),
            Killed::Yes
        );
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "killed on the old file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
