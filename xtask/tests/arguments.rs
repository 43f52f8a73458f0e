//! `cargo xtask bench` and `reproduce` refuse bad options before any work: a count of 0, an
//! `--out` that cannot be written, a peer named but missing, exiting 2 with a message that names
//! the flag; and a `reproduce` that fails before its data are there leaves no study record that
//! would refuse its corrected retry.
//!
//! Each run is small enough (ResNet-8, one step, one round, one sweep image) that without the
//! checks it ends in seconds too, with the wrong status; none downloads anything.

use std::path::Path;
use std::process::{Command, Output};

/// `xtask ARGS` in `dir` (where the default peer script is absent), without a peer interpreter.
fn xtask(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .env_remove("LAYERZERO_PEER_PYTHON")
        .env_remove("LAYERZERO_CIFAR10_ARCHIVE")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `bench` with `extra`, and small values (seconds of work) for the counts `extra` leaves out.
fn small_bench<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bench"];
    args.extend_from_slice(extra);
    for (flag, value) in [
        ("--steps", "1"),
        ("--rounds", "1"),
        ("--sweep-images", "1"),
        ("--threads", "1"),
        ("--depth", "8"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args
}

fn assert_bad_flag(o: &Output, flag: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
    assert!(err.contains(flag), "the message names {flag}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_refuses_zero_counts_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b0.json");
    for flag in ["--steps", "--rounds", "--sweep-images", "--threads"] {
        let o = xtask(
            dir.path(),
            &small_bench(&[flag, "0", "--out", out.to_str().unwrap()]),
        );
        assert_bad_flag(&o, flag);
        assert!(!out.exists(), "{flag} 0 wrote {}", out.display());
    }
}

#[test]
fn reproduce_refuses_zero_threads_and_seeds_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--threads", "--seeds"] {
        let o = reproduce_offline(
            dir.path(),
            &[
                "--profile",
                "smoke",
                "--arch",
                "resnet8",
                flag,
                "0",
                "--out",
                "run",
            ],
        );
        assert_bad_flag(&o, flag);
        assert!(
            !dir.path().join("run").exists(),
            "{flag} 0 made the run folder"
        );
    }
}

#[test]
fn bench_checks_out_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A folder.
    let o = xtask(
        dir.path(),
        &small_bench(&["--out", dir.path().to_str().unwrap()]),
    );
    assert_bad_flag(&o, "--out");
    // Under a file: its folder cannot be made.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let under = file.join("b.json");
    let o = xtask(
        dir.path(),
        &small_bench(&["--out", under.to_str().unwrap()]),
    );
    assert_bad_flag(&o, "--out");
}

#[test]
fn bench_refuses_a_named_peer_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let o = xtask(
        dir.path(),
        &small_bench(&["--peer", "/nonexistent", "--out", out.to_str().unwrap()]),
    );
    assert_bad_flag(&o, "--peer");
    assert!(!out.exists());

    // The interpreter named through the environment.
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(small_bench(&["--out", out.to_str().unwrap()]))
        .current_dir(dir.path())
        .env("LAYERZERO_PEER_PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    assert_bad_flag(&o, "LAYERZERO_PEER_PYTHON");
    assert!(!out.exists());
}

/// `reproduce ARGS` in `dir` with an archive that is not there: a run that gets past its
/// options fails at the fetch.
fn reproduce_offline(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "reproduce",
        "--archive",
        "absent.tar.gz",
        "--data-dir",
        "data",
    ];
    all.extend(args);
    xtask(dir, &all)
}

/// [`reproduce_offline`] of `arch` and `profile` into `run`.
fn reproduce_without_data(dir: &Path, arch: &str, profile: &str) -> Output {
    reproduce_offline(
        dir,
        &[
            "--profile",
            profile,
            "--arch",
            arch,
            "--out",
            "run",
            "--threads",
            "1",
        ],
    )
}

#[test]
fn a_reproduce_that_fails_before_its_data_leaves_the_folder_free() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("run").join("study.json");
    let o = reproduce_without_data(dir.path(), "resnet8", "smoke");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("absent.tar.gz"), "{}", stderr(&o));
    assert!(!study.exists(), "a failed fetch left {}", study.display());
    // The retry with another network and profile fails at the fetch again, not as "another
    // study".
    let o = reproduce_without_data(dir.path(), "resnet14", "quick");
    assert!(stderr(&o).contains("absent.tar.gz"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("its own --out"), "{}", stderr(&o));
}

#[test]
fn an_architecture_alias_is_the_same_study() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let record = |arch: &str| {
        let text = format!("{{\"arch\": \"{arch}\", \"profile\": \"smoke\"}}");
        std::fs::write(run.join("study.json"), text).unwrap();
    };
    // Both ways round: the alias against the one name and the one name against the alias (a
    // record written before reproduce took the one name).
    for (recorded, given) in [("resnet8", "resnet8-a"), ("resnet8-a", "resnet8")] {
        record(recorded);
        let o = reproduce_without_data(dir.path(), given, "smoke");
        let err = stderr(&o);
        assert!(
            err.contains("absent.tar.gz") && !err.contains("its own --out"),
            "{recorded} vs {given}: {err}"
        );
    }
    // Another network is still another study.
    record("resnet8");
    let o = reproduce_without_data(dir.path(), "resnet8-b", "smoke");
    assert!(stderr(&o).contains("its own --out"), "{}", stderr(&o));
}

#[test]
fn reproduce_refuses_an_unknown_network_or_profile_as_a_flag_mistake() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, args) in [
        ("--arch", ["--arch", "resnet21", "--profile", "smoke"]),
        ("--arch", ["--arch", "vgg11-bn", "--profile", "smoke"]),
        ("--profile", ["--arch", "resnet8", "--profile", "slow"]),
    ] {
        let mut all = args.to_vec();
        all.extend(["--out", "run"]);
        let o = reproduce_offline(dir.path(), &all);
        assert_bad_flag(&o, flag);
        assert!(!dir.path().join("run").exists(), "{args:?}");
    }
}

/// Without --out, a study folder an older version made under an alias's name
/// (`runs/resnet8-a-smoke`) is where the study goes on, not a new `runs/resnet8-smoke`.
#[test]
fn the_default_folder_of_an_alias_continues_an_older_study() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("runs").join("resnet8-a-smoke");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("study.json"),
        "{\"arch\": \"resnet8-a\", \"profile\": \"smoke\"}",
    )
    .unwrap();
    let args = ["--arch", "resnet8-a", "--profile", "smoke"];
    let o = reproduce_offline(dir.path(), &args);
    let err = stderr(&o);
    assert!(
        err.contains("continuing the study in runs/resnet8-a-smoke"),
        "{err}"
    );
    assert!(!dir.path().join("runs").join("resnet8-smoke").exists());
    // Without such a folder, the one name.
    std::fs::remove_dir_all(&old).unwrap();
    let o = reproduce_offline(dir.path(), &args);
    assert!(!stderr(&o).contains("continuing"), "{}", stderr(&o));
    assert!(dir.path().join("runs").join("resnet8-smoke").is_dir());
}
