//! The description of a network: nodes in SSA order over one input.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Module, Tensor};

use super::compile::Program;
use super::generic::{self, Prepared};
use super::{Conv2dSettings, ConvTranspose2dSettings, Engine, Pool2dSettings, TransposeSettings};

/// A value of a [`Net`]: its input or a node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize);

/// An elementwise activation (the list grows: `#[non_exhaustive]`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// 1 / (1 + e^−x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// x·Φ(x), the exact (erf) GELU.
    GeluErf,
    /// x·σ(x) (SiLU, swish): PyTorch's `SiLU`.
    Silu,
    /// x where x > 0, else `slope`·x: PyTorch's
    /// `LeakyReLU(negative_slope)`. The slope must be finite and at least
    /// 0 (the backward reads the sign of the output); a network with
    /// another fails when it runs, naming it. The slope is an f32, as the
    /// weights are: an f64 network reads `0.2` as 0.2000000030, so its
    /// negative side differs from PyTorch's float64 `LeakyReLU(0.2)` by
    /// 1.5e-8 relative (`bench/engine_torch_reference.py` rounds it too).
    LeakyRelu(f32),
    /// x clamped to [min, max]: PyTorch's `Hardtanh(min_val, max_val)`;
    /// `Hardtanh(0.0, 6.0)` is `ReLU6` (MobileNetV2). The gradient is 1
    /// strictly inside, 0 at and beyond the bounds, as PyTorch's. The
    /// bounds must be finite, min below max; a network with others fails
    /// when it runs, naming them.
    Hardtanh(f32, f32),
    /// x·ReLU6(x + 3)/6: PyTorch's `Hardswish` (MobileNetV3); its
    /// gradient is PyTorch's, x/3 + 1/2 strictly inside (−3, 3), 0 at and
    /// below −3, 1 at and above 3.
    Hardswish,
    /// ReLU6(x + 3)/6: PyTorch's `Hardsigmoid` (MobileNetV3's gates); its
    /// gradient 1/6 strictly inside (−3, 3), as PyTorch's.
    Hardsigmoid,
}

impl Activation {
    /// The message refusing a [`Activation::LeakyRelu`] slope that is
    /// negative or not finite, or [`Activation::Hardtanh`] bounds that are
    /// no range ([`Op::refused`]).
    fn refused(self) -> Option<String> {
        match self {
            Activation::LeakyRelu(a) if !(a.is_finite() && a >= 0.0) => Some(format!(
                "leaky_relu: negative slope {a}, expected a finite slope of 0 or more"
            )),
            Activation::Hardtanh(min, max)
                if !(min.is_finite() && max.is_finite() && min < max) =>
            {
                Some(format!(
                    "hardtanh: bounds [{min}, {max}], expected finite bounds, the first below \
                     the second"
                ))
            }
            _ => None,
        }
    }
}

/// What a node computes. Values are `[B, C, H, W]` or `[B, F]`; "per
/// channel" means over dim 1.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// The network's input.
    Input,
    /// A 2-D convolution, weight `[Cout, Cin / groups, kh, kw]`, its
    /// stride, padding and dilation per axis.
    Conv {
        weight: Tensor,
        bias: Option<Tensor>,
        settings: Conv2dSettings,
    },
    /// `x Wᵀ + b` over the features of `[B, F]`, or over the channels of
    /// every pixel of `[B, C, H, W]`; weight `[out, in]`.
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// `x · scale + shift` per channel (an inference batch norm).
    Affine { scale: Tensor, shift: Tensor },
    /// An activation.
    Act(Activation),
    /// PyTorch's `MaxPool2d` (its settings per axis).
    MaxPool(Pool2dSettings),
    /// PyTorch's `AdaptiveAvgPool2d((oh, ow))`.
    AdaptiveAvgPool { oh: usize, ow: usize },
    /// PyTorch's `AvgPool2d` (its settings per axis).
    AvgPool(Pool2dSettings),
    /// Nearest-neighbour upsampling by an integer factor: PyTorch's
    /// `Upsample(scale_factor = scale, mode = "nearest")`.
    Upsample { scale: usize },
    /// A 2-D transposed convolution (the input gradient of the conv with
    /// the same weight and settings), weight `[Cin, Cout, kh, kw]`:
    /// PyTorch's `ConvTranspose2d` with one group.
    ConvTranspose {
        weight: Tensor,
        bias: Option<Tensor>,
        settings: TransposeSettings,
    },
    /// `[B, C, H, W]` to `[B, C·H·W]` in PyTorch's (c, y, x) order.
    Flatten,
    /// To `[B, dims…]` (one dim: flat; three: C, H, W), in PyTorch's order.
    Reshape(Vec<usize>),
    /// The inputs side by side along `dim` (1: channels or features, 2:
    /// rows, 3: columns).
    Concat { dim: usize },
    /// Entries `[start, start + len)` of `dim`: PyTorch's `x.narrow(dim,
    /// start, len)` (a `chunk` or `split`).
    Narrow {
        dim: usize,
        start: usize,
        len: usize,
    },
    /// One sample's value, `[1, C, H, W]` or `[1, F]`, repeated over the
    /// batch of the op's input (read for its batch size only: no gradient
    /// flows to it).
    Constant(Tensor),
    /// PyTorch's `ChannelShuffle(groups)` (ShuffleNet): dim 1's C entries
    /// read as `[groups, C / groups]` and written transposed, so output
    /// entry `j · groups + i` is input entry `i · C / groups + j`.
    ChannelShuffle { groups: usize },
    /// The sum of the two inputs (same shape).
    Add,
    /// The product of the two inputs: the same shape, or the second
    /// `[B, C, 1, 1]`, a gate per channel of the first `[B, C, H, W]`.
    Mul,
    /// Attention over pixels, inputs queries `[B, K, H, W]`, keys `[B, K,
    /// H', W']` and values `[B, C, H', W']`: each query pixel's output
    /// `Σ_m softmax_m(scale · q·k_m) · v_m`, `[B, C, H, W]`.
    Attention { scale: f32 },
    /// LayerNorm over the channels of each pixel (or the features of a flat
    /// value), with weight and bias.
    LayerNorm {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    },
}

impl Op {
    /// Whether none of the op's weights is a variable.
    fn weights_frozen(&self) -> bool {
        match self {
            Op::Conv { weight, bias, .. }
            | Op::ConvTranspose { weight, bias, .. }
            | Op::Linear { weight, bias } => {
                !weight.is_variable() && !bias.as_ref().is_some_and(Tensor::is_variable)
            }
            Op::Affine { scale, shift } => !scale.is_variable() && !shift.is_variable(),
            Op::LayerNorm { weight, bias, .. } => !weight.is_variable() && !bias.is_variable(),
            Op::Constant(t) => !t.is_variable(),
            _ => true,
        }
    }

    /// Refuses an input that is not `[B, C, H, W]` to an op on images,
    /// naming the op, as the CPU kernels do (candle's ops said only
    /// "unexpected rank, expected: 4, got: 2 ([2, 4])" on the other paths).
    pub(crate) fn check_rank(&self, x: &Tensor) -> candle_core::Result<()> {
        let Some(name) = self.image_op() else {
            return Ok(());
        };
        if x.rank() != 4 {
            candle_core::bail!(
                "{name}: expected [B, C, H, W], got a value of shape {:?}",
                x.dims()
            );
        }
        Ok(())
    }

    /// Refuses inputs that do not fit the op, on the generic path and
    /// candle's, with the CPU kernels' messages: an image op's input not
    /// `[B, C, H, W]` ([`Op::check_rank`]), a linear layer's features, an
    /// affine's or layer norm's channels, a reshape's count, an add's or
    /// concat's shapes. (Those paths said candle's "shape mismatch in
    /// matmul, lhs: [2, 144], rhs: [99, 10]", naming no op: on a GPU,
    /// whose path is the generic one, every such mistake.)
    pub(crate) fn check_inputs(&self, args: &[&Tensor]) -> candle_core::Result<()> {
        let Some(x) = args.first() else {
            return Ok(());
        };
        self.check_rank(x)?;
        let dims = x.dims();
        // The features of a flat value, or the channels of an image.
        let c = dims.get(1).copied().unwrap_or(0);
        match self {
            Op::Linear { weight, .. } => {
                let nin = weight.dim(1)?;
                if c != nin {
                    candle_core::bail!("linear: {c} input features, expected {nin}");
                }
            }
            Op::Affine { scale, .. } if c != scale.elem_count() => {
                candle_core::bail!("affine: {c} channels, expected {}", scale.elem_count());
            }
            Op::LayerNorm { weight, .. } if c != weight.elem_count() => {
                candle_core::bail!("layer_norm: {c} channels, expected {}", weight.elem_count());
            }
            Op::Reshape(to) => {
                let n: usize = dims.iter().skip(1).product();
                if n != to.iter().product::<usize>() {
                    candle_core::bail!("reshape: {n} values per sample are not {to:?}");
                }
            }
            Op::Add if args[1].dims() != dims => {
                candle_core::bail!(
                    "add: shapes {dims:?} and {:?}, expected the same",
                    args[1].dims()
                );
            }
            Op::Concat { dim } | Op::Narrow { dim, .. } if *dim >= dims.len() => {
                let name = self.dim_op_name();
                candle_core::bail!("{name}: dim {dim} of a value of shape {dims:?}");
            }
            Op::Concat { dim } => {
                let fits = |d: &[usize]| {
                    d.len() == dims.len() && (0..d.len()).all(|i| i == *dim || d[i] == dims[i])
                };
                if !args.iter().all(|a| fits(a.dims())) {
                    let shapes: Vec<&[usize]> = args.iter().map(|a| a.dims()).collect();
                    candle_core::bail!("concat: shapes {shapes:?}, {}", concat_expects(*dim));
                }
            }
            Op::Narrow { dim, start, len } if start + len > dims[*dim] => {
                candle_core::bail!(
                    "narrow: entries [{start}, {}) of dim {dim}, which has {}",
                    start + len,
                    dims[*dim]
                );
            }
            Op::ChannelShuffle { groups } if !c.is_multiple_of(*groups) => {
                candle_core::bail!(
                    "channel_shuffle: {c} channels do not split into {groups} groups"
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The name of an op along a dim, a concat's or else a narrow's, as
    /// errors say it.
    fn dim_op_name(&self) -> &'static str {
        if matches!(self, Op::Concat { .. }) {
            "concat"
        } else {
            "narrow"
        }
    }

    /// The name of an op on images (`[B, C, H, W]` only), as errors say
    /// it; `None` for the others.
    fn image_op(&self) -> Option<&'static str> {
        Some(match self {
            Op::Conv { .. } => "conv",
            Op::ConvTranspose { .. } => "conv_transpose2d",
            Op::MaxPool(_) => "max_pool2d",
            Op::AvgPool(_) => "avg_pool2d",
            Op::AdaptiveAvgPool { .. } => "adaptive_avg_pool2d",
            Op::Upsample { .. } => "upsample_nearest2d",
            Op::Attention { .. } => "attention",
            _ => return None,
        })
    }

    /// The message refusing a setting PyTorch refuses that no path's own
    /// checks catch before it runs: a conv's or a transposed conv's
    /// dilation 0 (a conv's on either axis) or weight with a dimension of
    /// 0, a conv's stride 0 on either axis, a conv's groups 0 or
    /// groups that do not divide its output channels. (Unchecked, the CPU
    /// kernels took dilation 0 as 1, the generic path as 0, candle's
    /// backward divided by it and panicked; groups 0, and a transposed
    /// conv of 0 output channels, panicked on the CPU path; a conv with a
    /// kernel of height 0 gave zeros.) Also a LeakyReLU slope below 0 or
    /// not finite.
    fn refused(&self) -> Option<String> {
        if let Op::Conv { weight, .. } | Op::ConvTranspose { weight, .. } = self {
            if weight.dims().contains(&0) {
                let op = self.image_op().unwrap_or("conv");
                return Some(format!(
                    "{op}: a weight of shape {:?}, expected no dimension of 0",
                    weight.dims()
                ));
            }
        }
        match self {
            Op::Conv {
                weight, settings, ..
            } => settings.refused(weight.dim(0).unwrap_or(0)),
            Op::ConvTranspose { settings, .. } if settings.dilation.contains(&0) => Some(format!(
                "conv_transpose2d: dilation {}, expected 1 or more",
                super::conv_settings::axes(settings.dilation)
            )),
            Op::Act(a) => a.refused(),
            Op::Narrow { len: 0, .. } => Some("narrow: length 0, expected 1 or more".into()),
            Op::Narrow { dim, .. } | Op::Concat { dim } if !(1..=3).contains(dim) => {
                let name = self.dim_op_name();
                Some(format!(
                    "{name}: dim {dim}, expected 1 (channels or features), 2 (rows) or 3 (columns)"
                ))
            }
            Op::Constant(t) if !matches!(t.dims(), [1, _] | [1, _, _, _]) => Some(format!(
                "constant: a value of shape {:?}, expected one sample, [1, C, H, W] or [1, F]",
                t.dims()
            )),
            Op::ChannelShuffle { groups: 0 } => {
                Some("channel_shuffle: groups 0, expected 1 or more".into())
            }
            Op::Attention { scale } if !scale.is_finite() => {
                Some(format!("attention: scale {scale}, expected a finite scale"))
            }
            _ => None,
        }
    }
}

/// What a concat along `dim` expects of its inputs' shapes, as its
/// errors say on every path.
pub(crate) fn concat_expects(dim: usize) -> &'static str {
    match dim {
        1 => "expected one batch and one height and width",
        2 => "expected one batch, one channel count and one width",
        _ => "expected one batch, one channel count and one height",
    }
}

/// A node: its op and its inputs (earlier nodes).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) op: Op,
    pub(crate) inputs: Vec<NodeId>,
}

/// Builds a [`Net`]; every method appends a node and returns its value.
///
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Module, Tensor};
/// use gevaldi::{Activation, NetBuilder};
///
/// let dev = Device::Cpu;
/// let mut b = NetBuilder::new();
/// let x = b.input();
/// let w = Tensor::ones((4, 3), DType::F32, &dev)?;
/// let h = b.linear(x, &w, None);
/// let y = b.act(h, Activation::Relu);
/// let net = b.build(y);
/// let out = net.forward(&Tensor::ones((2, 3), DType::F32, &dev)?)?;
/// assert_eq!(out.to_vec2::<f32>()?, [[3.0; 4], [3.0; 4]]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct NetBuilder {
    nodes: Vec<Node>,
}

impl Default for NetBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NetBuilder {
    /// A network with its input only.
    pub fn new() -> Self {
        NetBuilder {
            nodes: vec![Node {
                op: Op::Input,
                inputs: vec![],
            }],
        }
    }

    /// The network's input.
    pub fn input(&self) -> NodeId {
        NodeId(0)
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>) -> NodeId {
        self.nodes.push(Node { op, inputs });
        NodeId(self.nodes.len() - 1)
    }

    /// A convolution with candle_nn's layer's weights and settings (one
    /// stride, padding and dilation for both axes; [`Self::conv2d_with`]
    /// takes them per axis).
    pub fn conv2d(&mut self, x: NodeId, conv: &candle_nn::Conv2d) -> NodeId {
        let settings = Conv2dSettings::from(*conv.config());
        self.conv2d_with(x, conv.weight(), conv.bias(), settings)
    }

    /// A convolution with weight `[Cout, Cin / groups, kh, kw]`, an
    /// optional bias `[Cout]`, and its stride, padding and dilation per
    /// axis, `[height, width]`: PyTorch's `Conv2d(stride=(sh, sw),
    /// padding=(ph, pw), dilation=(dh, dw), groups)`, as in Inception-v3's
    /// 1×7 and 7×1 convs:
    ///
    /// ```
    /// # fn main() -> candle_core::Result<()> {
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use gevaldi::{Conv2dSettings, NetBuilder};
    ///
    /// let dev = Device::Cpu;
    /// let mut b = NetBuilder::new();
    /// let x = b.input();
    /// // Conv2d(3, 8, kernel_size=(1, 7), padding=(0, 3)), then
    /// // Conv2d(8, 4, kernel_size=(7, 1), padding=(3, 0), stride=(2, 1)).
    /// let w1 = Tensor::ones((8, 3, 1, 7), DType::F32, &dev)?;
    /// let w2 = Tensor::ones((4, 8, 7, 1), DType::F32, &dev)?;
    /// let wide = Conv2dSettings { padding: [0, 3], ..Default::default() };
    /// let tall = Conv2dSettings { padding: [3, 0], stride: [2, 1], ..Default::default() };
    /// let h = b.conv2d_with(x, &w1, None, wide);
    /// let y = b.conv2d_with(h, &w2, None, tall);
    /// let net = b.build(y);
    /// let out = net.forward(&Tensor::ones((2, 3, 17, 17), DType::F32, &dev)?)?;
    /// assert_eq!(out.dims(), [2, 4, 9, 17]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn conv2d_with(
        &mut self,
        x: NodeId,
        weight: &Tensor,
        bias: Option<&Tensor>,
        settings: Conv2dSettings,
    ) -> NodeId {
        let op = Op::Conv {
            weight: weight.clone(),
            bias: bias.cloned(),
            settings,
        };
        self.push(op, vec![x])
    }

    /// A linear layer with candle_nn's layer's weights.
    pub fn linear_layer(&mut self, x: NodeId, l: &candle_nn::Linear) -> NodeId {
        self.linear(x, l.weight(), l.bias())
    }

    /// `x Wᵀ + b`, weight `[out, in]`, over the features of a flat value or
    /// the channels of each pixel.
    pub fn linear(&mut self, x: NodeId, weight: &Tensor, bias: Option<&Tensor>) -> NodeId {
        let op = Op::Linear {
            weight: weight.clone(),
            bias: bias.cloned(),
        };
        self.push(op, vec![x])
    }

    /// `x · scale + shift` per channel (`[C]` each): an inference batch
    /// norm, which the CPU engine folds into a preceding conv, transposed
    /// conv or dense layer.
    pub fn affine(&mut self, x: NodeId, scale: &Tensor, shift: &Tensor) -> NodeId {
        let op = Op::Affine {
            scale: scale.clone(),
            shift: shift.clone(),
        };
        self.push(op, vec![x])
    }

    /// An activation.
    pub fn act(&mut self, x: NodeId, a: Activation) -> NodeId {
        self.push(Op::Act(a), vec![x])
    }

    /// ReLU.
    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.act(x, Activation::Relu)
    }

    /// PyTorch's `MaxPool2d(k, stride = s, padding = p, ceil_mode)`; each
    /// window's gradient goes to its first maximum.
    pub fn max_pool2d(&mut self, x: NodeId, k: usize, s: usize, p: usize, ceil: bool) -> NodeId {
        self.max_pool2d_with(x, Pool2dSettings::square(k, s, p, ceil))
    }

    /// PyTorch's `MaxPool2d(kernel_size=(kh, kw), stride=(sh, sw),
    /// padding=(ph, pw), dilation=(dh, dw), ceil_mode)`, its settings per
    /// axis ([`Pool2dSettings`]); as [`Self::max_pool2d`], each window's
    /// gradient goes to its first maximum.
    pub fn max_pool2d_with(&mut self, x: NodeId, settings: Pool2dSettings) -> NodeId {
        self.push(Op::MaxPool(settings), vec![x])
    }

    /// PyTorch's `AdaptiveAvgPool2d((oh, ow))`.
    pub fn adaptive_avg_pool2d(&mut self, x: NodeId, oh: usize, ow: usize) -> NodeId {
        self.push(Op::AdaptiveAvgPool { oh, ow }, vec![x])
    }

    /// PyTorch's `AvgPool2d(k, stride = s, padding = p)` with its other
    /// defaults: zero padding counted in each window's k²
    /// (`count_include_pad = True`), no ceil mode. The padding may be at
    /// most half the window, as PyTorch's.
    pub fn avg_pool2d(&mut self, x: NodeId, k: usize, s: usize, p: usize) -> NodeId {
        self.avg_pool2d_with(x, Pool2dSettings::square(k, s, p, false))
    }

    /// PyTorch's `AvgPool2d(kernel_size=(kh, kw), stride=(sh, sw),
    /// padding=(ph, pw), ceil_mode, count_include_pad)`, its settings per
    /// axis ([`Pool2dSettings`], whose dilation must be 1): each window's
    /// sum over its size, padding included (in ceil mode clipped to input
    /// and padding), or with `count_include_pad: false` over the input
    /// values it holds. ResNet-D's shortcut downsampling (timm's
    /// `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`) and a
    /// pool along the columns only:
    ///
    /// ```
    /// use gevaldi::candle_core::{Device, Module, Tensor};
    /// use gevaldi::{NetBuilder, Pool2dSettings};
    ///
    /// let mut b = NetBuilder::new();
    /// let x = b.input();
    /// let resnet_d = Pool2dSettings {
    ///     ceil_mode: true,
    ///     count_include_pad: false,
    ///     ..Pool2dSettings::new([2, 2])
    /// };
    /// let h = b.avg_pool2d_with(x, resnet_d);
    /// let y = b.avg_pool2d_with(h, Pool2dSettings::new([1, 2]));
    /// let net = b.build(y);
    /// // 5 x 5 -> 3 x 3 (the last row and column of windows one wide,
    /// // divided by what they hold) -> 3 x 1.
    /// let x = Tensor::arange(0f32, 25.0, &Device::Cpu)?.reshape((1, 1, 5, 5))?;
    /// let y = net.forward(&x)?;
    /// assert_eq!(y.dims(), [1, 1, 3, 1]);
    /// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4.0, 14.0, 21.5]);
    /// # Ok::<(), gevaldi::candle_core::Error>(())
    /// ```
    pub fn avg_pool2d_with(&mut self, x: NodeId, settings: Pool2dSettings) -> NodeId {
        self.push(Op::AvgPool(settings), vec![x])
    }

    /// Nearest-neighbour upsampling by an integer factor (each value
    /// repeated over a `scale` × `scale` window): PyTorch's
    /// `Upsample(scale_factor = scale, mode = "nearest")`, a generator's
    /// upsampling.
    pub fn upsample_nearest2d(&mut self, x: NodeId, scale: usize) -> NodeId {
        self.push(Op::Upsample { scale }, vec![x])
    }

    /// A transposed convolution with candle_nn's layer's weights
    /// (`[Cin, Cout, kh, kw]`) and settings: PyTorch's `ConvTranspose2d`
    /// (one group), a generator's upsampling layer. Its output padding
    /// must be less than its stride (PyTorch also takes one less than the
    /// dilation; here that is an error saying so).
    pub fn conv_transpose2d(&mut self, x: NodeId, conv: &candle_nn::ConvTranspose2d) -> NodeId {
        let settings = ConvTranspose2dSettings::from(*conv.config());
        self.conv_transpose2d_with(x, conv.weight(), conv.bias(), settings)
    }

    /// PyTorch's `ConvTranspose2d(stride=(sh, sw), padding=(ph, pw),
    /// output_padding=(oh, ow), dilation=(dh, dw))` (one group) with its
    /// weight `[Cin, Cout, kh, kw]` and bias as loaded, its settings per
    /// axis ([`ConvTranspose2dSettings`]); each output padding must be less
    /// than its axis's stride.
    pub fn conv_transpose2d_with(
        &mut self,
        x: NodeId,
        weight: &Tensor,
        bias: Option<&Tensor>,
        settings: ConvTranspose2dSettings,
    ) -> NodeId {
        let op = Op::ConvTranspose {
            weight: weight.clone(),
            bias: bias.cloned(),
            settings,
        };
        self.push(op, vec![x])
    }

    /// PyTorch's `flatten(1)`.
    pub fn flatten(&mut self, x: NodeId) -> NodeId {
        self.push(Op::Flatten, vec![x])
    }

    /// Reshapes each sample to `dims` (`[F]` or `[C, H, W]`), as PyTorch's
    /// `reshape`.
    pub fn reshape(&mut self, x: NodeId, dims: &[usize]) -> NodeId {
        self.push(Op::Reshape(dims.to_vec()), vec![x])
    }

    /// The values side by side along dim 1 (channels, or a flat value's
    /// features): PyTorch's `torch.cat(xs, 1)`.
    pub fn concat(&mut self, xs: &[NodeId]) -> NodeId {
        self.concat_dim(xs, 1)
    }

    /// The values side by side along `dim`: 1 (channels or features), 2
    /// (rows) or 3 (columns), PyTorch's `torch.cat(xs, dim)`; their other
    /// sizes must be the same. A transformer's tokens as the rows of a
    /// `[B, D, N, 1]` value take a class token in front of them along dim
    /// 2 (see [`NetBuilder::constant`]). Another dim is refused when the
    /// network runs.
    pub fn concat_dim(&mut self, xs: &[NodeId], dim: usize) -> NodeId {
        self.push(Op::Concat { dim }, xs.to_vec())
    }

    /// `value`, one sample's `[1, C, H, W]` or `[1, F]`, repeated over the
    /// batch: a learned constant such as a vision transformer's class
    /// token (`[1, D, 1, 1]`, joined to the tokens with
    /// [`NetBuilder::concat_dim`] along dim 2) or its position embedding
    /// (`[1, D, N, 1]`, added). It takes the network's input for its batch
    /// size only; nothing flows back to the input through it.
    ///
    /// ```
    /// # fn main() -> candle_core::Result<()> {
    /// use candle_core::{Device, Module, Tensor};
    /// use gevaldi::NetBuilder;
    ///
    /// let dev = Device::Cpu;
    /// let mut b = NetBuilder::new();
    /// let tokens = b.input(); // [B, D, N, 1]
    /// let class = b.constant(&Tensor::new(&[9f32, 8.], &dev)?.reshape((1, 2, 1, 1))?);
    /// let joined = b.concat_dim(&[class, tokens], 2); // [B, D, N + 1, 1]
    /// let first = b.narrow(joined, 2, 0, 1); // the class token's row
    /// let net = b.build(joined);
    /// let x = Tensor::zeros((3, 2, 4, 1), candle_core::DType::F32, &dev)?;
    /// assert_eq!(net.forward(&x)?.dims(), [3, 2, 5, 1]);
    /// # let _ = first;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A value of more than one sample, or of another rank, is refused
    /// when the network runs.
    pub fn constant(&mut self, value: &Tensor) -> NodeId {
        let x = self.input();
        self.push(Op::Constant(value.clone()), vec![x])
    }

    /// Entries `[start, start + len)` of `dim`: 1 (channels, or a flat
    /// value's features), 2 (rows) or 3 (columns), PyTorch's
    /// `x.narrow(dim, start, len)`, one part of a `chunk` or `split`.
    /// ShuffleNetV2's split of the channels is two of them:
    ///
    /// ```
    /// # fn main() -> candle_core::Result<()> {
    /// use candle_core::{Device, Module, Tensor};
    /// use gevaldi::NetBuilder;
    ///
    /// let mut b = NetBuilder::new();
    /// let x = b.input();
    /// let (left, right) = (b.narrow(x, 1, 0, 2), b.narrow(x, 1, 2, 2));
    /// let y = b.concat(&[right, left]);
    /// let net = b.build(y);
    /// let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu)?;
    /// assert_eq!(net.forward(&x)?.to_vec2::<f32>()?, [[3., 4., 1., 2.]]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A length of 0 or a dim other than 1, 2 and 3 is refused; a range
    /// past the dim's size is an error when the network runs, naming both.
    pub fn narrow(&mut self, x: NodeId, dim: usize, start: usize, len: usize) -> NodeId {
        self.push(Op::Narrow { dim, start, len }, vec![x])
    }

    /// PyTorch's `ChannelShuffle(groups)` (torchvision's ShuffleNetV2):
    /// the C channels (or features) read as `[groups, C / groups]` and
    /// written transposed, output channel `j · groups + i` being input
    /// channel `i · C / groups + j`. Groups 0 are refused; groups that do
    /// not divide C are an error when the network runs.
    pub fn channel_shuffle(&mut self, x: NodeId, groups: usize) -> NodeId {
        self.push(Op::ChannelShuffle { groups }, vec![x])
    }

    /// `a + b`.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.push(Op::Add, vec![a, b])
    }

    /// `a · b` elementwise: `b` of `a`'s shape, or `[B, C, 1, 1]` for `a`
    /// `[B, C, H, W]`, a gate per channel (squeeze-and-excitation).
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.push(Op::Mul, vec![a, b])
    }

    /// Attention over pixels: for queries `q` `[B, K, H, W]`, keys `k`
    /// `[B, K, H', W']` and values `v` `[B, C, H', W']`, each query
    /// pixel's output is `Σ_m softmax_m(scale · q·k_m) · v_m` over the key
    /// pixels m: `[B, C, H, W]`. SAGAN's and BigGAN's self-attention is
    /// `q`, `k`, `v` from 1×1 convs of one value (`k` and `v` max-pooled),
    /// `scale` 1, then a 1×1 conv, a gain and a residual `add`; a
    /// transformer's single head over the pixels takes `scale` 1/√K.
    /// Values of other shapes are an error when the network runs, naming
    /// them; so is a scale that is not finite.
    pub fn attention(&mut self, q: NodeId, k: NodeId, v: NodeId, scale: f32) -> NodeId {
        self.push(Op::Attention { scale }, vec![q, k, v])
    }

    /// LayerNorm over the channels of each pixel (torchvision's
    /// `LayerNorm2d`), or over the features of a flat value.
    pub fn layer_norm(&mut self, x: NodeId, weight: &Tensor, bias: &Tensor, eps: f64) -> NodeId {
        let op = Op::LayerNorm {
            weight: weight.clone(),
            bias: bias.clone(),
            eps,
        };
        self.push(op, vec![x])
    }

    /// The network whose output is `output`.
    pub fn build(mut self, output: NodeId) -> Net {
        self.nodes.truncate(output.0 + 1);
        let frozen = self.nodes.iter().all(|node| node.op.weights_frozen());
        let refused = self
            .nodes
            .iter()
            .find_map(|node| node.op.refused())
            .map(Arc::from);
        Net {
            nodes: Arc::new(self.nodes),
            frozen,
            program: Arc::new(OnceLock::new()),
            prepared: Arc::new(OnceLock::new()),
            refused,
        }
    }
}

/// A network described once with [`NetBuilder`], run by gevaldi's CPU
/// kernels (f32 on the CPU, frozen weights: a backward to the input only,
/// never a weight gradient), by the device-generic path (a GPU, other
/// dtypes) or by candle's ops (`GEVALDI_ENGINE=candle`, or a weight that is
/// a variable); the three agree to f32 rounding. A classifier of one's own
/// built this way runs as fast as the built-in ones:
/// [`ModuleClassifier::from_net`](crate::ModuleClassifier::from_net).
#[derive(Clone, Debug)]
pub struct Net {
    pub(crate) nodes: Arc<Vec<Node>>,
    /// Compiled for the CPU engine on first use; `None` where it does not
    /// apply (a variable weight, weights not f32 on the CPU).
    program: Arc<OnceLock<Option<Arc<Program>>>>,
    /// Whether no weight is a variable (a model being trained needs its
    /// weight gradients, which only candle's autograd computes).
    frozen: bool,
    /// The device-generic path's backward kernels, made on first use.
    prepared: Arc<OnceLock<Arc<Prepared>>>,
    /// The first node's setting PyTorch refuses ([`Op::refused`]), found
    /// when the network is built: every path's forward refuses it.
    refused: Option<Arc<str>>,
}

impl Net {
    /// Whether the CPU engine runs this network on `x`.
    pub fn uses_cpu_engine(&self, x: &Tensor) -> bool {
        self.cpu_program(x, Engine::current()).is_some()
    }

    /// The program the CPU engine runs `x` with under `engine`: the cheap
    /// checks (device, dtype, engine) first, compiling (a copy of every
    /// weight) only where they pass.
    fn cpu_program(&self, x: &Tensor, engine: Engine) -> Option<&Arc<Program>> {
        if self.check().is_err()
            || !x.device().is_cpu()
            || x.dtype() != DType::F32
            || engine != Engine::Auto
        {
            return None;
        }
        self.program
            .get_or_init(|| Program::compile(&self.nodes).map(Arc::new))
            .as_ref()
    }

    /// Runs the network on candle's ops, whatever the engine.
    pub fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check()?;
        super::reference::forward(&self.nodes, x)
    }

    /// Runs the network on the engine's device-generic path (candle's ops
    /// forward, a backward to the input only), whatever the engine; a
    /// network with a variable weight, or a tensor on a Metal device (the
    /// path's op has a CPU and a CUDA forward only), runs candle's ops and
    /// autograd.
    pub fn forward_generic(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check()?;
        if !self.frozen || !(x.device().is_cpu() || x.device().is_cuda()) {
            return self.forward_candle(x);
        }
        let prepared = self.prepared()?;
        generic::run(&self.nodes, prepared, x)
    }

    /// [`Module::forward`] outside candle's graph, with its backward to the
    /// input (`[dx]`), on the engine's paths: `None` under
    /// `GEVALDI_ENGINE=candle`, for a network with a variable weight, or
    /// off the CPU and CUDA (candle's autograd is needed there).
    pub(crate) fn forward_taped(
        &self,
        x: &Tensor,
    ) -> candle_core::Result<Option<(Tensor, super::Pullback)>> {
        self.check()?;
        let engine = Engine::current();
        let x = x.detach();
        if let Some(p) = self.cpu_program(&x, engine) {
            return super::cpu_op::forward_taped(p, &x).map(Some);
        }
        if engine == Engine::Candle
            || !self.frozen
            || !(x.device().is_cpu() || x.device().is_cuda())
        {
            return Ok(None);
        }
        let prepared = self.prepared()?;
        let (out, tape) = generic::forward(&self.nodes, prepared, &x, true)?;
        let Some(tape) = tape else {
            candle_core::bail!("gevaldi-net: a forward kept no tape")
        };
        let back: super::Pullback = Box::new(move |g| Ok(vec![tape.backward(g)?]));
        Ok(Some((out, back)))
    }

    /// The error of the first node's setting that PyTorch refuses and
    /// that the paths would each read their own way ([`Op::refused`]),
    /// every path's first check.
    fn check(&self) -> candle_core::Result<()> {
        match &self.refused {
            Some(message) => candle_core::bail!("{message}"),
            None => Ok(()),
        }
    }

    /// The generic path's backward kernels, made on first use.
    fn prepared(&self) -> candle_core::Result<&Arc<Prepared>> {
        Ok(match self.prepared.get() {
            Some(p) => p,
            None => {
                let p = Arc::new(Prepared::new(&self.nodes)?);
                self.prepared.get_or_init(|| p)
            }
        })
    }

    /// [`Module::forward`] under `engine`.
    fn forward_with(&self, x: &Tensor, engine: Engine) -> candle_core::Result<Tensor> {
        match self.cpu_program(x, engine) {
            Some(p) => super::cpu_op::forward(p, x),
            None if engine == Engine::Candle => self.forward_candle(x),
            None => self.forward_generic(x),
        }
    }

    /// Whether the program has been compiled (tests).
    #[cfg(test)]
    pub(crate) fn is_compiled(&self) -> bool {
        self.program.get().is_some()
    }

    /// The names of the compiled program's kernels, in order (tests);
    /// empty before it is compiled.
    #[cfg(test)]
    pub(crate) fn compiled_kernels(&self) -> impl Iterator<Item = &'static str> + '_ {
        let steps = match self.program.get() {
            Some(Some(p)) => p.steps.as_slice(),
            _ => &[],
        };
        steps.iter().map(|s| s.kernel.name())
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, Engine::current())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::{Engine, NetBuilder};

    /// Under the candle engine (or for a tensor the kernels do not take) a
    /// frozen network runs candle's ops and never compiles its copy of the
    /// weights.
    #[test]
    fn no_program_is_compiled_where_the_cpu_engine_does_not_run() {
        let dev = Device::Cpu;
        let w = Tensor::ones((4, 3), DType::F32, &dev).unwrap();
        let mut b = NetBuilder::new();
        let x = b.input();
        let y = b.linear(x, &w, None);
        let net = b.build(y);
        let x = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let y = net.forward_with(&x, Engine::Candle).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[3.0; 4], [3.0; 4]]);
        assert!(!net.is_compiled());
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert!(net.cpu_program(&x64, Engine::Auto).is_none());
        assert!(!net.is_compiled());
        assert!(net.cpu_program(&x, Engine::Auto).is_some());
        assert!(net.is_compiled());
    }
}
