//! Where trials run: the device, and candle's thread count on the CPU.

use candle_core::Device;

use crate::error::{Error, Result};

/// The device trials run on: `GEVALDI_DEVICE` (`cpu`, `cuda`, `metal`) if
/// set, else the first GPU of an enabled back end (features `cuda`,
/// `metal`), else the CPU.
pub fn device() -> Result<Device> {
    let choice = std::env::var("GEVALDI_DEVICE").unwrap_or_default();
    let gpu_error = |e| Error::Tensor {
        action: format!(
            "open the `{choice}` device named by GEVALDI_DEVICE (it needs a build with \
             gevaldi's `{choice}` feature and a device to open)"
        ),
        cause: Box::new(e),
    };
    match choice.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(gpu_error).map(with_kept_pool),
        "metal" => Device::new_metal(0).map_err(gpu_error),
        "" => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(with_kept_pool(d));
                }
            }
            if cfg!(feature = "metal") {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        other => Err(Error::setting(
            "GEVALDI_DEVICE",
            other,
            "cpu, cuda or metal",
        )),
    }
}

/// `dev` with its CUDA memory pool keeping freed memory for reuse
/// ([`keep_cuda_pool_memory`]).
fn with_kept_pool(dev: Device) -> Device {
    keep_cuda_pool_memory(&dev);
    dev
}

/// Makes the memory pool of a CUDA device keep freed memory for reuse
/// instead of handing it back to the driver at every synchronisation
/// (CUDA's default release threshold is 0: each step of a search would map
/// its buffers afresh). [`device`] and every search do it; a threshold set
/// by someone else is left alone. Returns whether it raised the threshold
/// (false on other devices, and where the driver has no memory pools or
/// refused: the search runs either way). `GEVALDI_BENCH_CUDA_POOL=release`
/// (for the benches) leaves the default.
#[doc(hidden)]
pub fn keep_cuda_pool_memory(dev: &Device) -> bool {
    crate::engine::keep_pool_memory(dev)
}

/// Sets `RAYON_NUM_THREADS`, when it is not set, to the thread count candle
/// chooses by itself (the physical cores).
///
/// candle 0.11 asks for its thread count on every matmul, and on Linux,
/// without `RAYON_NUM_THREADS`, that parses `/proc/cpuinfo` each time: 11% of
/// a search's time on the MNIST fixtures, measured with `perf`. Call it
/// first thing in `main`, before any other thread starts
/// ([`prepare_process`] does).
pub fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// What every gevaldi binary does first thing in `main`, before any other
/// thread starts: [`fix_thread_count`], and mimalloc told to keep freed
/// memory for reuse rather than return it to the OS (where mimalloc is the
/// global allocator, as in the harness of [`main!`](crate::main); unless
/// `MIMALLOC_PURGE_DELAY` is set): fresh pages cost 30% of a BigGAN step in
/// the kernel zeroing them.
pub fn prepare_process() {
    fix_thread_count();
    crate::allocator::keep_freed_memory();
}

/// An experiment for the benches (`GEVALDI_BENCH_CUDA_EVENTS=off`), not a
/// setting: stops cudarc from creating two CUDA events per allocation on
/// `dev` from now on. cudarc creates them for every buffer while its
/// context has event tracking on (the default), but only uses them to
/// order streams once a context has more than one stream; candle's
/// `Device::new_cuda` runs everything on one stream (CUDA's per-thread
/// default stream), so the events are created and destroyed unused: eight
/// driver calls per buffer (each event's create and destroy, each after a
/// look at the thread's current context). Whether that shows on a GPU is what the benches
/// measure. A no-op on other devices and without the `cuda` feature.
#[doc(hidden)]
pub fn bench_cuda_events(dev: &Device) {
    if std::env::var("GEVALDI_BENCH_CUDA_EVENTS").as_deref() != Ok("off") {
        return;
    }
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = dev {
        // SAFETY: the events order work between streams of one context;
        // this device has one stream (the per-thread default stream of
        // `Device::new_cuda`: no stream is created, so the context never
        // enters cudarc's multi-stream mode, and buffers made before keep
        // their events).
        #[allow(unsafe_code)]
        unsafe {
            cuda.disable_event_tracking()
        };
        eprintln!("device: cudarc's event tracking off (GEVALDI_BENCH_CUDA_EVENTS=off)");
    }
    #[cfg(not(feature = "cuda"))]
    let _ = dev;
}
