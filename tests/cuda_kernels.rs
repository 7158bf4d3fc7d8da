//! gevaldi's CUDA kernels (`src/engine/cuda/kernels.cu`) checked on every
//! machine, GPU or not: the same source, compiled as C++ with a few
//! definitions standing in for CUDA's (`tests/cuda_emulation/harness.cpp`:
//! each block's threads real threads meeting at `__syncthreads`, grids
//! smaller than the data so that every grid-stride loop goes round), runs
//! each kernel on random sizes (ties, NaN, padding, ceil mode, strides,
//! dilation) against naive loops. What this cannot see — NVRTC's
//! compilation, the launches' arguments, a GPU's speed — the CUDA tests
//! check on a GPU (`tests/generic_path.rs` with `GEVALDI_DEVICE=cuda`,
//! `bash bench/gpu.sh`).
//!
//! Needs a C++20 compiler: `CXX`, else `c++` (scripts/test.sh installs
//! g++ where there is none).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_cuda_kernels_match_naive_loops_when_emulated_on_the_cpu() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emulation/harness.cpp");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda-emulation");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("harness");
    let built = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-ffp-contract=off",
            "-pthread",
            "-w",
            "-o",
        ])
        .arg(&exe)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("failed to start the C++ compiler `{cxx}` (set CXX): {e}"));
    assert!(
        built.status.success(),
        "failed to compile {} with `{cxx}`:\n{}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    println!("{out}");
    assert!(
        run.status.success(),
        "the emulated kernels disagree with naive loops:\n{out}"
    );
    assert!(out.contains(" 0 mismatches"), "{out}");
}

/// Every kernel that takes one thread per output element loops with
/// `GRID_LOOP` (an unsigned index, which the emulation above checks past
/// 2^30 elements), not with a loop of its own over an `int`, which
/// overflows there.
#[test]
fn every_grid_stride_loop_is_grid_loop() {
    let source = include_str!("../src/engine/cuda/kernels.cu");
    let starts = source.matches("blockIdx.x * blockDim.x").count();
    assert_eq!(
        starts, 1,
        "kernels.cu starts {starts} grid-stride loops by hand; only GRID_LOOP may"
    );
    assert!(source.matches("GRID_LOOP(").count() > 1);
}
