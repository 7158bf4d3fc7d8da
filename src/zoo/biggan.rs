// Over 500 lines on purpose: BigGAN-deep's tensor layout, its loader (spectral
// norms and truncation-interpolated statistics) and its forward pass are one
// architecture, read together; its layers run as engine ops (see below), not
// yet as one `Net` program.
//! BigGAN-deep (Brock, Donahue and Simonyan, 2018), the class-conditional
//! ImageNet generator of the paper's headline experiment, with the tensor
//! names of the widely used PyTorch port (`pytorch-pretrained-BigGAN`, whose
//! `BigGAN.from_pretrained("biggan-deep-128")` state dict, saved as
//! safetensors, is what [`BigGan::load`] reads; see the README for the
//! one-line conversion).
//!
//! The generator maps z (dim 128) and a class vector c (1000 classes,
//! one-hot or a soft mixture) to an RGB image in [−1, 1]:
//!
//! ```text
//! e = c · Eᵀ                          (the shared class embedding, `embeddings.weight`)
//! h = gen_z([z, e]) → [B, 16·ch, 4, 4]
//! h = blocks(h, [z, e])               (conditional batch norm in every block,
//!                                      self-attention at 64×64)
//! x = tanh(conv_to_rgb(relu(bn(h)))[:, :3])  (only those 3 outputs computed)
//! ```
//!
//! The port's layers are spectral-normalised (`torch.nn.utils.spectral_norm`):
//! each stores `weight_orig`, `weight_u` and `weight_v` instead of `weight`.
//! At load time each is turned into the plain weight PyTorch uses in eval
//! mode, `W = weight_orig / σ` with `σ = uᵀ · W_mat · v` (W_mat: weight_orig
//! as `[out, in·k·k]`); a σ that is not finite and positive is an error
//! naming the tensor. Batch norms hold running statistics for 51 truncation
//! values between 0 and 1 (`running_means`, `running_vars`, `[51, C]`); the
//! generator interpolates them at its truncation exactly as the port does.
//!
//! State dict layout (ch = 128 for the pretrained models; each `sn` entry is
//! the three tensors `weight_orig`, `weight_u`, `weight_v`):
//!
//! ```text
//! embeddings.weight                          [128, 1000]
//! generator.gen_z.{sn, bias}                 [4·4·16·ch, 256], [4·4·16·ch]
//! generator.layers.<i>.bn_<j>.running_means  [51, C]  (and running_vars)
//! generator.layers.<i>.bn_<j>.scale.{sn}     [C, 256] (and offset.{sn}), j = 0..3
//! generator.layers.<i>.conv_0.{sn, bias}     [C_in/4, C_in, 1, 1]
//! generator.layers.<i>.conv_1.{sn, bias}     [C_in/4, C_in/4, 3, 3]   (conv_2 alike)
//! generator.layers.<i>.conv_3.{sn, bias}     [C_out, C_in/4, 1, 1]
//! generator.layers.8.snconv1x1_theta.{sn}    [C/8, C, 1, 1]  (phi alike; g: [C/2, C, 1, 1];
//! generator.layers.8.snconv1x1_o_conv.{sn}   [C, C/2, 1, 1]   gamma: [1])
//! generator.bn.{running_means, running_vars} [51, ch]; generator.bn.{weight, bias} [ch]
//! generator.conv_to_rgb.{sn, bias}           [ch, ch, 3, 3]
//! ```
//!
//! [`BigGanConfig::tensor_shapes`] lists every name with its shape (506
//! tensors for BigGAN-deep-128).
//!
//! On the [engine](crate::engine) in part, as ops whose backward goes to
//! their inputs only and whose place in candle's graph holds only what
//! that backward reads: each conv is a one-node engine [`Net`]; each batch
//! norm with the ReLU after it one
//! [`scale_shift_relu`](crate::engine::scale_shift_relu) (its gains come
//! from z, so their gradients too); the self-attention's products and
//! softmax one op that keeps nothing (its backward recomputes the
//! attention map, a few samples at a time); each block's residual join
//! (channels dropped, upsampled, added) one op; the upsampling before a
//! block's first 3×3 conv one op (candle's backward of it runs a conv per
//! channel). On the CPU the convs and norms run gevaldi's kernels; on a
//! GPU (or `GEVALDI_ENGINE=generic`) candle's ops untracked, with
//! backwards written in candle's ops (on a CUDA device under `auto`, many
//! of them gevaldi's CUDA kernels). `gen_z` and each norm's gains (its
//! scales and shifts side by side, one linear map of the condition whose
//! weights are worked out once from the statistics) are one-node engine
//! nets too. With a tracked z, the whole
//! generator runs outside candle's graph and joins it as one op whose
//! backward is gevaldi's: each op's backward in reverse (a [`Tape`]), the
//! self-attention layer's too (its nets', its attention op's); candle's
//! autograd made a zero tensor and a sum per edge, and its gradient store
//! held every gradient of the attention layer until that layer's backward
//! ended (`GEVALDI_ENGINE=candle` keeps it). Not yet one program: each
//! conv converts its input to channels-last and back on the CPU, and the
//! tape holds every value its backward reads until that backward ends
//! (mostly each norm's input, and on the CPU its output too; see README's
//! Performance section).
//!
//! The port's `conv_to_rgb` has ch outputs of which the image keeps 3; only
//! those 3 are computed (the same image, a fifth fewer multiply-adds).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rand::{RngCore, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::engine::{Net, NetBuilder, Pullback};
use crate::model::{Generator, LatentSupport};

/// The shape of a BigGAN-deep generator.
#[derive(Clone, Debug, PartialEq)]
pub struct BigGanConfig {
    /// Latent dimension. (128.)
    pub z_dim: usize,
    /// Classes of the condition. (1000.)
    pub num_classes: usize,
    /// ch: channels are multiples of it. (128.)
    pub channel_width: usize,
    /// Blocks: (upsample?, input channels / ch, output channels / ch).
    pub layers: Vec<(bool, usize, usize)>,
    /// The self-attention layer comes before this block. (8: at 64×64.)
    pub attention_layer_position: usize,
    /// Batch norm epsilon. (1e-4.)
    pub eps: f64,
    /// Truncation values with stored batch norm statistics. (51.)
    pub n_stats: usize,
}

impl BigGanConfig {
    /// BigGAN-deep at 128, 256 or 512 pixels (`None` otherwise). The
    /// 128 layout is the port's default config; 256 and 512 add blocks by
    /// the paper's channel multipliers (16, 16, 8, 8, 4, 2, 1 and 16, 16, 8,
    /// 8, 4, 2, 1, 1), a non-upsampling and an upsampling block each.
    pub fn deep(resolution: usize) -> Option<Self> {
        let mults: &[usize] = match resolution {
            128 => &[16, 16, 8, 4, 2, 1],
            256 => &[16, 16, 8, 8, 4, 2, 1],
            512 => &[16, 16, 8, 8, 4, 2, 1, 1],
            _ => return None,
        };
        let layers = mults
            .windows(2)
            .flat_map(|m| [(false, m[0], m[0]), (true, m[0], m[1])])
            .collect();
        Some(BigGanConfig {
            z_dim: 128,
            num_classes: 1000,
            channel_width: 128,
            layers,
            attention_layer_position: 8,
            eps: 1e-4,
            n_stats: 51,
        })
    }

    /// The same layout at width `channel_width` over `num_classes` classes
    /// (e.g. a small one for tests).
    pub fn reduced(resolution: usize, channel_width: usize, num_classes: usize) -> Option<Self> {
        Some(BigGanConfig {
            channel_width,
            num_classes,
            ..Self::deep(resolution)?
        })
    }

    /// The output's side, 4 · 2^(upsampling blocks).
    pub fn resolution(&self) -> usize {
        4 << self.layers.iter().filter(|l| l.0).count()
    }

    /// Every tensor of the port's state dict with its shape, in the order
    /// of the modules.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let ch = self.channel_width;
        let cond = 2 * self.z_dim;
        let mut out = vec![(
            "embeddings.weight".to_string(),
            vec![self.z_dim, self.num_classes],
        )];
        let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
        let sn =
            |push: &mut dyn FnMut(String, Vec<usize>), p: &str, shape: Vec<usize>, bias: bool| {
                let inn: usize = shape[1..].iter().product();
                push(format!("{p}.weight_orig"), shape.clone());
                push(format!("{p}.weight_u"), vec![shape[0]]);
                push(format!("{p}.weight_v"), vec![inn]);
                if bias {
                    push(format!("{p}.bias"), vec![shape[0]]);
                }
            };
        sn(
            &mut push,
            "generator.gen_z",
            vec![4 * 4 * 16 * ch, cond],
            true,
        );
        let mut index = 0;
        for (i, &(_, cin, cout)) in self.layers.iter().enumerate() {
            if i == self.attention_layer_position {
                let c = ch * cin;
                let p = format!("generator.layers.{index}");
                sn(
                    &mut push,
                    &format!("{p}.snconv1x1_theta"),
                    vec![c / 8, c, 1, 1],
                    false,
                );
                sn(
                    &mut push,
                    &format!("{p}.snconv1x1_phi"),
                    vec![c / 8, c, 1, 1],
                    false,
                );
                sn(
                    &mut push,
                    &format!("{p}.snconv1x1_g"),
                    vec![c / 2, c, 1, 1],
                    false,
                );
                sn(
                    &mut push,
                    &format!("{p}.snconv1x1_o_conv"),
                    vec![c, c / 2, 1, 1],
                    false,
                );
                push(format!("{p}.gamma"), vec![1]);
                index += 1;
            }
            let (cin, cout) = (ch * cin, ch * cout);
            let mid = cin / 4;
            let p = format!("generator.layers.{index}");
            for (j, c) in [cin, mid, mid, mid].into_iter().enumerate() {
                let bn = format!("{p}.bn_{j}");
                push(format!("{bn}.running_means"), vec![self.n_stats, c]);
                push(format!("{bn}.running_vars"), vec![self.n_stats, c]);
                sn(&mut push, &format!("{bn}.scale"), vec![c, cond], false);
                sn(&mut push, &format!("{bn}.offset"), vec![c, cond], false);
            }
            sn(
                &mut push,
                &format!("{p}.conv_0"),
                vec![mid, cin, 1, 1],
                true,
            );
            sn(
                &mut push,
                &format!("{p}.conv_1"),
                vec![mid, mid, 3, 3],
                true,
            );
            sn(
                &mut push,
                &format!("{p}.conv_2"),
                vec![mid, mid, 3, 3],
                true,
            );
            sn(
                &mut push,
                &format!("{p}.conv_3"),
                vec![cout, mid, 1, 1],
                true,
            );
            index += 1;
        }
        push("generator.bn.running_means".into(), vec![self.n_stats, ch]);
        push("generator.bn.running_vars".into(), vec![self.n_stats, ch]);
        push("generator.bn.weight".into(), vec![ch]);
        push("generator.bn.bias".into(), vec![ch]);
        sn(&mut push, "generator.conv_to_rgb", vec![ch, ch, 3, 3], true);
        out
    }

    /// A state dict with this layout and seeded random values, consistent
    /// as PyTorch's would be: `weight_v` a unit vector and `weight_u` the
    /// normalised `W_mat · v` (so σ > 0), batch norm statistics 0 and 1, and
    /// a nonzero attention `gamma`. For tests and benchmarks.
    #[doc(hidden)]
    pub fn random_state_dict(
        &self,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let shapes = self.tensor_shapes();
        let mut values: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with("running_vars") || name.ends_with("bn.weight") {
                vec![1.0; n]
            } else if name.ends_with("running_means") || name.ends_with("bias") {
                vec![0.0; n]
            } else if name.ends_with("gamma") {
                vec![0.5]
            } else if name.ends_with("weight_u") {
                Vec::new() // from W and v, below
            } else {
                let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let dist = Uniform::new_inclusive(-bound, bound).expect("a valid bound");
                let mut v: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng)).collect();
                if name.ends_with("weight_v") {
                    unit(&mut v);
                }
                v
            };
            values.insert(name.clone(), v);
        }
        for (name, shape) in &shapes {
            if let Some(p) = name.strip_suffix(".weight_u") {
                let w = &values[&format!("{p}.weight_orig")];
                let v = &values[&format!("{p}.weight_v")];
                let out = shape[0];
                let mut u: Vec<f32> = (0..out)
                    .map(|o| {
                        w[o * v.len()..(o + 1) * v.len()]
                            .iter()
                            .zip(v)
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect();
                unit(&mut u);
                values.insert(name.clone(), u);
            }
        }
        shapes
            .into_iter()
            .map(|(name, shape)| {
                let v = values.remove(&name).expect("every name has values");
                Ok((name, Tensor::from_vec(v, shape, device)?))
            })
            .collect()
    }
}

/// Scales `v` to unit length (left as is when it is 0).
fn unit(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The plain weight of a spectral-normalised layer under `vb`.
fn spectral(vb: &VarBuilder, shape: &[usize]) -> candle_core::Result<Tensor> {
    let w = vb.get(shape, "weight_orig")?;
    let out = shape[0];
    let inn: usize = shape[1..].iter().product();
    let u = vb.get(out, "weight_u")?;
    let v = vb.get(inn, "weight_v")?;
    let sigma = u
        .reshape((1, out))?
        .matmul(&w.reshape((out, inn))?.matmul(&v.reshape((inn, 1))?)?)?
        .flatten_all()?
        .to_vec1::<f32>()?[0];
    if !(sigma.is_finite() && sigma > 0.0) {
        candle_core::bail!(
            "`{}.weight_u` and `{0}.weight_v` give a spectral norm σ = {sigma}: expected the \
             power-iteration vectors of torch.nn.utils.spectral_norm (σ > 0)",
            vb.prefix()
        );
    }
    w.affine(1.0 / sigma as f64, 0.0)
}

/// A spectral-normalised conv as a one-node engine [`Net`]: a backward to
/// its input only, on the CPU engine's kernels or (a GPU) the generic path
/// (candle's own conv2d backward also computes the frozen weight's
/// gradient and runs a naive `conv_transpose2d`).
fn sn_conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    bias: bool,
) -> candle_core::Result<Net> {
    let w = spectral(&vb, &[cout, cin, k, k])?;
    let b = if bias {
        Some(vb.get(cout, "bias")?)
    } else {
        None
    };
    Ok(conv_net(w, b))
}

/// A conv with kernel `w` `[out, in, k, k]` (padding k / 2).
fn conv(w: Tensor, b: Option<Tensor>) -> Conv2d {
    let k = w.dim(2).unwrap_or(1);
    Conv2d::new(
        w,
        b,
        Conv2dConfig {
            padding: k / 2,
            ..Default::default()
        },
    )
}

/// [`conv`] as a one-node engine [`Net`].
fn conv_net(w: Tensor, b: Option<Tensor>) -> Net {
    let mut net = NetBuilder::new();
    let y = net.conv2d(net.input(), &conv(w, b));
    net.build(y)
}

/// Running statistics at `truncation`, interpolated as the port does:
/// with t / step = i + f, `m[i]·f + m[i+1]·(1 − f)` (or `m[i]` when f = 0).
fn stats_at(
    vb: &VarBuilder,
    n_stats: usize,
    c: usize,
    truncation: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let step = 1.0 / (n_stats - 1) as f64;
    let pos = truncation / step;
    let (i, f) = (pos.trunc() as usize, pos.fract());
    let pick = |name: &str| -> candle_core::Result<Tensor> {
        let all = vb.get((n_stats, c), name)?;
        if f == 0.0 {
            all.get(i)
        } else {
            all.get(i)?.affine(f, 0.0)? + all.get(i + 1)?.affine(1.0 - f, 0.0)?
        }
    };
    Ok((pick("running_means")?, pick("running_vars")?))
}

/// Batch norm with frozen statistics, and the ReLU after it; conditional:
/// scale 1 + c·Sᵀ and offset c·Oᵀ per sample.
#[derive(Clone, Debug)]
struct BatchNorm {
    /// `[1, C]` each.
    mean: Tensor,
    inv_std: Tensor,
    /// Conditional: the spectral-normalised scale and offset `[C, cond]`;
    /// else the affine weight and bias `[C]`.
    scale: Tensor,
    offset: Tensor,
    /// Conditional: the norm's per-sample scale `a` and shift of
    /// [`BatchNorm::forward_relu`], side by side, as one linear map of the
    /// condition, a one-node engine [`Net`] (see [`BatchNorm::gains`]).
    gains: Option<Net>,
}

impl BatchNorm {
    fn load(
        vb: VarBuilder,
        c: usize,
        cond: Option<usize>,
        cfg: &BigGanConfig,
        t: f64,
    ) -> candle_core::Result<Self> {
        let (mean, var) = stats_at(&vb, cfg.n_stats, c, t)?;
        let inv_std = (var + cfg.eps)?.sqrt()?.recip()?;
        let (scale, offset) = match cond {
            Some(d) => (
                spectral(&vb.pp("scale"), &[c, d])?,
                spectral(&vb.pp("offset"), &[c, d])?,
            ),
            None => (vb.get(c, "weight")?, vb.get(c, "bias")?),
        };
        let mut bn = BatchNorm {
            mean: mean.reshape((1, c))?,
            inv_std: inv_std.reshape((1, c))?,
            scale,
            offset,
            gains: None,
        };
        if cond.is_some() {
            bn.gains = Some(bn.gains()?);
        }
        Ok(bn)
    }

    /// The conditional norm's `a = (1 + c·Sᵀ) · inv_std` and `shift = c·Oᵀ
    /// − a · mean` as linear maps of the condition c, their weights and
    /// biases worked out once from the statistics: `a = c·(S · inv_std)ᵀ +
    /// inv_std`, `shift = c·(O − S · inv_std · mean)ᵀ − inv_std · mean`
    /// (per row of S and O). Both are one linear map `[B, 2C]` (each
    /// sample's C scales, then its C shifts: the gains
    /// [`scale_shift_relu`](crate::engine::scale_shift_relu) takes), a
    /// one-node engine net whose backward gives the condition's gradient
    /// only: candle's matmul backward also computes the frozen S's and O's
    /// gradients, and its autograd adds five more ops per norm (50 norms a
    /// BigGAN-deep step); one map rather than two is one product and one
    /// bias forward, and one product backward, instead of two each.
    fn gains(&self) -> candle_core::Result<Net> {
        let inv_std = self.inv_std.t()?; // [C, 1]
        let inv_std_mean = (&self.inv_std * &self.mean)?.t()?;
        let scale_w = self.scale.broadcast_mul(&inv_std)?;
        let shift_w = (&self.offset - self.scale.broadcast_mul(&inv_std_mean)?)?;
        let w = Tensor::cat(&[scale_w, shift_w], 0)?.contiguous()?;
        let b = Tensor::cat(
            &[inv_std.flatten_all()?, inv_std_mean.neg()?.flatten_all()?],
            0,
        )?;
        let mut net = NetBuilder::new();
        let y = net.linear(net.input(), &w, Some(&b));
        Ok(net.build(y))
    }

    /// Sets the statistics to those of `x` per channel (standing
    /// statistics), then applies the norm and the ReLU.
    fn calibrate(&mut self, x: &Tensor, cond: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let x = x.detach();
        let c = x.dim(1)?;
        let flat = x.transpose(0, 1)?.flatten_from(1)?; // [C, B·H·W]
        let mean = flat.mean(1)?;
        let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?;
        self.mean = mean.reshape((1, c))?;
        self.inv_std = (var + eps)?.sqrt()?.recip()?.reshape((1, c))?;
        if self.gains.is_some() {
            self.gains = Some(self.gains()?);
        }
        self.forward_relu(&x, cond)
    }

    /// `relu(bn(x))`: `(x − mean) · inv_std · w + b` = `x · a + (b − mean ·
    /// a)` with `a = w · inv_std`, per sample and channel (`[B, C]`, from
    /// the condition when conditional: [`BatchNorm::gains`]), as one
    /// [`scale_shift_relu`](crate::engine::scale_shift_relu).
    fn forward_relu(&self, x: &Tensor, cond: &Tensor) -> candle_core::Result<Tensor> {
        let ab = match &self.gains {
            Some(gains) => gains.forward(cond)?,
            None => self.constant_gains(x)?,
        };
        crate::engine::scale_shift_relu(x, &ab)
    }

    /// An unconditional norm's scale and shift for `x`'s batch, side by
    /// side: `[B, 2C]`.
    fn constant_gains(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c) = (x.dim(0)?, x.dim(1)?);
        let a = (self.scale.reshape((1, c))? * &self.inv_std)?;
        let shift = (self.offset.reshape((1, c))? - (&a * &self.mean)?)?;
        Tensor::cat(&[a, shift], 1)?.broadcast_as((b, 2 * c))
    }
}

#[derive(Clone, Debug)]
struct Block {
    bn: [BatchNorm; 4],
    conv: [Net; 4],
    up: bool,
}

impl Block {
    fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        up: bool,
        cfg: &BigGanConfig,
        t: f64,
    ) -> candle_core::Result<Self> {
        let mid = cin / 4;
        let cond = Some(2 * cfg.z_dim);
        let bn = |j: usize, c: usize| BatchNorm::load(vb.pp(format!("bn_{j}")), c, cond, cfg, t);
        Ok(Block {
            bn: [bn(0, cin)?, bn(1, mid)?, bn(2, mid)?, bn(3, mid)?],
            conv: [
                sn_conv(vb.pp("conv_0"), cin, mid, 1, true)?,
                sn_conv(vb.pp("conv_1"), mid, mid, 3, true)?,
                sn_conv(vb.pp("conv_2"), mid, mid, 3, true)?,
                sn_conv(vb.pp("conv_3"), mid, cout, 1, true)?,
            ],
            up,
        })
    }

    fn forward(&self, x: &Tensor, cond: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (j, (bn, conv)) in self.bn.iter().zip(&self.conv).enumerate() {
            h = stage(bn.forward_relu(&h, cond)?, j, self.up, conv)?;
        }
        self.join(x, h)
    }

    /// [`Block::forward`], each norm's statistics first set to those of its
    /// input.
    fn calibrate(&mut self, x: &Tensor, cond: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let up = self.up;
        let mut h = x.clone();
        for (j, (bn, conv)) in self.bn.iter_mut().zip(&self.conv).enumerate() {
            h = stage(bn.calibrate(&h, cond, eps)?, j, up, conv)?;
        }
        self.join(x, h)
    }

    /// The residual: `h` plus `x` (channels dropped, upsampled as `h` was).
    fn join(&self, x: &Tensor, h: Tensor) -> candle_core::Result<Tensor> {
        crate::engine::skip_add(&h, x, self.up)
    }
}

/// Whether stage `j` of a block (`up`: an upsampling one) upsamples its
/// input: the first 3×3 conv's.
fn upsamples(j: usize, up: bool) -> bool {
    j == 1 && up
}

/// A block's stage `j` after its norm and ReLU: ×2 upsampling before the
/// first 3×3 conv of an upsampling block, the conv.
fn stage(relu_normed: Tensor, j: usize, up: bool, conv: &Net) -> candle_core::Result<Tensor> {
    let mut h = relu_normed;
    if upsamples(j, up) {
        h = crate::engine::upsample2(&h)?;
    }
    conv.forward(&h)
}

#[derive(Clone, Debug)]
struct SelfAttention {
    theta: Net,
    phi: Net,
    g: Net,
    /// The output conv, its weight times the layer's γ.
    o: Net,
}

impl SelfAttention {
    fn load(vb: VarBuilder, c: usize) -> candle_core::Result<Self> {
        // φ and g: a 1×1 conv, then a 2×2 max-pool.
        let pooled = |name: &str, cout: usize| -> candle_core::Result<Net> {
            let mut net = NetBuilder::new();
            let y = net.conv2d(
                net.input(),
                &conv(spectral(&vb.pp(name), &[cout, c, 1, 1])?, None),
            );
            let y = net.max_pool2d(y, 2, 2, 0, false);
            Ok(net.build(y))
        };
        Ok(SelfAttention {
            theta: sn_conv(vb.pp("snconv1x1_theta"), c, c / 8, 1, false)?,
            phi: pooled("snconv1x1_phi", c / 8)?,
            g: pooled("snconv1x1_g", c / 2)?,
            // `o(·) · γ` as one conv: its weight times γ.
            o: conv_net(
                spectral(&vb.pp("snconv1x1_o_conv"), &[c, c / 2, 1, 1])?
                    .broadcast_mul(&vb.get(1, "gamma")?)?,
                None,
            ),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let theta = self.theta.forward(x)?.reshape((b, c / 8, h * w))?;
        let phi = self.phi.forward(x)?.reshape((b, c / 8, h * w / 4))?;
        let g = self.g.forward(x)?.reshape((b, c / 2, h * w / 4))?;
        let attn_g = crate::engine::attention(&theta, &phi, &g)?.reshape((b, c / 2, h, w))?;
        x + self.o.forward(&attn_g)?
    }

    /// [`Self::forward`] on `x` (untracked) with its own backward: each
    /// net's and the attention's, none of them on candle's graph. `None`
    /// where a net has no taped forward.
    fn forward_taped(&self, x: &Tensor) -> candle_core::Result<Option<(Tensor, AttentionTape)>> {
        let (b, c, h, w) = x.dims4()?;
        let (Some((theta, theta_back)), Some((phi, phi_back)), Some((g, g_back))) = (
            self.theta.forward_taped(x)?,
            self.phi.forward_taped(x)?,
            self.g.forward_taped(x)?,
        ) else {
            return Ok(None);
        };
        let (attn_g, attention) = crate::engine::attention_taped(
            &theta.reshape((b, c / 8, h * w))?,
            &phi.reshape((b, c / 8, h * w / 4))?,
            &g.reshape((b, c / 2, h * w / 4))?,
        )?;
        let Some((o, o_back)) = self.o.forward_taped(&attn_g.reshape((b, c / 2, h, w))?)? else {
            return Ok(None);
        };
        let tape = AttentionTape {
            dims: [b, c, h, w],
            theta: theta_back,
            phi: phi_back,
            g: g_back,
            attention,
            o: o_back,
        };
        Ok(Some(((x + o)?, tape)))
    }
}

/// What [`SelfAttention::forward_taped`] kept: each op's backward, and the
/// input's dims `[B, C, H, W]`.
struct AttentionTape {
    dims: [usize; 4],
    theta: Pullback,
    phi: Pullback,
    g: Pullback,
    attention: Pullback,
    o: Pullback,
}

impl AttentionTape {
    /// The input's gradient from the output's, `dy`: the residual's, and
    /// θ's, φ's and g's through the attention and the output conv.
    fn backward(&self, dy: &Tensor) -> candle_core::Result<Tensor> {
        let [b, c, h, w] = self.dims;
        let one = |grads: Vec<Tensor>| {
            grads.into_iter().next().ok_or_else(|| {
                candle_core::Error::Msg("BigGAN: an attention op gave no gradient".into())
            })
        };
        let dattn = one((self.o)(dy)?)?.reshape((b, c / 2, h * w))?;
        let [dtheta, dphi, dg] =
            <[Tensor; 3]>::try_from((self.attention)(&dattn)?).map_err(|_| {
                candle_core::Error::Msg("BigGAN: the attention gave no gradients".into())
            })?;
        let dtheta = one((self.theta)(&dtheta.reshape((b, c / 8, h, w))?)?)?;
        let dphi = one((self.phi)(&dphi.reshape((b, c / 8, h / 2, w / 2))?)?)?;
        let dg = one((self.g)(&dg.reshape((b, c / 2, h / 2, w / 2))?)?)?;
        (dy + dtheta)? + (dphi + dg)?
    }
}

#[derive(Clone, Debug)]
enum Layer {
    Block(Box<Block>),
    Attention(SelfAttention),
}

/// A BigGAN-deep generator at a fixed truncation; see the module docs.
#[derive(Clone, Debug)]
pub struct BigGan {
    cfg: BigGanConfig,
    truncation: f64,
    embeddings: Tensor,
    gen_z: Net,
    layers: Vec<Layer>,
    bn: BatchNorm,
    conv_to_rgb: Net,
}

impl BigGan {
    /// Loads the port's state dict from `vb` (see the module docs for the
    /// names) for truncation `truncation` in (0, 1].
    pub fn load(vb: VarBuilder, cfg: &BigGanConfig, truncation: f64) -> candle_core::Result<Self> {
        if !(truncation > 0.0 && truncation <= 1.0) {
            candle_core::bail!("BigGAN truncation {truncation}: expected a number in (0, 1]");
        }
        let ch = cfg.channel_width;
        let cond = 2 * cfg.z_dim;
        let g = vb.pp("generator");
        // A one-node engine net: candle's `Linear` backward would also
        // compute the frozen [4·4·16·ch, cond] weight's gradient.
        let gen_z = {
            let mut net = NetBuilder::new();
            let y = net.linear(
                net.input(),
                &spectral(&g.pp("gen_z"), &[4 * 4 * 16 * ch, cond])?,
                Some(&g.pp("gen_z").get(4 * 4 * 16 * ch, "bias")?),
            );
            net.build(y)
        };
        let mut layers = Vec::new();
        for (i, &(up, cin, cout)) in cfg.layers.iter().enumerate() {
            if i == cfg.attention_layer_position {
                let vb = g.pp(format!("layers.{}", layers.len()));
                layers.push(Layer::Attention(SelfAttention::load(vb, ch * cin)?));
            }
            let vb = g.pp(format!("layers.{}", layers.len()));
            layers.push(Layer::Block(Box::new(Block::load(
                vb,
                ch * cin,
                ch * cout,
                up,
                cfg,
                truncation,
            )?)));
        }
        Ok(BigGan {
            cfg: cfg.clone(),
            truncation,
            embeddings: vb.get((cfg.z_dim, cfg.num_classes), "embeddings.weight")?,
            gen_z,
            layers,
            bn: BatchNorm::load(g.pp("bn"), ch, None, cfg, truncation)?,
            // The port's conv has ch outputs, of which the image keeps the
            // first 3: only those are computed (the same image; a fifth of
            // BigGAN-deep-128's multiply-adds were the other ch − 3).
            conv_to_rgb: {
                let vb = g.pp("conv_to_rgb");
                conv_net(
                    spectral(&vb, &[ch, ch, 3, 3])?
                        .narrow(0, 0, 3)?
                        .contiguous()?,
                    Some(vb.get(ch, "bias")?.narrow(0, 0, 3)?.contiguous()?),
                )
            },
        })
    }

    /// Replaces every batch norm's statistics with those of the
    /// activations for latents `z` and class vectors `condition`: BigGAN's
    /// "standing statistics". The pretrained port stores them per
    /// truncation already; this is for random weights (tests, benchmarks),
    /// whose activations the stored 0 and 1 would not normalise, and for
    /// statistics at a truncation of one's own.
    pub fn calibrate(&mut self, z: &Tensor, condition: &Tensor) -> candle_core::Result<()> {
        let eps = self.cfg.eps;
        let cond = self.condition_vector(z, condition)?;
        let mut h = self.start(&cond)?;
        for layer in &mut self.layers {
            h = match layer {
                Layer::Block(block) => block.calibrate(&h, &cond, eps)?,
                Layer::Attention(a) => a.forward(&h)?,
            };
        }
        self.bn.calibrate(&h, &cond, eps)?;
        Ok(())
    }

    /// [z, c · Eᵀ].
    fn condition_vector(&self, z: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
        let embed = c.to_dtype(z.dtype())?.matmul(&self.embeddings.t()?)?;
        Tensor::cat(&[z, &embed], 1)
    }

    /// The 4×4 start, laid out channels-last by the port (from TF).
    fn start(&self, cond: &Tensor) -> candle_core::Result<Tensor> {
        let b = cond.dim(0)?;
        let ch = self.cfg.channel_width;
        self.gen_z
            .forward(cond)?
            .reshape((b, 4, 4, 16 * ch))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// [`Generator::decode`] outside candle's graph, every op's backward
    /// kept in a [`Tape`] that runs the backward from the image to z
    /// itself: candle's autograd, between ops, makes a zero tensor per edge
    /// of the graph and adds the edge's gradient to it (two passes over
    /// each activation, ~100 edges a BigGAN-deep step), and each op's
    /// output was copied once more to hand it to the graph. `None` where an
    /// op has no such backward (`GEVALDI_ENGINE=candle`, weights that are
    /// variables): [`Generator::decode`] then builds candle's graph.
    fn decode_taped(&self, z: &Tensor, c: &Tensor) -> candle_core::Result<Option<(Tensor, Tape)>> {
        use crate::engine::{scale_shift_relu_taped, skip_add_taped, upsample2_taped};
        let z = z.detach();
        let cond = self.condition_vector(&z, c)?;
        let b = z.dim(0)?;
        let ch = self.cfg.channel_width;
        let Some((h0, start)) = self.gen_z.forward_taped(&cond)? else {
            return Ok(None);
        };
        let mut h = h0
            .reshape((b, 4, 4, 16 * ch))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            match layer {
                Layer::Block(block) => {
                    let x = h.clone();
                    let mut stages = Vec::with_capacity(4);
                    for (j, (bn, conv)) in block.bn.iter().zip(&block.conv).enumerate() {
                        let Some(gains) = &bn.gains else {
                            candle_core::bail!("BigGAN: a block's norm without gains")
                        };
                        let Some((ab, gain)) = gains.forward_taped(&cond)? else {
                            return Ok(None);
                        };
                        let (y, norm) = scale_shift_relu_taped(&h, &ab)?;
                        h = y;
                        let up = if upsamples(j, block.up) {
                            let (y, up) = upsample2_taped(&h)?;
                            h = y;
                            Some(up)
                        } else {
                            None
                        };
                        let Some((y, conv)) = conv.forward_taped(&h)? else {
                            return Ok(None);
                        };
                        h = y;
                        stages.push(Stage {
                            gain,
                            norm,
                            up,
                            conv,
                        });
                    }
                    let (y, join) = skip_add_taped(&h, &x, block.up)?;
                    h = y;
                    layers.push(LayerTape::Block { stages, join });
                }
                Layer::Attention(a) => {
                    let Some((y, tape)) = a.forward_taped(&h)? else {
                        return Ok(None);
                    };
                    h = y;
                    layers.push(LayerTape::Attention(tape));
                }
            }
        }
        let ab = self.bn.constant_gains(&h)?;
        let (y, norm) = scale_shift_relu_taped(&h, &ab)?;
        let Some((y, to_rgb)) = self.conv_to_rgb.forward_taped(&y)? else {
            return Ok(None);
        };
        let image = y.tanh()?;
        let tape = Tape {
            z_dim: z.dim(1)?,
            start,
            start_dims: (b, 4, 4, 16 * ch),
            layers,
            norm,
            to_rgb,
            image: image.clone(),
        };
        Ok(Some((image, tape)))
    }

    /// The truncation.
    pub fn truncation(&self) -> f64 {
        self.truncation
    }

    /// The config.
    pub fn config(&self) -> &BigGanConfig {
        &self.cfg
    }
}

/// What [`BigGan::decode_taped`] kept for the backward, in the forward's
/// order.
struct Tape {
    z_dim: usize,
    /// `gen_z`'s backward, and its output's shape before the permute.
    start: Pullback,
    start_dims: (usize, usize, usize, usize),
    layers: Vec<LayerTape>,
    /// The last norm's and `conv_to_rgb`'s backwards.
    norm: Pullback,
    to_rgb: Pullback,
    /// The image, tanh's output.
    image: Tensor,
}

/// One layer's backwards.
enum LayerTape {
    /// A block's stages and its residual join.
    Block { stages: Vec<Stage>, join: Pullback },
    /// The self-attention layer's backwards.
    Attention(AttentionTape),
}

/// A block's stage: the norm's gains, the norm and ReLU, the upsampling
/// (the first 3×3 conv of an upsampling block), the conv.
struct Stage {
    gain: Pullback,
    norm: Pullback,
    up: Option<Pullback>,
    conv: Pullback,
}

impl Tape {
    /// z's gradient from the image's, `g`: each op's backward in reverse,
    /// the condition's gradients (every norm's gains, `gen_z`) summed as
    /// they come.
    fn backward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let first = |grads: Vec<Tensor>| -> candle_core::Result<Tensor> {
            grads
                .into_iter()
                .next()
                .ok_or_else(|| candle_core::Error::Msg("BigGAN: an op gave no gradient".into()))
        };
        let mut dcond: Option<Tensor> = None;
        let mut add = |t: Tensor| -> candle_core::Result<()> {
            dcond = Some(match dcond.take() {
                None => t,
                Some(acc) => (acc + t)?,
            });
            Ok(())
        };
        // tanh' = 1 − tanh².
        let mut g = (g.detach() * self.image.sqr()?.affine(-1.0, 1.0)?)?;
        g = first((self.to_rgb)(&g)?)?;
        g = first((self.norm)(&g)?)?;
        for layer in self.layers.iter().rev() {
            g = match layer {
                LayerTape::Block { stages, join } => {
                    let [dh, dx] = <[Tensor; 2]>::try_from((join)(&g)?).map_err(|_| {
                        candle_core::Error::Msg("BigGAN: the join gave no gradients".into())
                    })?;
                    let mut dh = dh;
                    for stage in stages.iter().rev() {
                        dh = first((stage.conv)(&dh)?)?;
                        if let Some(up) = &stage.up {
                            dh = first(up(&dh)?)?;
                        }
                        let [dx, dab] =
                            <[Tensor; 2]>::try_from((stage.norm)(&dh)?).map_err(|_| {
                                candle_core::Error::Msg("BigGAN: a norm gave no gradients".into())
                            })?;
                        add(first((stage.gain)(&dab)?)?)?;
                        dh = dx;
                    }
                    (dh + dx)?
                }
                LayerTape::Attention(tape) => tape.backward(&g)?,
            };
        }
        let (b, hh, ww, c) = self.start_dims;
        let g = g
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b, hh * ww * c))?;
        add(first((self.start)(&g)?)?)?;
        let Some(dcond) = dcond else {
            candle_core::bail!("BigGAN: no gradient reached the condition")
        };
        dcond.narrow(1, 0, self.z_dim)?.contiguous()
    }
}

/// P(−2 ≤ u ≤ 2) for a standard normal u: the truncated prior's mass.
const MASS_WITHIN_2: f64 = 0.954_499_736_103_641_6;

impl Generator for BigGan {
    fn latent_dim(&self) -> usize {
        self.cfg.z_dim
    }

    fn num_conditions(&self) -> Option<usize> {
        Some(self.cfg.num_classes)
    }

    fn output_range(&self) -> (f32, f32) {
        (-1.0, 1.0)
    }

    /// `[B, 3, R, R]` in [−1, 1] from z `[B, 128]` and the class vector
    /// `[B, classes]` (one-hot or a soft mixture).
    fn decode(&self, z: &Tensor, condition: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let Some(c) = condition else {
            candle_core::bail!(
                "BigGAN is class-conditional: give a class vector [B, {}]",
                self.cfg.num_classes
            )
        };
        let engine = crate::engine::Engine::current();
        let dev = z.device();
        if crate::engine::tracked(z)
            && !crate::engine::tracked(c)
            && z.dtype() == DType::F32
            && engine != crate::engine::Engine::Candle
            && (dev.is_cpu() || dev.is_cuda())
        {
            // Its ops run outside the search's recording: BigGAN is
            // recorded as one op, whose backward is its tape's.
            if let Some((image, tape)) = crate::engine::paused(|| self.decode_taped(z, c))? {
                #[cfg(test)]
                tests::TAPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tape = std::sync::Arc::new(tape);
                return crate::engine::attach(
                    &[z],
                    image,
                    Box::new(move |g| Ok(vec![tape.backward(g)?])),
                );
            }
        }
        let cond = self.condition_vector(z, c)?;
        let mut h = self.start(&cond)?;
        for layer in &self.layers {
            h = match layer {
                Layer::Block(block) => block.forward(&h, &cond)?,
                Layer::Attention(a) => a.forward(&h)?,
            };
        }
        let h = self.bn.forward_relu(&h, &cond)?;
        self.conv_to_rgb.forward(&h)?.tanh()
    }

    /// The truncated prior's log-density on its box, without the box: z =
    /// t·u with u standard normal truncated to [−2, 2] (as the port's
    /// `truncated_noise_sample`), so log p(z) = Σ_i [log N(z_i / t; 0, 1) −
    /// log t − log P(|u| ≤ 2)] for |z_i| ≤ 2t. Outside the box the density
    /// is 0; this returns the same Gaussian expression there (finite, and
    /// still pulling z towards 0) rather than −∞, so the search is free to
    /// leave the box: where it matters, keep λ > 0. The box is
    /// [`Generator::latent_support`], and each search's record counts the
    /// coordinates that ended outside it.
    fn log_prior(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let d = z.dim(1)? as f64;
        let t = self.truncation;
        let constant = -d * (0.5 * (2.0 * std::f64::consts::PI).ln() + t.ln() + MASS_WITHIN_2.ln());
        crate::model::centred_normal_log_density(z, t * t, constant)
    }

    fn taped(&self) -> bool {
        true
    }

    /// The truncation box |z_i| ≤ 2t, where [`Generator::sample_prior`]
    /// draws z and `log_prior` does not keep it.
    fn latent_support(&self) -> Option<LatentSupport> {
        Some(LatentSupport::TruncatedNormal {
            truncation: self.truncation,
            cut: 2.0,
        })
    }

    /// z = t·u, u drawn from the standard normal truncated to [−2, 2]
    /// (by rejection).
    fn sample_prior(
        &self,
        n: usize,
        rng: &mut dyn RngCore,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.truncation as f32;
        let values: Vec<f32> = (0..n * self.cfg.z_dim)
            .map(|_| loop {
                let u: f32 = StandardNormal.sample(rng);
                if u.abs() <= 2.0 {
                    break t * u;
                }
            })
            .collect();
        Tensor::from_vec(values, (n, self.cfg.z_dim), device)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;

    /// Decodes that took [`BigGan::decode_taped`]'s path.
    pub(super) static TAPED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    /// A tracked z under the engine (the default, `auto`, here) takes
    /// BigGAN's own backward, whose z-gradient is candle's graph's (the
    /// same decode with every op on the graph, through `Block::forward`),
    /// and an untracked z gives the same image without it.
    #[test]
    fn a_tracked_z_takes_bigans_own_backward() {
        use std::sync::atomic::Ordering;
        let dev = Device::Cpu;
        let cfg = BigGanConfig::reduced(128, 4, 10).unwrap();
        let dict = cfg.random_state_dict(2, &dev).unwrap();
        let mut g =
            BigGan::load(VarBuilder::from_tensors(dict, DType::F32, &dev), &cfg, 0.5).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Random weights: statistics of their own activations.
        let calibration = g.sample_prior(8, &mut rng, &dev).unwrap();
        let classes: Vec<usize> = (0..8).map(|i| i % 10).collect();
        g.calibrate(
            &calibration,
            &crate::model::one_hot(&classes, 10, &dev).unwrap(),
        )
        .unwrap();
        let z = Var::from_tensor(&g.sample_prior(2, &mut rng, &dev).unwrap()).unwrap();
        let c = crate::model::one_hot(&[3, 7], 10, &dev).unwrap();
        let before = TAPED.load(Ordering::Relaxed);
        let image = g.decode(z.as_tensor(), Some(&c)).unwrap();
        assert!(
            TAPED.load(Ordering::Relaxed) > before,
            "the graph's path was taken"
        );
        let plain = g.decode(&z.as_tensor().detach(), Some(&c)).unwrap();
        assert_eq!(crate::test_support::max_abs_diff(&image, &plain), 0.0);
        // The graph's path, by hand: every layer tracked.
        let cond = g.condition_vector(z.as_tensor(), &c).unwrap();
        let mut h = g.start(&cond).unwrap();
        for layer in &g.layers {
            h = match layer {
                Layer::Block(block) => block.forward(&h, &cond).unwrap(),
                Layer::Attention(a) => a.forward(&h).unwrap(),
            };
        }
        let h = g.bn.forward_relu(&h, &cond).unwrap();
        let graph = g.conv_to_rgb.forward(&h).unwrap().tanh().unwrap();
        let w = randn(&[2, 3, 128, 128], 9, 1.0, 0.0);
        let dz = |x: &Tensor| {
            let grads = (x * &w).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(z.as_tensor()).unwrap().clone()
        };
        let (own, reference) = (dz(&image), dz(&graph));
        let e = crate::test_support::max_rel_diff(&own, &reference);
        assert!(e < 1e-5, "z-gradient relative error {e}");
    }

    /// BigGAN states its truncation box |z_i| ≤ 2t as its support (through
    /// a reference and a trait object too), and every latent its prior
    /// draws lies inside, up to the box's edge.
    #[test]
    fn biggans_support_is_its_truncation_box_and_holds_its_prior() {
        let dev = Device::Cpu;
        let cfg = BigGanConfig::reduced(128, 4, 10).unwrap();
        let dict = cfg.random_state_dict(2, &dev).unwrap();
        let g = BigGan::load(VarBuilder::from_tensors(dict, DType::F32, &dev), &cfg, 0.4).unwrap();
        let support = g.latent_support().expect("BigGAN states its support");
        assert_eq!(
            support,
            LatentSupport::TruncatedNormal {
                truncation: 0.4,
                cut: 2.0
            }
        );
        assert_eq!(support.half_width(), 2.0 * 0.4f32);
        assert_eq!(<&BigGan as Generator>::latent_support(&&g), Some(support));
        assert_eq!((&g as &dyn Generator).latent_support(), Some(support));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let z: Vec<f32> = g
            .sample_prior(256, &mut rng, &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(support.count_outside(&z), 0);
        let widest = z.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(widest > 0.95 * support.half_width(), "{widest}");
    }

    fn randn(shape: &[usize], seed: u64, scale: f32, shift: f32) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let x: f32 = StandardNormal.sample(&mut rng);
                x * scale + shift
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A conditional norm's gains, worked out once into one linear map of
    /// the condition, give the port's `relu((x − mean) · inv_std · (1 +
    /// c·Sᵀ) + c·Oᵀ)` on every engine, before and after calibration (which
    /// remakes them), and the condition's gradient of candle's ops.
    #[test]
    fn conditional_gains_are_the_ports_norm_on_every_engine() {
        let (b, c, d) = (3, 5, 7);
        let x = randn(&[b, c, 4, 4], 1, 2.0, 0.5);
        let cond = Var::from_tensor(&randn(&[b, d], 2, 1.0, 0.0)).unwrap();
        let mut bn = BatchNorm {
            mean: randn(&[1, c], 3, 1.0, 0.3),
            inv_std: randn(&[1, c], 4, 0.3, 1.0).abs().unwrap(),
            scale: randn(&[c, d], 5, 0.5, 0.0),
            offset: randn(&[c, d], 6, 0.5, 0.0),
            gains: None,
        };
        bn.gains = Some(bn.gains().unwrap());
        let port = |bn: &BatchNorm, x: &Tensor| -> (Tensor, Tensor) {
            let r = |t: &Tensor| t.reshape((b, c, 1, 1)).unwrap();
            let w = (cond.as_tensor().matmul(&bn.scale.t().unwrap()).unwrap() + 1.0).unwrap();
            let o = cond.as_tensor().matmul(&bn.offset.t().unwrap()).unwrap();
            let y = x
                .broadcast_sub(&bn.mean.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .broadcast_mul(&bn.inv_std.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .broadcast_mul(&r(&w))
                .unwrap()
                .broadcast_add(&r(&o))
                .unwrap()
                .relu()
                .unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            (y, g.get(cond.as_tensor()).unwrap().clone())
        };
        let check = |bn: &BatchNorm, x: &Tensor| {
            let (want, want_g) = port(bn, x);
            let gains = bn.gains.as_ref().unwrap();
            // The norm as it runs (the engine in force: `auto` here), and
            // its gains on each path of the nets, applied by candle's ops.
            let on = |path: &str, n: &Net| {
                let c = cond.as_tensor();
                match path {
                    "auto" => n.forward(c),
                    "generic" => n.forward_generic(c),
                    _ => n.forward_candle(c),
                }
                .unwrap()
            };
            let mut ys = vec![(
                "forward_relu",
                bn.forward_relu(x, cond.as_tensor()).unwrap(),
            )];
            for name in ["auto", "generic", "candle"] {
                let ab = on(name, gains);
                let (a, sh) = (ab.narrow(1, 0, c).unwrap(), ab.narrow(1, c, c).unwrap());
                let y = x
                    .broadcast_mul(&a.reshape((b, c, 1, 1)).unwrap())
                    .unwrap()
                    .broadcast_add(&sh.reshape((b, c, 1, 1)).unwrap())
                    .unwrap()
                    .relu()
                    .unwrap();
                ys.push((name, y));
            }
            let err = crate::test_support::max_rel_diff;
            for (name, y) in ys {
                let g = y.sum_all().unwrap().backward().unwrap();
                let g = g.get(cond.as_tensor()).unwrap();
                let (ey, eg) = (err(&y, &want), err(g, &want_g));
                assert!(ey < 1e-5 && eg < 1e-5, "{name}: output {ey}, gradient {eg}");
            }
        };
        check(&bn, &x);
        bn.calibrate(&x, cond.as_tensor(), 1e-4).unwrap();
        check(&bn, &randn(&[b, c, 4, 4], 7, 2.0, 0.5));
    }

    #[test]
    fn the_128_layout_is_the_ports_default_and_has_506_tensors() {
        let cfg = BigGanConfig::deep(128).unwrap();
        assert_eq!(
            cfg.layers,
            vec![
                (false, 16, 16),
                (true, 16, 16),
                (false, 16, 16),
                (true, 16, 8),
                (false, 8, 8),
                (true, 8, 4),
                (false, 4, 4),
                (true, 4, 2),
                (false, 2, 2),
                (true, 2, 1)
            ]
        );
        assert_eq!(cfg.resolution(), 128);
        assert_eq!(BigGanConfig::deep(256).unwrap().resolution(), 256);
        assert_eq!(BigGanConfig::deep(512).unwrap().resolution(), 512);
        assert!(BigGanConfig::deep(64).is_none());
        let shapes: HashMap<String, Vec<usize>> = cfg.tensor_shapes().into_iter().collect();
        assert_eq!(shapes.len(), 506);
        // A few entries checked by hand against the port's modules.
        assert_eq!(shapes["embeddings.weight"], [128, 1000]);
        assert_eq!(shapes["generator.gen_z.weight_orig"], [32768, 256]);
        assert_eq!(shapes["generator.layers.0.bn_0.running_means"], [51, 2048]);
        assert_eq!(
            shapes["generator.layers.0.conv_1.weight_orig"],
            [512, 512, 3, 3]
        );
        assert_eq!(
            shapes["generator.layers.8.snconv1x1_theta.weight_orig"],
            [32, 256, 1, 1]
        );
        assert_eq!(shapes["generator.layers.8.gamma"], [1]);
        assert_eq!(
            shapes["generator.layers.10.conv_3.weight_orig"],
            [128, 64, 1, 1]
        );
        assert_eq!(
            shapes["generator.conv_to_rgb.weight_orig"],
            [128, 128, 3, 3]
        );
        assert!(!shapes.contains_key("generator.layers.11.conv_0.bias"));
    }

    #[test]
    fn statistics_interpolate_as_the_port_does() {
        let dev = Device::Cpu;
        let means = Tensor::arange(0f32, 51.0, &dev)
            .unwrap()
            .reshape((51, 1))
            .unwrap();
        let vb = VarBuilder::from_tensors(
            HashMap::from([
                ("running_means".to_string(), means.clone()),
                ("running_vars".to_string(), means),
            ]),
            DType::F32,
            &dev,
        );
        let at = |t| stats_at(&vb, 51, 1, t).unwrap().0.to_vec1::<f32>().unwrap()[0];
        assert_eq!(at(1.0), 50.0);
        assert_eq!(at(0.4), 20.0);
        // t / step = 20.5: m[20]·0.5 + m[21]·0.5.
        assert!((at(0.41) - 20.5).abs() < 1e-4);
        // t / step = 20.65: the port weighs the lower row by the fraction,
        // m[20]·0.65 + m[21]·0.35 = 20.35 (not 20.65); 0.5 above cannot
        // tell the two apart. (Checked against pytorch-pretrained-biggan
        // itself on BigGAN-deep-128 with statistics that differ per row:
        // KL within 4e-6 at truncation 0.413, the other weighting 1e-1 off.)
        assert!((at(0.413) - 20.35).abs() < 1e-4, "{}", at(0.413));
    }
}
