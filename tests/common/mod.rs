//! Helpers shared by the integration tests (`mod common;` in each).

use std::sync::OnceLock;

use gevaldi::candle_core::Device;

/// The device the tests run models on: `GEVALDI_DEVICE` (`cpu`, `cuda`,
/// `metal`), else the first GPU of an enabled feature, else the CPU
/// ([`gevaldi::suite::device`]). Opened once per test binary, so that every
/// tensor of a test lives on the same device (two `Device::new_cuda(0)` are
/// different devices to candle). A `GEVALDI_DEVICE` that cannot be opened
/// fails the test rather than falling back.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| gevaldi::suite::device().unwrap_or_else(|e| panic!("{e}")))
        .clone()
}
