"""Compiles gevaldi's CUDA kernels with NVRTC, as the engine does at run
time (src/engine/cuda/ops.rs: `--fmad=false`), here on a machine with no
GPU: NVRTC is a compiler library and needs no device. Then assembles the
PTX for the H200's sm_90 with ptxas where it is at hand. Catches what the
C++ emulation (tests/cuda_kernels.rs) cannot: CUDA-only syntax and NVRTC's
own errors, before a lent GPU's minutes are spent on them.

    python3 bench/nvrtc_check.py NVIDIA_DIR [kernels.cu]

NVIDIA_DIR: the nvidia/cu13 folder of the CUDA 13 wheels (bench/gpu.sh
passes the one ../shared/tools/cuda/setup.sh installs).
"""
import ctypes
import os
import subprocess
import sys
import tempfile

nvidia = sys.argv[1]
source_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.path.dirname(__file__), "..", "src", "engine", "cuda", "kernels.cu")
lib_dir = os.path.join(nvidia, "lib")
# libnvrtc loads its builtins library by name: preload it from the wheel.
for name in sorted(os.listdir(lib_dir)):
    if name.startswith("libnvrtc-builtins.so") and ".alt." not in name:
        ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(os.path.join(lib_dir, "libnvrtc.so.13"))

source = open(source_path, "rb").read()
prog = ctypes.c_void_p()
rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source, b"kernels.cu", 0, None, None)
if rc != 0:
    sys.exit(f"failed to create the NVRTC program: error {rc}")
# The engine's options and no more (src/engine/cuda/ops.rs passes
# `--fmad=false` alone, so NVRTC targets its default architecture, whose
# PTX the driver compiles for the device): a kernel that needs a newer
# architecture than that default fails here as it would there.
opts = [b"--fmad=false"]
rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
size = ctypes.c_size_t()
nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value)
nvrtc.nvrtcGetProgramLog(prog, log)
if log.value.strip():
    print(log.value.decode())
if rc != 0:
    sys.exit(f"failed to compile {source_path} with NVRTC: error {rc}")
nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
ptx = ctypes.create_string_buffer(size.value)
nvrtc.nvrtcGetPTX(prog, ptx)
ptxas = os.path.join(nvidia, "bin", "ptxas")
if os.path.exists(ptxas):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "kernels.ptx")
        with open(path, "wb") as f:
            f.write(ptx.value)
        out = subprocess.run([ptxas, "-arch=sm_90", "-o", os.devnull, path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"failed to assemble the PTX for sm_90 with ptxas:\n{out.stderr}")
    print(f"kernels.cu: NVRTC compiled it ({size.value} bytes of PTX), ptxas assembled it for sm_90")
else:
    print(f"kernels.cu: NVRTC compiled it ({size.value} bytes of PTX; no ptxas to assemble it)")
