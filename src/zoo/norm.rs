//! Normalisation layers from ops whose backward pass is right (candle-nn's
//! `LayerNorm` and `ops::layer_norm` have no backward and silently drop the
//! gradient).

use candle_core::{Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::engine::{NetBuilder, NodeId};

/// Batch normalisation in inference mode, with PyTorch's tensor names
/// (`weight`, `bias`, `running_mean`, `running_var`):
/// y = (x − mean) / √(var + eps) · weight + bias, per channel of `[B, C, …]`.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    /// Loads the four tensors of `c` channels.
    pub fn load(vb: VarBuilder, c: usize, eps: f64) -> candle_core::Result<Self> {
        let weight = vb.get(c, "weight")?;
        let bias = vb.get(c, "bias")?;
        let mean = vb.get(c, "running_mean")?;
        let var = vb.get(c, "running_var")?;
        let scale = (weight / (var + eps)?.sqrt()?)?;
        let shift = (bias - (mean * &scale)?)?;
        Ok(BatchNorm { scale, shift })
    }

    /// Appends this batch norm to a network being built.
    pub(crate) fn build(&self, b: &mut NetBuilder, x: NodeId) -> NodeId {
        b.affine(x, &self.scale, &self.shift)
    }
}

impl BatchNorm {
    /// `x · scale + shift` per channel (dim 1) of `[B, C, …]`, `[C]` each:
    /// this layer's forward, and the engine's reference for an affine node.
    pub(crate) fn affine(
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = scale.dim(0)?;
        x.broadcast_mul(&scale.reshape(shape.clone())?)?
            .broadcast_add(&shift.reshape(shape)?)
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Self::affine(x, &self.scale, &self.shift)
    }
}

/// Layer normalisation over the last dimension, with PyTorch's names
/// (`weight`, `bias`): y = (x − mean) / √(var + eps) · weight + bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads a layer norm over `c` features.
    pub fn load(vb: VarBuilder, c: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(c, "weight")?,
            bias: vb.get(c, "bias")?,
            eps,
        })
    }

    /// Appends this LayerNorm, over the channels of each pixel, to a
    /// network being built.
    pub(crate) fn build(&self, b: &mut NetBuilder, x: NodeId) -> NodeId {
        b.layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// Normalises `[B, C, H, W]` over C (torchvision's `LayerNorm2d`).
    pub fn forward_channels(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Self::channels(x, &self.weight, &self.bias, self.eps)
    }

    /// LayerNorm over the last dimension of `x`: this layer's forward, and
    /// the engine's reference for a flat value.
    pub(crate) fn last(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }

    /// LayerNorm over C of `[B, C, H, W]`: [`Self::forward_channels`], and
    /// the engine's reference for a spatial value.
    pub(crate) fn channels(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        Self::last(&x.permute((0, 2, 3, 1))?, weight, bias, eps)?.permute((0, 3, 1, 2))
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Self::last(x, &self.weight, &self.bias, self.eps)
    }
}
