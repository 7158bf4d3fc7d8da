//! Nearest-neighbour ×2 upsampling whose backward sums each 2×2 window of
//! the gradient, as one op (BigGAN-deep's upsampling blocks).
//!
//! candle 0.11's backward of `upsample_nearest2d` is a grouped conv of the
//! gradient with a kernel of ones, one group per channel, and candle runs
//! a grouped conv one group at a time: a conv (and its copies) per
//! channel, hundreds per BigGAN step. Here the backward is a reshape and
//! one sum (under `auto`, one gevaldi kernel on a CUDA device, and on the
//! CPU the residual join's kernel, `kernels::skip`, which upsamples too);
//! the graph holds nothing but the input. Under `GEVALDI_ENGINE=candle` (or on
//! Metal) the same values as a broadcast under candle's autograd (candle's
//! own op's backward replaces its input's gradient rather than adding to
//! it: [`upsample_nearest`](crate::zoo::upsample_nearest)).

use candle_core::Tensor;

use super::cpu_op::{cpu_kernels_apply, on_f32s};
use super::generic::attach;
use super::kernels::skip::{self, Join};
use super::{cuda, profile, Engine, Pullback};

/// `x` `[B, C, H, W]` upsampled to `[B, C, 2H, 2W]` (each value repeated
/// over a 2×2 window), with the backward above.
pub(crate) fn upsample2(x: &Tensor) -> candle_core::Result<Tensor> {
    let dev = x.device();
    if Engine::current() == Engine::Candle || !(dev.is_cpu() || dev.is_cuda()) {
        return reference(x);
    }
    let (out, back) = upsample2_taped(x)?;
    if !super::tracked(x) {
        return Ok(out);
    }
    attach(&[x], out, back)
}

/// [`upsample2`] outside candle's graph, with its backward: the engine's
/// path (not `candle`'s), on the CPU or a CUDA device.
pub(crate) fn upsample2_taped(x: &Tensor) -> candle_core::Result<(Tensor, Pullback)> {
    let x = x.detach();
    let out = profile::time(x.device(), "forward", kind, || {
        if cpu_kernels_apply(&[&x]) {
            let x = x.contiguous()?;
            let (b, c, h, w) = x.dims4()?;
            let j = Join {
                b,
                c,
                hh: 2 * h,
                hw: 2 * w,
                xc: c,
                s: 2,
            };
            let out = on_f32s(&[&x], "upsample2", |v| skip::upsample2(v[0], j))?;
            Tensor::from_vec(out, (b, c, 2 * h, 2 * w), x.device())
        } else {
            reference(&x)
        }
    })?;
    let own = cuda::applies(&x, Engine::current());
    // The backward reads x's shape only: nothing else is kept.
    let dims = x.dims4()?;
    let back: Pullback = Box::new(move |g| Ok(vec![backward(&g.detach(), dims, own)?]));
    Ok((out, back))
}

/// x's gradient from the output's, `g`: each 2×2 window's sum.
fn backward(
    g: &Tensor,
    (b, c, h, w): (usize, usize, usize, usize),
    own: bool,
) -> candle_core::Result<Tensor> {
    profile::time(g.device(), "backward", kind, || {
        if own {
            // The residual join's x-gradient with every channel kept.
            return cuda::skip_add_dx(g, c, true);
        }
        if cpu_kernels_apply(&[g]) {
            return super::skip_add::join_dx(g, c, true);
        }
        g.reshape((b, c, h, 2, w, 2))?.sum((3, 5))
    })
}

/// The profile's row.
fn kind() -> String {
    "upsample x2 (BigGAN)".into()
}

/// On candle's ops.
fn reference(x: &Tensor) -> candle_core::Result<Tensor> {
    crate::zoo::upsample_nearest(x, 2)
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};

    use super::super::tests::{randn, rel_err};
    use super::{reference, upsample2};

    /// Output and input gradient agree with candle's op and its backward.
    #[test]
    fn matches_candles_op_forward_and_backward() {
        let x = Var::from_tensor(&randn(&[2, 3, 4, 5], 1)).unwrap();
        let w = randn(&[2, 3, 8, 10], 2);
        let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let y = f(x.as_tensor()).unwrap();
            let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(x.as_tensor()).unwrap().clone())
        };
        let (y_ref, g_ref) = run(&reference);
        let (y, g) = run(&upsample2);
        assert_eq!(rel_err(&y, &y_ref), 0.0);
        let e = rel_err(&g, &g_ref);
        assert!(e < 1e-6, "input gradient relative error {e}");
    }
}
