//! The frozen-model engine: one description of a network ([`Net`]), run by
//! two interpreters, and the switch between them ([`Engine`]).
//!
//! Every built-in architecture of [`zoo`](crate::zoo) describes its layers
//! once, as a [`Net`] built with a [`NetBuilder`] from its weights: nodes in
//! SSA order over one input, from one vocabulary (convolutions with
//! stride, padding and dilation per axis ([`Conv2dSettings`]) and groups,
//! batch norm, linear layers, activations, max- and adaptive average
//! pooling, flatten and reshape, concatenation and narrowing along
//! channels, rows or columns, channel shuffles, constants repeated over
//! the batch, residual addition, per-channel affine maps, LayerNorm over
//! channels). [`Net`]'s `forward` ([`Module`](candle_core::Module))
//! then runs it through one of:
//!
//! - **candle's ops** (the reference path), with candle's autograd: used
//!   for `GEVALDI_ENGINE=candle` and when a weight is a variable (a model
//!   being trained gets its weight gradients);
//! - **the device-generic path** ([`Net::forward_generic`]): the forward on
//!   candle's ops with nothing tracked, keeping only what the backward
//!   reads, and a backward to the input only, also written in candle's ops
//!   so that it runs on any device: no weight gradient, a conv's input
//!   gradient as stride-1 convs with the flipped, transposed kernel (one
//!   per output phase for a strided conv) instead of candle's
//!   `conv_transpose2d` (a direct loop per output element on CUDA), a
//!   depthwise conv as a sum of shifted, scaled copies (candle runs one
//!   conv per group), a 1×1 stride-1 conv as one batched product. Used
//!   where the CPU kernels do not apply (a CUDA GPU, a tensor that is not
//!   f32) and for `GEVALDI_ENGINE=generic`; on a Metal device (its op has
//!   no Metal forward) candle's ops run instead. On a CUDA device with f32
//!   tensors under `auto`, **gevaldi's CUDA kernels** (compiled at run
//!   time by NVRTC) take over where candle's ops take many launches and
//!   passes: a conv with one group (im2col laid out so that one batched
//!   product gives the output, then its bias and the ReLU after it in one
//!   pass) and its input gradient (`Wᵀ·g`, then `col2im`), max-pools
//!   forward and backward, a ReLU's backward, BigGAN's conditional
//!   batch norm + ReLU and residual join, and the search's head and Adam
//!   step (`divergence/head.rs`, `search/update.rs`; those two run their
//!   CPU twins on the CPU under `auto` too); every kernel writes each output
//!   once, in a fixed order of additions. `GEVALDI_ENGINE=generic` runs the
//!   same path on candle's ops alone;
//! - **gevaldi's CPU kernels**, the whole network as one candle
//!   `CustomOp1`: activations channels-last (NHWC), 3×3 stride-1
//!   convolutions with 64 input channels or more by Winograd's
//!   F(4×4, 3×3), others as im2col and one matrix product per group (a
//!   1×1 stride-1 conv multiplies the input directly, a depthwise conv
//!   runs its own loop), the products on the `gemm` crate's kernels, batch norm folded
//!   into the preceding conv once, each activation fused into the step
//!   that produces its input (a conv adds its bias and applies its
//!   activation to each chunk of output right after that chunk's
//!   products, while it is in cache; a dense layer in one pass after its
//!   product), and a
//!   backward pass **to the input only**: no
//!   weight gradient is ever computed, and the forward keeps only what the
//!   backward needs (a ReLU's output, a max-pool's argmax, a LayerNorm's
//!   normalised input). The network is compiled for it on first use.
//!
//! BigGAN's layers outside that vocabulary are ops of their own, each a
//! candle custom op whose backward goes to its inputs and whose place in
//! the graph holds only what that backward reads: a conditional batch norm
//! with its ReLU (`scale_shift`: gevaldi's kernel on the CPU, candle's ops
//! untracked elsewhere), the self-attention's products and softmax
//! (`attention`: keeps nothing, its backward recomputes the map) and a
//! block's residual join (`skip_add`). Under `GEVALDI_ENGINE=candle` they
//! run candle's ops and autograd.
//!
//! Each such op (a network on the generic path or the CPU kernels,
//! BigGAN, the search's head, log p(z)) joins candle's graph as one op
//! with its own backward (`attach`). While the search records its chain
//! (`tape.rs`), they are recorded instead, and the search walks their
//! backwards itself, without candle's graph: where its generator and
//! classifiers are all built-in models and the recording is closed (see
//! there), else candle's graph as before; the same gradients.
//!
//! All three agree to f32 rounding, forward and input gradient
//! (`tests/engine_agreement.rs` checks every ported architecture, each
//! kernel and each conv shape's input gradient against naive loops;
//! `tests/generic_path.rs` audits every built-in model on the generic path
//! and runs BigGAN on every path). A NaN propagates as in PyTorch on the
//! engine's path: ReLU of NaN is NaN and a pooling window holding a NaN
//! pools to NaN (candle 0.11's CPU `relu` returns 0 for NaN).
//!
//! `GEVALDI_ENGINE` chooses, read each time a network runs:
//!
//! - `auto` (the default, also when unset): gevaldi's kernels where they
//!   apply (f32 tensors on the CPU, frozen weights), else the generic path
//!   (frozen weights; with gevaldi's CUDA kernels on a CUDA device), else
//!   candle's ops;
//! - `candle`: every built-in model runs candle's own ops and autograd;
//! - `generic`: every built-in model with frozen weights runs the generic
//!   path on candle's ops alone, on the CPU too (what a GPU runs, with a
//!   CPU's rounding).
//!
//! The snapshot tests run the committed suite all three ways against the
//! same snapshots.

mod attention;
mod compile;
mod conv_settings;
mod cpu_op;
mod cuda;
mod generic;
mod kernels;
mod matmul;
mod net;
pub(crate) mod pool_settings;
mod profile;
mod reference;
mod scale_shift;
mod skip_add;
mod tape;
#[cfg(test)]
mod tests;
mod upsample;

pub use conv_settings::{Conv2dSettings, ConvTranspose2dSettings};
pub use net::{Activation, Net, NetBuilder, NodeId};
pub use pool_settings::Pool2dSettings;
#[doc(hidden)]
pub use profile::report as profile_report;
#[doc(hidden)]
pub use profile::section as profile_section;
#[doc(hidden)]
pub use profile::tensors_made;
pub use scale_shift::scale_shift_relu;

pub(crate) use attention::{attention, attention_taped};
pub(crate) use cpu_op::take_kept_bytes;
pub(crate) use cuda::{
    adam_step, head_backward, head_forward, keep_pool_memory, search_kernels_apply, HeadKind,
};
pub(crate) use generic::attach;
pub(crate) use matmul::broadcast_matmul;
pub(crate) use scale_shift::scale_shift_relu_taped;
pub(crate) use skip_add::skip_add_taped;
pub(crate) use tape::{join_constant, paused, record_op, recording, reshape, tracked};
#[doc(hidden)]
pub use tape::{record_while, Recording};
pub(crate) use upsample::upsample2_taped;

/// An op's backward, kept by a forward run outside candle's graph for a
/// backward pass gevaldi runs itself (BigGAN's, `zoo::biggan`): the
/// gradients of the op's inputs, in their order, from its output's. `Fn`:
/// a graph may be backpropagated more than once.
pub(crate) type Pullback = Box<
    dyn Fn(&candle_core::Tensor) -> candle_core::Result<Vec<candle_core::Tensor>> + Send + Sync,
>;

pub(crate) use kernels::conv::TransposeSettings;
pub(crate) use kernels::pool::{adaptive_range, check_adaptive, check_upsample};
pub(crate) use pool_settings::PoolKind;
pub(crate) use skip_add::skip_add;
pub(crate) use upsample::upsample2;

use crate::error::{Error, Result};

/// The environment variable that chooses the [`Engine`].
pub const ENGINE_VAR: &str = "GEVALDI_ENGINE";

/// The engine that runs the built-in models' layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// gevaldi's frozen-model kernels where they apply (its CPU kernels;
    /// on a CUDA device the generic path with its CUDA kernels), else
    /// candle's ops.
    Auto,
    /// candle's own layers and autograd for every model.
    Candle,
    /// The engine's device-generic path for every model, on candle's ops
    /// alone: candle's ops forward, the engine's backward to the input
    /// only (what `Auto` runs on a GPU, there with gevaldi's CUDA
    /// kernels in place of some of those ops).
    Generic,
}

impl Engine {
    /// The engine `GEVALDI_ENGINE` names (`auto` when unset or empty).
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENGINE_VAR) {
            Err(_) => Ok(Engine::Auto),
            Ok(v) => match v.as_str() {
                "" | "auto" => Ok(Engine::Auto),
                "candle" => Ok(Engine::Candle),
                "generic" => Ok(Engine::Generic),
                other => Err(Error::setting(
                    ENGINE_VAR,
                    other,
                    "`auto`, `candle` or `generic`",
                )),
            },
        }
    }

    /// The engine in force: an unknown value counts as `auto` here (the
    /// harness and `cargo gevaldi` refuse one at start, with
    /// [`Engine::from_env`]).
    pub fn current() -> Self {
        Self::from_env().unwrap_or(Engine::Auto)
    }

    /// `auto`, `candle` or `generic`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Candle => "candle",
            Engine::Generic => "generic",
        }
    }
}
