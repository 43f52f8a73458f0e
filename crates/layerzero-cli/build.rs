//! Records the git commit the binary is built from (`LAYERZERO_GIT_COMMIT`), for the
//! provenance of `layerzero report`: the commit of the directory the report is run in would
//! be the user's project, not layerzero's.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // Outside a git checkout (a crates.io or vendored source) there is no commit to record.
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=LAYERZERO_GIT_COMMIT={commit}");
    // Run again when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref
    // (a loose file, or packed-refs after `git gc`).
    // Only files that exist: cargo re-runs a build script whose watched file is missing on
    // every build.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let watched = [Some("HEAD"), Some("packed-refs"), branch.as_deref()];
        for path in watched.into_iter().flatten().map(|p| dir.join(p)) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
