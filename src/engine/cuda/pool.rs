//! CUDA's memory pool kept between steps.
//!
//! candle allocates every CUDA buffer with `cuMemAllocAsync` (through
//! cudarc) from the device's current memory pool, whose release threshold
//! is 0 by default: at every synchronisation (each step's read-back) the
//! pool hands all the memory not in use back to the driver, so the next
//! step maps its activations afresh. NVIDIA calls the default a mistake
//! (CCCL raises it on first use of a default pool, as RMM does for its
//! pools), and PyTorch's caching allocator never returns memory between
//! steps. [`keep_pool_memory`] raises a threshold of 0 to `u64::MAX`; a
//! threshold set by someone else is left alone.

use candle_core::Device;

/// For the benches only (not a setting): `GEVALDI_BENCH_CUDA_POOL=release`
/// leaves the pool's threshold as it is, to measure what keeping the
/// memory changes.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const BENCH_POOL_VAR: &str = "GEVALDI_BENCH_CUDA_POOL";

/// Makes the memory pool of `dev` keep freed memory for reuse (see the
/// module's docs). Returns whether it raised the threshold: false on other
/// devices, without the `cuda` feature, on a device without memory pools
/// (cudarc then allocates with `cuMemAlloc`), where the threshold was
/// already set, and where the driver refused (an optimisation only: the
/// search runs either way).
pub(crate) fn keep_pool_memory(dev: &Device) -> bool {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = dev {
        use candle_core::cuda_backend::cudarc::driver::{result, sys};
        let stream = cuda.cuda_stream();
        let context = stream.context();
        if std::env::var(BENCH_POOL_VAR).as_deref() == Ok("release") || !context.has_async_alloc() {
            return false;
        }
        let attribute = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
        // SAFETY: the device is that of a live context (candle's); the
        // release threshold's value is a `u64` (cuuint64_t), and both
        // calls get a pointer to one.
        let raise = || unsafe {
            let pool = result::device::get_mem_pool(context.cu_device())?;
            let mut threshold: u64 = 0;
            result::mem_pool::get_attribute(pool, attribute, (&mut threshold as *mut u64).cast())?;
            if threshold != 0 {
                return Ok(false);
            }
            let mut keep = u64::MAX;
            result::mem_pool::set_attribute(pool, attribute, (&mut keep as *mut u64).cast())?;
            Ok::<_, result::DriverError>(true)
        };
        return raise().unwrap_or(false);
    }
    let _ = dev;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a CUDA device has a pool to keep: elsewhere nothing is asked of
    /// a driver, and a search runs as before.
    #[test]
    fn other_devices_are_left_alone() {
        assert!(!keep_pool_memory(&Device::Cpu));
    }
}
