//! Records the git commit the binary is built from (`LAYERZERO_GIT_COMMIT`), for the
//! provenance of `layerzero report`: the commit of the directory the report is run in would
//! be the user's project, not layerzero's. A build from a checkout with uncommitted changes to
//! the binary's sources records `<sha>+uncommitted changes`, as `cargo xtask reproduce` does
//! (for any tracked file): the commit alone would name code that is not what ran.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // `--no-optional-locks`: `git status` would otherwise refresh and rewrite the index, which
    // this script watches (a needless re-run on the next build), and take `index.lock`, which
    // would fail a `git commit` running meanwhile (rust-analyzer runs build scripts on save).
    let out = Command::new("git")
        .arg("--no-optional-locks")
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
    // What goes into the binary, and what is watched below: an edited README neither marks
    // the binary nor re-runs this script.
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources: Vec<PathBuf> = ["crates", "vendor", "Cargo.toml", "Cargo.lock"]
        .iter()
        .filter_map(|p| workspace.join(p).canonicalize().ok())
        .collect();
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(sources.iter().filter_map(|p| p.to_str()));
    let dirty = git(&status).is_some_and(|s| !s.is_empty());
    if dirty {
        println!("cargo:rustc-env=LAYERZERO_GIT_COMMIT={commit}+uncommitted changes");
    } else {
        println!("cargo:rustc-env=LAYERZERO_GIT_COMMIT={commit}");
    }
    // Run again when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref
    // (a loose file, or packed-refs after `git gc`) and the index. And when the source that
    // goes into the binary changes, which may make the tree clean or dirty: the workspace's
    // crates (cargo scans a watched folder's files), the vendored candle and the manifests.
    // Only paths that exist: cargo re-runs a build script whose watched path is missing on
    // every build.
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let refs = [
            Some("HEAD"),
            Some("packed-refs"),
            Some("index"),
            branch.as_deref(),
        ];
        watched.extend(refs.into_iter().flatten().map(|p| dir.join(p)));
    }
    watched.extend(sources);
    for path in watched {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
