//! The CUDA kernels this crate compiles with NVRTC (the fused loss in `src/cuda/xent.rs`, the
//! multi-tensor SGD in `src/cuda/sgd.rs`) run on a GPU only in `tests/cuda.rs`, and GPU time is
//! rare. Here their CUDA source, taken from the Rust files as they are, is compiled as C++ with a
//! small emulation of a launch (`tests/emu/*.cpp`: the block's threads as real threads with a
//! barrier for `__syncthreads`) and checked against a reference of what each kernel computes.
//! This checks the kernels' logic on any machine with a C++ compiler (the test says so and
//! skips without one); the launch itself (NVRTC, argument layout, the driver) still needs a GPU.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The raw-string constant `name` of a Rust source file: the kernel's CUDA source.
fn kernel_source(rust_file: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rust_file);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = format!("const {name}: &str = r#\"");
    let from = text
        .find(&start)
        .unwrap_or_else(|| panic!("{}: no `{start}`", path.display()))
        + start.len();
    let len = text[from..]
        .find("\"#;")
        .unwrap_or_else(|| panic!("{}: `{name}` does not end", path.display()));
    text[from..from + len].to_string()
}

fn compiler() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let ok = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(cxx)
}

/// Compiles `tests/emu/{emulator}` with the kernel source beside it as `{include}` and runs it.
fn run_emulated(emulator: &str, include: &str, source: &str) {
    let Some(cxx) = compiler() else {
        eprintln!("skipping {emulator}: no C++ compiler (set CXX or install c++)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(include), source).unwrap();
    let emu: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/emu")
        .join(emulator);
    let exe = dir.path().join("emu");
    let out = Command::new(&cxx)
        .args(["-O1", "-pthread", "-x", "c++"])
        .arg(&emu)
        .arg("-I")
        .arg(dir.path())
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cxx} failed on {}:\n{}",
        emu.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}");
    assert!(
        run.status.success(),
        "{emulator}: the kernel differs from its reference:\n{stdout}"
    );
}

#[test]
fn fused_loss_kernels_match_their_reference() {
    run_emulated(
        "xent.cpp",
        "xent.cu.inc",
        &kernel_source("src/cuda/xent.rs", "SRC"),
    );
}

#[test]
fn multi_tensor_sgd_kernel_matches_the_per_parameter_rule() {
    run_emulated(
        "sgd.cpp",
        "sgd.cu.inc",
        &kernel_source("src/cuda/sgd.rs", "MULTI_SRC"),
    );
}
