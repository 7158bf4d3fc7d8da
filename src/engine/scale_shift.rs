//! `relu(x · a + b)` with a scale and a shift per sample and channel: a
//! batch norm whose gains come from the input (BigGAN's conditional batch
//! norms) and the ReLU after it, as one op on the CPU engine.
//!
//! On candle's ops the same map takes four ops forward and as many
//! backward, each allocating a tensor the size of `x`; here the forward is
//! one pass and the backward one pass that yields the gradients of `x`, `a`
//! and `b` together (`a` and `b` depend on the latent, so theirs are
//! needed too). `a` and `b` come side by side in one tensor, the gains
//! `[B, 2C]` (each sample's C scales, then its C shifts), as one linear
//! map of the condition gives them. On a GPU or under
//! `GEVALDI_ENGINE=generic`, the forward runs candle's ops untracked (on
//! a CUDA device gevaldi's kernel) and one op with a backward of its own
//! stands for it in the graph, keeping the input and the gains only (the
//! backward works the output out again); under `GEVALDI_ENGINE=candle`
//! (or on Metal) candle's ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_op::{cpu_kernels_apply, f32s};
use super::generic::attach;
use super::kernels::{act, act_grad};
use super::{cuda, profile, Pullback};
use super::{Activation, Engine};

/// `relu(x · a + b)` for `x` `[B, C, H, W]` and the gains `ab` `[B, 2C]`
/// (each sample's C scales a, then its C shifts b: one linear map of the
/// condition gives both), with a backward to `x` and `ab` (see the module
/// docs).
pub fn scale_shift_relu(x: &Tensor, ab: &Tensor) -> candle_core::Result<Tensor> {
    check(x, ab)?;
    let dev = x.device();
    let engine = Engine::current();
    if cpu_kernels_apply(&[x, ab]) {
        profile::time(dev, "forward", kind, || {
            x.contiguous()?.apply_op2(&ab.contiguous()?, ScaleShiftRelu)
        })
    } else if engine != Engine::Candle && (dev.is_cpu() || dev.is_cuda()) {
        generic(x, ab, engine)
    } else {
        profile::time(dev, "forward", kind, || reference(x, ab))
    }
}

/// Refuses gains that do not fit `x`.
fn check(x: &Tensor, ab: &Tensor) -> candle_core::Result<()> {
    let (n, c, _, _) = x.dims4()?;
    if ab.dims() != [n, 2 * c] {
        candle_core::bail!(
            "scale_shift_relu: x {:?} takes scales and shifts side by side, [{n}, {}], got {:?}",
            x.dims(),
            2 * c,
            ab.dims()
        );
    }
    Ok(())
}

/// [`scale_shift_relu`] outside candle's graph, with its backward (`[dx,
/// dab]`): the engine's path (not `candle`'s), on the CPU or a CUDA
/// device.
pub(crate) fn scale_shift_relu_taped(
    x: &Tensor,
    ab: &Tensor,
) -> candle_core::Result<(Tensor, Pullback)> {
    check(x, ab)?;
    let dev = x.device();
    let engine = Engine::current();
    let (x, ab) = (x.detach(), ab.detach());
    if cpu_kernels_apply(&[&x, &ab]) {
        let (x, ab) = (x.contiguous()?, ab.contiguous()?);
        let y = profile::time(dev, "forward", kind, || {
            x.apply_op2_no_bwd(&ab, &ScaleShiftRelu)
        })?;
        // The backward reads x and ab, and works the output out again (as
        // large as x, and read by no other op's backward where a conv
        // follows: BigGAN's blocks).
        let back: Pullback = Box::new(move |g| {
            let (dx, dab) = backward(&x, &ab, g)?;
            Ok(vec![dx, dab])
        });
        return Ok((y, back));
    }
    generic_taped(&x, &ab, engine)
}

/// The device-generic path (a GPU, `GEVALDI_ENGINE=generic`) outside
/// candle's graph: the forward on untracked candle ops (on a CUDA device
/// under `auto`, gevaldi's kernels: one forward, two backward), and
/// [`generic_backward`], which keeps `x` and `ab` (not the output, nor
/// `x · a` and `x · a + b` as candle's ops do).
fn generic_taped(
    x: &Tensor,
    ab: &Tensor,
    engine: Engine,
) -> candle_core::Result<(Tensor, Pullback)> {
    let (x, ab) = (x.detach(), ab.detach());
    let own = cuda::applies(&x, engine);
    let y = profile::time(x.device(), "forward", kind, || {
        if own {
            cuda::scale_shift_relu(&x, &ab)
        } else {
            reference(&x, &ab)
        }
    })?;
    // The backward reads x and ab, and works the output out again (it is
    // as large as x; ab is two values per sample and channel).
    let back: Pullback = Box::new(move |g| {
        let (dx, dab) = generic_backward(own, &x, &ab, &g.detach())?;
        Ok(vec![dx, dab])
    });
    Ok((y, back))
}

/// The profile's row.
fn kind() -> String {
    "cond batch norm + relu (BigGAN)".into()
}

/// `ab`'s scales and shifts `[B, C, 1, 1]` each.
fn scale_and_shift(ab: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (n, c2) = ab.dims2()?;
    let c = c2 / 2;
    let part = |start| ab.narrow(1, start, c)?.reshape((n, c, 1, 1));
    Ok((part(0)?, part(c)?))
}

/// candle's ops.
fn reference(x: &Tensor, ab: &Tensor) -> candle_core::Result<Tensor> {
    let (a, b) = scale_and_shift(ab)?;
    x.broadcast_mul(&a)?.broadcast_add(&b)?.relu()
}

/// [`generic_taped`], attached to the graph of the inputs.
fn generic(x: &Tensor, ab: &Tensor, engine: Engine) -> candle_core::Result<Tensor> {
    let (out, back) = generic_taped(x, ab, engine)?;
    if ![x, ab].iter().any(|t| super::tracked(t)) {
        return Ok(out);
    }
    attach(&[x, ab], out, back)
}

/// The generic path's backward of `relu(x · a + b)` = `y`, from `grad`:
/// with m = [y > 0] (candle's ReLU: 0 at a NaN, as on its ops), dx =
/// g·m·a, da = Σ_hw g·m·x, db = Σ_hw g·m, laid out as `ab` (gevaldi's
/// CUDA kernels where `own`). y is worked out again from x and ab, as the
/// forward did.
fn generic_backward(
    own: bool,
    x: &Tensor,
    ab: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    profile::time(x.device(), "backward", kind, || {
        if own {
            return cuda::scale_shift_relu_backward(x, ab, grad);
        }
        let y = reference(x, ab)?;
        let (a, _) = scale_and_shift(ab)?;
        let gm = (grad * y.gt(0f64)?.to_dtype(grad.dtype())?)?;
        let dx = gm.broadcast_mul(&a)?;
        let da = (&gm * x)?.sum((2, 3))?;
        let db = gm.sum((2, 3))?;
        Ok((dx, Tensor::cat(&[da, db], 1)?))
    })
}

struct ScaleShiftRelu;

/// `relu(x · a + b)` of one value, as the forward computes it and the
/// backward computes it again.
fn at(x: f32, a: f32, b: f32) -> f32 {
    // A ReLU has no multiply-add to fuse: any copy's `act`.
    act::<pulp::Scalar>(Activation::Relu, x * a + b)
}

/// Plane `j`'s scale in `ab` (`c` channels; its shift is `c` further).
fn gain_at(j: usize, c: usize) -> usize {
    j + (j / c.max(1)) * c
}

impl CustomOp2 for ScaleShiftRelu {
    fn name(&self) -> &'static str {
        "gevaldi-scale-shift-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, ab) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let c = l1.dims()[1];
        let plane = (x.len() / (ab.len() / 2).max(1)).max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(j, (y, x))| {
                let k = gain_at(j, c);
                let (a, b) = (ab[k], ab[k + c]);
                for (y, x) in y.iter_mut().zip(x) {
                    *y = at(*x, a, b);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        ab: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gab) = backward(x, ab, grad)?;
        Ok((Some(gx), Some(gab)))
    }
}

/// The CPU engine's backward of [`ScaleShiftRelu`] at `x` and the gains
/// `ab`, from the output's gradient `grad`: `(dx, dab)`.
fn backward(x: &Tensor, ab: &Tensor, grad: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    let gains = ab.flatten_all()?.to_vec1::<f32>()?;
    let ab_of = |j| (gains[gain_at(j, c)], gains[gain_at(j, c) + c]);
    let ab_per_plane = (0..gains.len() / 2).map(ab_of).collect();
    let op = Backward {
        ab: ab_per_plane,
        c,
    };
    let packed = x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
    let n = x.elem_count();
    let gx = packed.narrow(0, 0, n)?.reshape(x.dims())?;
    let gab = packed.narrow(0, n, ab.elem_count())?.reshape(ab.dims())?;
    Ok((gx, gab))
}

/// The backward of [`ScaleShiftRelu`] on (x, the output's gradient), `ab`
/// the scale and shift per plane and `c` the channels: flat `[dx…,
/// dab…]`, dab laid out as the gains (each sample's C scales' gradients,
/// then its C shifts'). The output is worked out again from x, as the
/// forward did (the same bits), rather than kept.
struct Backward {
    ab: Vec<(f32, f32)>,
    c: usize,
}

impl CustomOp2 for Backward {
    fn name(&self) -> &'static str {
        "gevaldi-scale-shift-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let planes = self.ab.len();
        let plane = (x.len() / planes.max(1)).max(1);
        let mut out = vec![0f32; x.len() + 2 * planes];
        let (dx, dab) = out.split_at_mut(x.len());
        let sums: Vec<(f64, f64)> = dx
            .par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .zip(g.par_chunks(plane))
            .enumerate()
            .map(|(i, ((dx, x), g))| {
                let (a, b) = self.ab[i];
                let (mut da, mut db) = (0f64, 0f64);
                for ((dx, x), g) in dx.iter_mut().zip(x).zip(g) {
                    let y = at(*x, a, b);
                    let gm = act_grad(Activation::Relu, *g, y);
                    *dx = gm * a;
                    da += f64::from(gm * x);
                    db += f64::from(gm);
                }
                (da, db)
            })
            .collect();
        for (j, (s_a, s_b)) in sums.into_iter().enumerate() {
            let k = gain_at(j, self.c);
            dab[k] = s_a as f32;
            dab[k + self.c] = s_b as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{generic, reference, scale_shift_relu, ScaleShiftRelu};
    use crate::test_support::max_rel_diff as max_rel;

    /// The op itself, whatever `GEVALDI_ENGINE` says.
    fn op(x: &Tensor, ab: &Tensor) -> Tensor {
        x.apply_op2(ab, ScaleShiftRelu).unwrap()
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Forward and the gradients of x and the gains agree with candle's
    /// ops, on a reference written apart from the module's (a scale and a
    /// shift in the wrong place of the gains fails it).
    #[test]
    fn agrees_with_candles_ops_forward_and_all_three_gradients() {
        let x = Var::from_tensor(&randn(&[3, 5, 4, 6], 1)).unwrap();
        let ab = Var::from_tensor(&randn(&[3, 10], 2)).unwrap();
        let w = randn(&[3, 5, 4, 6], 4);
        let run = |f: &dyn Fn() -> Tensor| {
            let y = f();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (y, g(&x), g(&ab))
        };
        let by_hand = run(&|| {
            let part = |start| {
                ab.as_tensor()
                    .narrow(1, start, 5)
                    .unwrap()
                    .reshape((3, 5, 1, 1))
                    .unwrap()
            };
            let v = x.broadcast_mul(&part(0)).unwrap();
            v.broadcast_add(&part(5)).unwrap().relu().unwrap()
        });
        let slow = run(&|| reference(&x, &ab).unwrap());
        let fast = run(&|| op(&x, &ab));
        let any_device = run(&|| generic(&x, &ab, super::Engine::Auto).unwrap());
        for d in [&any_device.1, &any_device.2] {
            assert!(!d.track_op(), "a gradient carries a graph");
        }
        for (path, fast) in [("reference", slow), ("cpu", fast), ("generic", any_device)] {
            for (name, f, s) in [
                ("y", &fast.0, &by_hand.0),
                ("dx", &fast.1, &by_hand.1),
                ("dab", &fast.2, &by_hand.2),
            ] {
                let e = max_rel(f, s);
                assert!(e < 1e-5, "{path} {name}: relative error {e}");
            }
        }
        // A NaN propagates (candle 0.11's relu makes it 0).
        let nan = Tensor::full(f32::NAN, (1, 1, 1, 2), &Device::Cpu).unwrap();
        let one = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        let y = op(&nan, &one);
        assert!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
    }

    #[test]
    fn refuses_gains_of_the_wrong_shape() {
        let x = randn(&[2, 3, 2, 2], 1);
        let e = scale_shift_relu(&x, &randn(&[2, 3], 2)).unwrap_err();
        assert!(e.to_string().contains("[2, 6]"), "{e}");
    }
}
