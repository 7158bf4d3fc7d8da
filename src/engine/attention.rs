//! The core of a self-attention layer (SAGAN's, BigGAN's at 64×64):
//! `out = g · softmax(θᵀ · φ)ᵀ`, as one op with a backward written in
//! candle's ops, on any device, and on the CPU engine's kernel
//! (`kernels::attention`, the one `NetBuilder::attention` runs, reading θ,
//! φ and g channels first as they lie) for f32 on the CPU under `auto`.
//!
//! On candle's ops and autograd the same map keeps every intermediate
//! until the backward ends: the logits, `softmax`'s four `[N, M]` steps
//! (candle 0.11's fused `softmax_last_dim` has no backward) and a
//! transposed copy, each `N · M` values per sample (4M at BigGAN's 64×64),
//! and its backward allocates as many again for the whole batch at once.
//! This op keeps nothing but its three small inputs: its backward
//! recomputes the attention map `p` (`N · M · K` multiply-adds, a
//! hundredth of a BigGAN-deep step), and both passes run a few samples at
//! a time, so that at most [`CHUNK`] values of each `[N, M]` temporary
//! exist at once. The backward:
//!
//! ```text
//! dg = dout · p        dp = doutᵀ · g        dl = p ⊙ (dp − rowsum(dp ⊙ p))
//! dθ = (dl · φᵀ)ᵀ      dφ = θ · dl
//! ```

use candle_core::{CustomOp3, Tensor, D};

use super::cpu_op::{cpu_kernels_apply, on_f32s};
use super::generic::{handed_forwards, Handed};
use super::kernels::{self, attention::Order, attention::Sizes};
use super::profile;
use super::Engine;

/// The kernel's sizes of θ `[B, K, N]`, φ `[B, K, M]` and g `[B, C, M]`.
fn sizes(theta: &Tensor, phi: &Tensor, g: &Tensor) -> candle_core::Result<Sizes> {
    let (b, k, n) = theta.dims3()?;
    Ok(Sizes {
        b,
        n,
        m: phi.dim(2)?,
        k,
        c: g.dim(1)?,
        order: Order::ChannelsFirst,
    })
}

/// `g · softmax(θᵀ · φ)ᵀ` for `θ` `[B, K, N]`, `φ` `[B, K, M]` and `g`
/// `[B, C, M]`: `[B, C, N]`, each of the N positions a mix of g's M
/// columns (softmax over M). On candle's ops under `GEVALDI_ENGINE=candle`
/// or on a device the op has no forward for (Metal), else as one op (see
/// the module docs).
pub(crate) fn attention(theta: &Tensor, phi: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    let (b, k, _) = theta.dims3()?;
    let m = phi.dim(2)?;
    let c = g.dim(1)?;
    if phi.dims() != [b, k, m] || g.dims() != [b, c, m] {
        candle_core::bail!(
            "attention: θ {:?} takes φ [{b}, {k}, M] and g [{b}, C, M], got {:?} and {:?}",
            theta.dims(),
            phi.dims(),
            g.dims()
        );
    }
    let dev = theta.device();
    profile::time(
        dev,
        "forward",
        || "attention (BigGAN)".into(),
        || attention_on(dev, theta, phi, g),
    )
}

fn attention_on(
    dev: &candle_core::Device,
    theta: &Tensor,
    phi: &Tensor,
    g: &Tensor,
) -> candle_core::Result<Tensor> {
    if Engine::current() == Engine::Candle || !(dev.is_cpu() || dev.is_cuda()) {
        return reference(theta, phi, g);
    }
    let (theta, phi, g) = (theta.contiguous()?, phi.contiguous()?, g.contiguous()?);
    let out = if cpu_kernels_apply(&[&theta, &phi, &g]) {
        kernel_forward(&theta, &phi, &g)?
    } else {
        chunked_forward(&theta.detach(), &phi.detach(), &g.detach())?
    };
    if ![&theta, &phi, &g].iter().any(|t| super::tracked(t)) {
        return Ok(out);
    }
    theta.apply_op3(
        &phi,
        &g,
        Attention {
            out: Handed::new(out)?,
        },
    )
}

/// [`attention`] on untracked inputs (the device-generic path or the CPU,
/// never candle's ops), with the backward that gives the gradients of θ,
/// φ and g from the output's: for a model's own backward (BigGAN's), so
/// that no candle graph, and no candle gradient store, holds the layer's
/// values. The backward keeps only the three inputs.
pub(crate) fn attention_taped(
    theta: &Tensor,
    phi: &Tensor,
    g: &Tensor,
) -> candle_core::Result<(Tensor, super::Pullback)> {
    let (theta, phi, g) = (
        theta.detach().contiguous()?,
        phi.detach().contiguous()?,
        g.detach().contiguous()?,
    );
    let out = attention(&theta, &phi, &g)?;
    let back: super::Pullback = Box::new(move |dout| {
        let dout = dout.detach().contiguous()?;
        let kind = || "attention (BigGAN)".to_string();
        profile::time(theta.device(), "backward", kind, || {
            grads(&theta, &phi, &g, &dout)
        })
    });
    Ok((out, back))
}

/// Values of an `[N, M]` temporary that one chunk of samples may hold:
/// 16M (64 MiB; BigGAN-deep-128's map is 4M values a sample, so 4 samples
/// a chunk: a chunk's ops are a dozen launches on a GPU, and at 1 sample a
/// chunk they were a tenth of the paper's step's tensors at batch 8). In
/// unit tests a few dozen, so that their small maps are chunked too.
const CHUNK: usize = if cfg!(test) { 32 } else { 1 << 24 };

/// `f` on the inputs `xs` (each `[B, …]`) a few samples at a time (at
/// most [`CHUNK`] values of an `[N, M]` map per chunk, one sample at
/// least), each of its outputs concatenated along the batch.
fn chunked(
    xs: &[&Tensor],
    f: impl Fn(&[&Tensor]) -> candle_core::Result<Vec<Tensor>>,
) -> candle_core::Result<Vec<Tensor>> {
    let (b, _, n) = xs[0].dims3()?;
    let m = xs[1].dim(2)?;
    let per = (CHUNK / (n * m).max(1)).clamp(1, b.max(1));
    if per >= b {
        return f(xs);
    }
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    for start in (0..b).step_by(per) {
        let len = per.min(b - start);
        let chunk: Vec<Tensor> = xs
            .iter()
            .map(|x| x.narrow(0, start, len))
            .collect::<candle_core::Result<_>>()?;
        let chunk: Vec<&Tensor> = chunk.iter().collect();
        for (i, y) in f(&chunk)?.into_iter().enumerate() {
            if parts.len() <= i {
                parts.push(Vec::new());
            }
            parts[i].push(y);
        }
    }
    parts.iter().map(|p| Tensor::cat(p, 0)).collect()
}

/// The attention map `softmax(θᵀ · φ)` `[B, N, M]`.
fn map(theta: &Tensor, phi: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&theta.transpose(1, 2)?.contiguous()?.matmul(phi)?)
}

/// candle's ops (`softmax`, whose backward candle has, rather than the
/// fused `softmax_last_dim`, whose backward it lacks).
pub(crate) fn reference(theta: &Tensor, phi: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    let p = candle_nn::ops::softmax(
        &theta.transpose(1, 2)?.contiguous()?.matmul(phi)?,
        D::Minus1,
    )?;
    g.matmul(&p.transpose(1, 2)?.contiguous()?)
}

/// The op: the output computed beforehand.
struct Attention {
    out: Handed,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "gevaldi-attention"
    }

    handed_forwards!(3);

    fn bwd(
        &self,
        theta: &Tensor,
        phi: &Tensor,
        g: &Tensor,
        _: &Tensor,
        dout: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Untracked: a gradient computed from the tracked inputs would
        // carry a graph holding every temporary below until it is used.
        let (theta, phi, g) = (theta.detach(), phi.detach(), g.detach());
        let dout = dout.contiguous()?;
        let kind = || "attention (BigGAN)".to_string();
        let d = profile::time(theta.device(), "backward", kind, || {
            grads(&theta, &phi, &g, &dout)
        })?;
        let mut d = d.into_iter();
        let mut next = || d.next();
        Ok((next(), next(), next()))
    }
}

/// The gradients of θ, φ and g, `dout` the output's.
pub(crate) fn grads(
    theta: &Tensor,
    phi: &Tensor,
    g: &Tensor,
    dout: &Tensor,
) -> candle_core::Result<Vec<Tensor>> {
    if cpu_kernels_apply(&[theta, phi, g, dout]) {
        kernel_grads(theta, phi, g, dout)
    } else {
        chunked_grads(theta, phi, g, dout)
    }
}

/// The forward on the CPU kernel (f32 values on the CPU, contiguous).
fn kernel_forward(theta: &Tensor, phi: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    let s = sizes(theta, phi, g)?;
    let out = on_f32s(&[theta, phi, g], "attention", |x| {
        kernels::attention::forward(x[0], x[1], x[2], s, 1.0)
    })?;
    Tensor::from_vec(out, (s.b, s.c, s.n), theta.device())
}

/// The forward on candle's ops, a few samples at a time.
fn chunked_forward(theta: &Tensor, phi: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    Ok(chunked(&[theta, phi, g], |x| {
        let p = map(x[0], x[1])?;
        Ok(vec![x[2].matmul(&p.transpose(1, 2)?.contiguous()?)?])
    })?
    .remove(0))
}

/// [`grads`] on the CPU kernel (f32 values on the CPU).
fn kernel_grads(
    theta: &Tensor,
    phi: &Tensor,
    g: &Tensor,
    dout: &Tensor,
) -> candle_core::Result<Vec<Tensor>> {
    let (theta, phi) = (theta.contiguous()?, phi.contiguous()?);
    let (g, dout) = (g.contiguous()?, dout.contiguous()?);
    let s = sizes(&theta, &phi, &g)?;
    let [dq, dk, dv] = on_f32s(&[&dout, &theta, &phi, &g], "attention", |x| {
        kernels::attention::backward(x[0], x[1], x[2], x[3], s, 1.0)
    })?;
    let dev = theta.device();
    Ok(vec![
        Tensor::from_vec(dq, theta.dims(), dev)?,
        Tensor::from_vec(dk, phi.dims(), dev)?,
        Tensor::from_vec(dv, g.dims(), dev)?,
    ])
}

/// [`grads`] on candle's ops, a few samples at a time.
fn chunked_grads(
    theta: &Tensor,
    phi: &Tensor,
    g: &Tensor,
    dout: &Tensor,
) -> candle_core::Result<Vec<Tensor>> {
    chunked(&[theta, phi, g, dout], |x| {
        let (theta, phi, g, dout) = (x[0], x[1], x[2], x[3]);
        let p = map(theta, phi)?;
        let dg = dout.matmul(&p)?;
        let dp = dout.transpose(1, 2)?.contiguous()?.matmul(g)?;
        let rows = (&dp * &p)?.sum_keepdim(D::Minus1)?;
        let dl = (p * dp.broadcast_sub(&rows)?)?;
        let dtheta = dl
            .matmul(&phi.transpose(1, 2)?.contiguous()?)?
            .transpose(1, 2)?
            .contiguous()?;
        let dphi = theta.matmul(&dl)?;
        Ok(vec![dtheta, dphi, dg])
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::super::tests::{randn, rel_err};
    use super::{
        attention, chunked_forward, chunked_grads, kernel_forward, kernel_grads, reference,
    };

    /// Output and the gradients of θ, φ and g agree with candle's ops and
    /// autograd, with M ≠ N ≠ K ≠ C (a transposition in the wrong place
    /// fails on the shapes or the values).
    #[test]
    fn agrees_with_candles_ops_forward_and_all_three_gradients() {
        let theta = Var::from_tensor(&randn(&[2, 3, 10], 1)).unwrap();
        let phi = Var::from_tensor(&randn(&[2, 3, 7], 2)).unwrap();
        let g = Var::from_tensor(&randn(&[2, 5, 7], 3)).unwrap();
        let w = randn(&[2, 5, 10], 4);
        let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>| {
            let y = f(theta.as_tensor(), phi.as_tensor(), g.as_tensor()).unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let d = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            [y, d(&theta), d(&phi), d(&g)]
        };
        let fast = run(&attention);
        // A gradient with a graph of its own would hold the backward's
        // temporaries (the maps of every chunk) until it was used.
        for d in &fast[1..] {
            assert!(!d.track_op(), "a gradient carries a graph");
        }
        let slow = run(&reference);
        for (name, (f, s)) in ["out", "dθ", "dφ", "dg"].iter().zip(fast.iter().zip(&slow)) {
            assert_eq!(f.dims(), s.dims(), "{name}");
            let e = rel_err(f, s);
            assert!(e < 1e-5, "{name}: relative error {e}");
        }
        // Untracked inputs: the same values, no op in a graph.
        let y = attention(
            &theta.as_tensor().detach(),
            &phi.as_tensor().detach(),
            &g.as_tensor().detach(),
        )
        .unwrap();
        assert!(rel_err(&y, &slow[0]) < 1e-5);
        assert!(!y.track_op());
    }

    /// The CPU kernel (θ, φ and g read channels first, in place) and the
    /// chunked ops on candle agree, forward and all three gradients, over
    /// several chunks, with logits large enough that most of each row's
    /// softmax is below f32's resolution.
    #[test]
    fn the_cpu_kernel_agrees_with_the_chunked_ops() {
        let theta = (randn(&[3, 4, 20], 5) * 3.0).unwrap();
        let phi = (randn(&[3, 4, 9], 6) * 3.0).unwrap();
        let g = randn(&[3, 6, 9], 7);
        let dout = randn(&[3, 6, 20], 8);
        let fast = kernel_forward(&theta, &phi, &g).unwrap();
        let slow = chunked_forward(&theta, &phi, &g).unwrap();
        assert_eq!(fast.dims(), slow.dims());
        let e = rel_err(&fast, &slow);
        assert!(e < 1e-5, "out: relative error {e}");
        let fast = kernel_grads(&theta, &phi, &g, &dout).unwrap();
        let slow = chunked_grads(&theta, &phi, &g, &dout).unwrap();
        for (name, (f, s)) in ["dθ", "dφ", "dg"].iter().zip(fast.iter().zip(&slow)) {
            assert_eq!(f.dims(), s.dims(), "{name}");
            let e = rel_err(f, s);
            assert!(e < 1e-5, "{name}: relative error {e}");
        }
    }

    #[test]
    fn a_nan_reaches_the_output_and_the_gradients() {
        let mut t = randn(&[1, 2, 4], 1)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        t[3] = f32::NAN;
        let theta =
            Var::from_tensor(&Tensor::from_vec(t, (1, 2, 4), &Device::Cpu).unwrap()).unwrap();
        let phi = randn(&[1, 2, 3], 2);
        let g = randn(&[1, 2, 3], 3);
        let y = attention(theta.as_tensor(), &phi, &g).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let has_nan = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .any(|v| v.is_nan())
        };
        assert!(has_nan(&y));
        assert!(has_nan(grads.get(theta.as_tensor()).unwrap()));
    }

    #[test]
    fn refuses_inputs_of_mismatched_shapes() {
        let e = attention(
            &randn(&[1, 2, 4], 1),
            &randn(&[1, 3, 5], 2),
            &randn(&[1, 2, 5], 3),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[1, 2, 4]"), "{e}");
    }
}
