//! `relu(x · a + b)` with a scale and a shift per sample and channel: a
//! batch norm whose gains come from the input (BigGAN's conditional batch
//! norms) and the ReLU after it, as one op on the CPU engine.
//!
//! On candle's ops the same map takes four ops forward and as many
//! backward, each allocating a tensor the size of `x`; here the forward is
//! one pass and the backward one pass that yields the gradients of `x`, `a`
//! and `b` together (`a` and `b` depend on the latent, so theirs are
//! needed too). On a GPU or under `GEVALDI_ENGINE=generic`, the forward
//! runs candle's ops untracked and one op with a backward in candle's ops
//! stands for it in the graph (which then holds the input and the output
//! only); under `GEVALDI_ENGINE=candle` (or on Metal) candle's ops.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_op::f32s;
use super::generic::attach;
use super::kernels::{act, act_grad};
use super::{cuda, grad_of, profile, Pullback};
use super::{Activation, Engine};

/// `relu(x · a + b)` for `x` `[B, C, H, W]` and `a`, `b` `[B, C]`, with a
/// backward to all three (see the module docs).
pub fn scale_shift_relu(x: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    check(x, a, b)?;
    let dev = x.device();
    let engine = Engine::current();
    if on_cpu_engine(x, a, b, engine) {
        profile::time(dev, "forward", kind, || {
            x.contiguous()?
                .apply_op3(&a.contiguous()?, &b.contiguous()?, ScaleShiftRelu)
        })
    } else if engine != Engine::Candle && (dev.is_cpu() || dev.is_cuda()) {
        generic(x, a, b, engine)
    } else {
        profile::time(dev, "forward", kind, || reference(x, a, b))
    }
}

/// Whether the CPU engine's op runs it.
fn on_cpu_engine(x: &Tensor, a: &Tensor, b: &Tensor, engine: Engine) -> bool {
    x.device().is_cpu()
        && [x.dtype(), a.dtype(), b.dtype()] == [DType::F32; 3]
        && engine == Engine::Auto
}

/// Refuses a scale or shift that does not fit `x`.
fn check(x: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<()> {
    let (n, c, _, _) = x.dims4()?;
    if a.dims() != [n, c] || b.dims() != [n, c] {
        candle_core::bail!(
            "scale_shift_relu: x {:?} takes a scale and a shift [{n}, {c}], got {:?} and {:?}",
            x.dims(),
            a.dims(),
            b.dims()
        );
    }
    Ok(())
}

/// [`scale_shift_relu`] outside candle's graph, with its backward (`[dx,
/// da, db]`): the engine's path (not `candle`'s), on the CPU or a CUDA
/// device.
pub(crate) fn scale_shift_relu_taped(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
) -> candle_core::Result<(Tensor, Pullback)> {
    check(x, a, b)?;
    let dev = x.device();
    let engine = Engine::current();
    let (x, a, b) = (x.detach(), a.detach(), b.detach());
    let grads = |(dx, da, db): Grads3| -> candle_core::Result<Vec<Tensor>> {
        let name = "scale_shift_relu";
        Ok(vec![
            grad_of(dx, name)?,
            grad_of(da, name)?,
            grad_of(db, name)?,
        ])
    };
    if on_cpu_engine(&x, &a, &b, engine) {
        let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
        let y = profile::time(dev, "forward", kind, || {
            x.apply_op3_no_bwd(&a, &b, &ScaleShiftRelu)
        })?;
        let out = y.clone();
        // The backward reads x, a and the output (not b, whose place takes a).
        let back: Pullback = Box::new(move |g| grads(ScaleShiftRelu.bwd(&x, &a, &a, &y, g)?));
        return Ok((out, back));
    }
    generic_taped(&x, &a, &b, engine)
}

/// The device-generic path (a GPU, `GEVALDI_ENGINE=generic`) outside
/// candle's graph: the forward on untracked candle ops (on a CUDA device
/// under `auto`, gevaldi's kernels: one forward, two backward), and
/// [`generic_backward`], which keeps `x`, `a` and `b` (not the output,
/// nor `x · a` and `x · a + b` as candle's ops do).
fn generic_taped(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    engine: Engine,
) -> candle_core::Result<(Tensor, Pullback)> {
    let (x, a, b) = (x.detach(), a.detach(), b.detach());
    let own = cuda::applies(&x, engine);
    let y = profile::time(x.device(), "forward", kind, || {
        if own {
            cuda::scale_shift_relu(&x, &a, &b)
        } else {
            reference(&x, &a, &b)
        }
    })?;
    // The backward reads x, a and b, and works the output out again (it
    // is as large as x; a and b are a value per sample and channel).
    let back: Pullback = Box::new(move |g| {
        let (dx, da, db) = generic_backward(own, &x, &a, &b, &g.detach())?;
        Ok(vec![dx, da, db])
    });
    Ok((y, back))
}

/// A three-input op's gradients.
type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The profile's row.
fn kind() -> String {
    "cond batch norm + relu (BigGAN)".into()
}

/// candle's ops.
fn reference(x: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    x.broadcast_mul(&a.reshape((n, c, 1, 1))?)?
        .broadcast_add(&b.reshape((n, c, 1, 1))?)?
        .relu()
}

/// [`generic_taped`], attached to the graph of the inputs.
fn generic(x: &Tensor, a: &Tensor, b: &Tensor, engine: Engine) -> candle_core::Result<Tensor> {
    let (out, back) = generic_taped(x, a, b, engine)?;
    if ![x, a, b].iter().any(|t| super::tracked(t)) {
        return Ok(out);
    }
    attach(&[x, a, b], out, back)
}

/// The generic path's backward of `relu(x · a + b)` = `y`, from `grad`:
/// with m = [y > 0] (candle's ReLU: 0 at a NaN, as on its ops), dx =
/// g·m·a, da = Σ_hw g·m·x, db = Σ_hw g·m (gevaldi's CUDA kernels where
/// `own`). y is worked out again from x, a and b, as the forward did.
fn generic_backward(
    own: bool,
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    profile::time(x.device(), "backward", kind, || {
        if own {
            return cuda::scale_shift_relu_backward(x, a, b, grad);
        }
        let y = reference(x, a, b)?;
        let (n, c, _, _) = x.dims4()?;
        let gm = (grad * y.gt(0f64)?.to_dtype(grad.dtype())?)?;
        let dx = gm.broadcast_mul(&a.reshape((n, c, 1, 1))?)?;
        let da = (&gm * x)?.sum((2, 3))?;
        let db = gm.sum((2, 3))?;
        Ok((dx, da, db))
    })
}

struct ScaleShiftRelu;

impl CustomOp3 for ScaleShiftRelu {
    fn name(&self) -> &'static str {
        "gevaldi-scale-shift-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, a, b) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        let plane = x.len() / a.len().max(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(plane.max(1))
            .zip(x.par_chunks(plane.max(1)))
            .enumerate()
            .for_each(|(i, (y, x))| {
                let (a, b) = (a[i], b[i]);
                for (y, x) in y.iter_mut().zip(x) {
                    // A ReLU has no multiply-add to fuse: any copy's `act`.
                    *y = act::<pulp::Scalar>(Activation::Relu, x * a + b);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let a_vals = a.flatten_all()?.to_vec1::<f32>()?;
        let packed = x.apply_op3_no_bwd(res, &grad.contiguous()?, &Backward { a: a_vals })?;
        let (n, planes) = (x.elem_count(), a.elem_count());
        let gx = packed.narrow(0, 0, n)?.reshape(x.dims())?;
        let ga = packed.narrow(0, n, planes)?.reshape(a.dims())?;
        let gb = packed.narrow(0, n + planes, planes)?.reshape(a.dims())?;
        Ok((Some(gx), Some(ga), Some(gb)))
    }
}

/// The backward of [`ScaleShiftRelu`] on (x, its output, the output's
/// gradient): flat `[dx…, da…, db…]`.
struct Backward {
    a: Vec<f32>,
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "gevaldi-scale-shift-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, y, g) = (
            f32s(s1, l1, self.name())?,
            f32s(s2, l2, self.name())?,
            f32s(s3, l3, self.name())?,
        );
        let planes = self.a.len();
        let plane = (x.len() / planes.max(1)).max(1);
        let mut out = vec![0f32; x.len() + 2 * planes];
        let (dx, dab) = out.split_at_mut(x.len());
        let sums: Vec<(f64, f64)> = dx
            .par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .zip(y.par_chunks(plane))
            .zip(g.par_chunks(plane))
            .enumerate()
            .map(|(i, (((dx, x), y), g))| {
                let a = self.a[i];
                let (mut da, mut db) = (0f64, 0f64);
                for (((dx, x), y), g) in dx.iter_mut().zip(x).zip(y).zip(g) {
                    let gm = act_grad(Activation::Relu, *g, *y);
                    *dx = gm * a;
                    da += f64::from(gm * x);
                    db += f64::from(gm);
                }
                (da, db)
            })
            .collect();
        let (da, db) = dab.split_at_mut(planes);
        for (i, (s_a, s_b)) in sums.into_iter().enumerate() {
            da[i] = s_a as f32;
            db[i] = s_b as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{generic, reference, scale_shift_relu, ScaleShiftRelu};

    /// The op itself, whatever `GEVALDI_ENGINE` says.
    fn op(x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        x.apply_op3(a, b, ScaleShiftRelu).unwrap()
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-30)
    }

    /// Forward and the gradients of x, a and b agree with candle's ops.
    #[test]
    fn agrees_with_candles_ops_forward_and_all_three_gradients() {
        let x = Var::from_tensor(&randn(&[3, 5, 4, 6], 1)).unwrap();
        let a = Var::from_tensor(&randn(&[3, 5], 2)).unwrap();
        let b = Var::from_tensor(&randn(&[3, 5], 3)).unwrap();
        let w = randn(&[3, 5, 4, 6], 4);
        let run = |f: &dyn Fn() -> Tensor| {
            let y = f();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (y, g(&x), g(&a), g(&b))
        };
        let slow = run(&|| reference(&x, &a, &b).unwrap());
        let fast = run(&|| op(&x, &a, &b));
        let any_device = run(&|| generic(&x, &a, &b, super::Engine::Auto).unwrap());
        for d in [&any_device.1, &any_device.2, &any_device.3] {
            assert!(!d.track_op(), "a gradient carries a graph");
        }
        for (path, fast) in [("cpu", fast), ("generic", any_device)] {
            for (name, f, s) in [
                ("y", &fast.0, &slow.0),
                ("dx", &fast.1, &slow.1),
                ("da", &fast.2, &slow.2),
                ("db", &fast.3, &slow.3),
            ] {
                let e = max_rel(f, s);
                assert!(e < 1e-5, "{path} {name}: relative error {e}");
            }
        }
        // A NaN propagates (candle 0.11's relu makes it 0).
        let nan = Tensor::full(f32::NAN, (1, 1, 1, 2), &Device::Cpu).unwrap();
        let one = Tensor::ones((1, 1), DType::F32, &Device::Cpu).unwrap();
        let y = op(&nan, &one, &one);
        assert!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].is_nan());
    }

    #[test]
    fn refuses_a_scale_of_the_wrong_shape() {
        let x = randn(&[2, 3, 2, 2], 1);
        let e = scale_shift_relu(&x, &randn(&[2, 4], 2), &randn(&[2, 3], 3)).unwrap_err();
        assert!(e.to_string().contains("[2, 3]"), "{e}");
    }
}
