//! A [`Net`](super::Net) compiled for the CPU kernels: weights in the
//! kernels' layouts, batch norms (per-channel affine maps) folded into the
//! convs, transposed convs and dense layers before them, and
//! activations attached to the op that produces their input (one step and
//! one value slot; convs and dense layers apply it in the pass that adds
//! their bias).

use candle_core::{DType, Tensor};

use super::kernels::conv::{ConvK, TransposeSettings};
use super::kernels::{fold_affine_cols, fold_affine_rows, fuses_into_bias_pass, transpose, Dims};
use super::net::{Activation, Node, Op};
use super::Pool2dSettings;

/// A compiled op.
#[derive(Debug)]
pub(crate) enum Kernel {
    Conv(ConvK),
    /// Weight `[out, in]` row-major; bias `[out]`.
    Dense {
        nin: usize,
        nout: usize,
        w: Vec<f32>,
        bias: Vec<f32>,
    },
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// The step's activation alone.
    Act,
    MaxPool(Pool2dSettings),
    AdaptiveAvgPool {
        oh: usize,
        ow: usize,
    },
    AvgPool(Pool2dSettings),
    Upsample(usize),
    /// A transposed conv: `conv` is the conv it transposes (weight
    /// `[Cin, Cout, kh, kw]` read as a conv's `[Cout', Cin', kh, kw]`, no
    /// bias), whose input gradient is this op's output and whose forward
    /// is this op's input gradient; `bias` `[Cout]`.
    ConvTranspose {
        conv: ConvK,
        bias: Vec<f32>,
        /// `[kh, kw]`.
        kernel: [usize; 2],
        settings: TransposeSettings,
    },
    Flatten,
    Reshape(Vec<usize>),
    /// Along PyTorch's `dim` (1: channels, 2: rows, 3: columns).
    Concat {
        dim: usize,
    },
    /// Entries `[start, start + len)` of PyTorch's `dim`.
    Narrow {
        dim: usize,
        start: usize,
        len: usize,
    },
    /// One sample's value (NHWC), repeated over the input's batch.
    Constant {
        value: Vec<f32>,
        per: Dims,
    },
    ChannelShuffle {
        groups: usize,
    },
    Add,
    Mul,
    /// Attention over pixels (queries, keys, values), logits times
    /// `scale`.
    Attention {
        scale: f32,
    },
    /// Over `c` channels; `affine`: the map `(w, b)` after the
    /// normalisation, `None` once it is folded into the layer after it
    /// (the output is x̂ itself).
    LayerNorm {
        c: usize,
        eps: f32,
        affine: Option<(Vec<f32>, Vec<f32>)>,
    },
}

impl Kernel {
    /// The kernel's name (tests).
    #[cfg(test)]
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Kernel::Conv(_) => "Conv",
            Kernel::Dense { .. } => "Dense",
            Kernel::Affine { .. } => "Affine",
            Kernel::Act => "Act",
            Kernel::MaxPool(_) => "MaxPool",
            Kernel::AdaptiveAvgPool { .. } => "AdaptiveAvgPool",
            Kernel::AvgPool(_) => "AvgPool",
            Kernel::Upsample(_) => "Upsample",
            Kernel::ConvTranspose { .. } => "ConvTranspose",
            Kernel::Flatten => "Flatten",
            Kernel::Reshape(_) => "Reshape",
            Kernel::Concat { .. } => "Concat",
            Kernel::Constant { .. } => "Constant",
            Kernel::Narrow { .. } => "Narrow",
            Kernel::ChannelShuffle { .. } => "ChannelShuffle",
            Kernel::Add => "Add",
            Kernel::Mul => "Mul",
            Kernel::Attention { .. } => "Attention",
            Kernel::LayerNorm {
                affine: Some(_), ..
            } => "LayerNorm",
            Kernel::LayerNorm { affine: None, .. } => "LayerNorm (affine folded)",
        }
    }
}

/// One op of the program: reads `inputs` (value slots), writes `out`, then
/// applies `act`.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) kernel: Kernel,
    pub(crate) inputs: Vec<usize>,
    pub(crate) act: Option<Activation>,
}

/// The compiled network: step i writes value slot i + 1; slot 0 is the
/// input.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) steps: Vec<Step>,
    /// Per slot: the last step that reads it (`usize::MAX`: none).
    pub(crate) last_use: Vec<usize>,
    /// Per slot: how many inputs of steps read it (a step reading it
    /// twice counts twice), and the caller the output.
    pub(crate) readers: Vec<usize>,
    /// The slot of the network's output.
    pub(crate) output: usize,
}

/// The values of a frozen f32 CPU tensor; `None` for a variable or a
/// tensor elsewhere.
pub(crate) fn frozen_f32(t: &Tensor) -> Option<Vec<f32>> {
    if t.is_variable() || !t.device().is_cpu() || t.dtype() != DType::F32 {
        return None;
    }
    t.flatten_all().ok()?.to_vec1::<f32>().ok()
}

/// Folds the affine map of `step`, when it is a LayerNorm with one and no
/// activation, into the layer after it through `fold` (given the scale
/// and shift; false when it cannot take them), leaving x̂ as the
/// LayerNorm's output.
fn fold_norm(step: Option<&mut Step>, fold: impl FnOnce(&[f32], &[f32]) -> bool) {
    let Some(Step {
        kernel: Kernel::LayerNorm { affine, .. },
        act: None,
        ..
    }) = step
    else {
        return;
    };
    if affine.as_ref().is_some_and(|(w, b)| fold(w, b)) {
        *affine = None;
    }
}

impl Program {
    /// `None` where a weight is a variable or not f32 on the CPU.
    pub(crate) fn compile(nodes: &[Node]) -> Option<Program> {
        let mut consumers = vec![0usize; nodes.len()];
        for n in nodes {
            for i in &n.inputs {
                consumers[i.0] += 1;
            }
        }
        // Node -> slot; fused nodes share their producer's slot.
        let mut slot = vec![0usize; nodes.len()];
        let mut steps: Vec<Step> = Vec::new();
        for (id, node) in nodes.iter().enumerate() {
            let input_slots: Vec<usize> = node.inputs.iter().map(|i| slot[i.0]).collect();
            // The producing step of the single input, when this node may
            // fuse into it (the input has no other reader).
            let fusable = match node.inputs.as_slice() {
                [i] if consumers[i.0] == 1 && slot[i.0] > 0 => Some(slot[i.0] - 1),
                _ => None,
            };
            let kernel = match &node.op {
                Op::Input => {
                    slot[id] = 0;
                    continue;
                }
                Op::Conv {
                    weight,
                    bias,
                    settings,
                } => {
                    let (cout, cin_g, kh, kw) = weight.dims4().ok()?;
                    let mut b = match bias {
                        Some(b) => frozen_f32(b)?,
                        None => vec![0.0; cout],
                    };
                    let mut w = frozen_f32(weight)?;
                    if settings.padding == [0; 2] {
                        fold_norm(fusable.map(|s| &mut steps[s]), |g, t| {
                            fold_affine_cols(&mut w, &mut b, g, t, settings.groups)
                        });
                    }
                    Kernel::Conv(ConvK::new(&w, b, [cout, cin_g, kh, kw], *settings)?)
                }
                Op::Linear { weight, bias } => {
                    let (nout, nin) = weight.dims2().ok()?;
                    let mut w = frozen_f32(weight)?;
                    let mut bias = match bias {
                        Some(b) => frozen_f32(b)?,
                        None => vec![0.0; nout],
                    };
                    // Parameters of mismatched lengths are not compiled
                    // (here and below): candle's ops then name the error.
                    if bias.len() != nout {
                        return None;
                    }
                    fold_norm(fusable.map(|s| &mut steps[s]), |g, t| {
                        fold_affine_cols(&mut w, &mut bias, g, t, 1)
                    });
                    Kernel::Dense { nin, nout, w, bias }
                }
                Op::Affine { scale, shift } => {
                    let (scale, shift) = (frozen_f32(scale)?, frozen_f32(shift)?);
                    if scale.len() != shift.len() {
                        return None;
                    }
                    if let Some(s) = fusable {
                        let no_act = steps[s].act.is_none();
                        let folded = no_act
                            && match &mut steps[s].kernel {
                                Kernel::Conv(c) => c.fold_affine(&scale, &shift),
                                Kernel::Dense { w, bias, .. } => {
                                    fold_affine_rows(w, bias, &scale, &shift)
                                }
                                // Its output channels are the input
                                // channels of the conv it transposes.
                                Kernel::ConvTranspose { conv, bias, .. } => {
                                    bias.len() == scale.len() && conv.scale_inputs(&scale) && {
                                        for ((b, s), t) in bias.iter_mut().zip(&scale).zip(&shift) {
                                            *b = *b * s + t;
                                        }
                                        true
                                    }
                                }
                                _ => false,
                            };
                        if folded {
                            slot[id] = s + 1;
                            continue;
                        }
                    }
                    Kernel::Affine { scale, shift }
                }
                Op::Act(a) => {
                    if let Some(s) = fusable {
                        let step = &mut steps[s];
                        let takes = match step.kernel {
                            // Their bias pass applies it.
                            Kernel::Conv(_)
                            | Kernel::ConvTranspose { .. }
                            | Kernel::Dense { .. } => fuses_into_bias_pass(*a),
                            // The step's activation pass after the kernel.
                            Kernel::Affine { .. } | Kernel::Add => true,
                            _ => false,
                        };
                        if takes && step.act.is_none() {
                            step.act = Some(*a);
                            slot[id] = s + 1;
                            continue;
                        }
                    }
                    steps.push(Step {
                        kernel: Kernel::Act,
                        inputs: input_slots,
                        act: Some(*a),
                    });
                    slot[id] = steps.len();
                    continue;
                }
                Op::MaxPool(settings) => Kernel::MaxPool(*settings),
                Op::AdaptiveAvgPool { oh, ow } => Kernel::AdaptiveAvgPool { oh: *oh, ow: *ow },
                Op::AvgPool(settings) => Kernel::AvgPool(*settings),
                Op::Upsample { scale } => Kernel::Upsample(*scale),
                Op::ConvTranspose {
                    weight,
                    bias,
                    settings,
                } => {
                    let (cin, cout, kh, kw) = weight.dims4().ok()?;
                    let bias = match bias {
                        Some(b) => frozen_f32(b)?,
                        None => vec![0.0; cout],
                    };
                    if bias.len() != cout {
                        return None;
                    }
                    let conv = ConvK::new(
                        &frozen_f32(weight)?,
                        vec![0.0; cin],
                        [cin, cout, kh, kw],
                        settings.conv(),
                    )?;
                    Kernel::ConvTranspose {
                        conv,
                        bias,
                        kernel: [kh, kw],
                        settings: *settings,
                    }
                }
                Op::Flatten => Kernel::Flatten,
                Op::Reshape(d) => Kernel::Reshape(d.clone()),
                Op::Concat { dim } => Kernel::Concat { dim: *dim },
                Op::Narrow { dim, start, len } => Kernel::Narrow {
                    dim: *dim,
                    start: *start,
                    len: *len,
                },
                Op::Constant(t) => {
                    let v = frozen_f32(t)?;
                    let per = match *t.dims() {
                        [1, f] => Dims::flat(1, f),
                        [1, c, h, w] => Dims {
                            b: 1,
                            h,
                            w,
                            c,
                            spatial: true,
                        },
                        _ => return None,
                    };
                    // [C, H·W] to NHWC's [H·W, C].
                    let value = if per.spatial {
                        transpose(&v, 1, per.c, per.h * per.w)
                    } else {
                        v
                    };
                    Kernel::Constant { value, per }
                }
                Op::ChannelShuffle { groups } => Kernel::ChannelShuffle { groups: *groups },
                Op::Add => Kernel::Add,
                Op::Mul => Kernel::Mul,
                Op::Attention { scale } => Kernel::Attention { scale: *scale },
                Op::LayerNorm { weight, bias, eps } => {
                    let (w, b) = (frozen_f32(weight)?, frozen_f32(bias)?);
                    if b.len() != w.len() {
                        return None;
                    }
                    Kernel::LayerNorm {
                        c: w.len(),
                        eps: *eps as f32,
                        affine: Some((w, b)),
                    }
                }
            };
            steps.push(Step {
                kernel,
                inputs: input_slots,
                act: None,
            });
            slot[id] = steps.len();
        }
        for step in &mut steps {
            // A transposed conv's backward is the conv's forward: every
            // conv keeps its forward's operand row-major.
            if let Kernel::Conv(c) | Kernel::ConvTranspose { conv: c, .. } = &mut step.kernel {
                c.prepare();
                c.prepare_forward_rhs();
            }
        }
        let mut last_use = vec![usize::MAX; steps.len() + 1];
        let mut readers = vec![0; steps.len() + 1];
        for (i, s) in steps.iter().enumerate() {
            for &x in &s.inputs {
                last_use[x] = i;
                readers[x] += 1;
            }
        }
        let output = *slot.last()?;
        // The caller reads the output (its gradient comes from there).
        readers[output] += 1;
        Some(Program {
            steps,
            last_use,
            readers,
            output,
        })
    }
}
