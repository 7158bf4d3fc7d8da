//! A residual addition whose skip path keeps the first channels of its
//! input and upsamples them ×2 (nearest), as BigGAN-deep's blocks join:
//! `h + up(x[:, :c])`, as one op with a backward in candle's ops, on any
//! device (under `auto`, gevaldi's kernels on a CUDA device and on the
//! CPU: `kernels::skip`).
//!
//! On candle's ops the graph holds the cropped copy of `x` and its
//! upsampled copy (the size of `h`) until the backward ends, though the
//! addition's backward reads neither; here it holds `x` and `h`, which it
//! holds anyway (the block's input and its last conv's output). The
//! backward: `dh = g`, and `dx` is `g` summed over each 2×2 window, its
//! channels padded with zeros to `x`'s.

use candle_core::Tensor;

use super::cpu_op::{cpu_kernels_apply, on_f32s};
use super::generic::attach;
use super::kernels::skip::{self, Join};
use super::{cuda, profile, Engine, Pullback};

/// `h + up(x[:, :c])` for `h` `[B, c, H, W]` and `x` `[B, C ≥ c, H / s,
/// W / s]` (s = 2 when `up`, else 1). On candle's ops under
/// `GEVALDI_ENGINE=candle` or on Metal, else as one op (see the module
/// docs).
pub(crate) fn skip_add(h: &Tensor, x: &Tensor, up: bool) -> candle_core::Result<Tensor> {
    let dev = h.device();
    if Engine::current() == Engine::Candle || !(dev.is_cpu() || dev.is_cuda()) {
        check(h, x, up)?;
        return profile::time(dev, "forward", kind, || reference(h, x, up));
    }
    let (out, back) = skip_add_taped(h, x, up)?;
    if !(super::tracked(h) || super::tracked(x)) {
        return Ok(out);
    }
    attach(&[h, x], out, back)
}

/// [`skip_add`] outside candle's graph, with its backward (`[dh, dx]`):
/// the engine's path (not `candle`'s), on the CPU or a CUDA device.
pub(crate) fn skip_add_taped(
    h: &Tensor,
    x: &Tensor,
    up: bool,
) -> candle_core::Result<(Tensor, Pullback)> {
    check(h, x, up)?;
    let (h, x) = (h.detach(), x.detach());
    let own = cuda::applies(&h, Engine::current());
    let out = profile::time(h.device(), "forward", kind, || {
        if own {
            cuda::skip_add(&h, &x, up)
        } else if cpu_kernels_apply(&[&h, &x]) {
            let (h, x) = (h.contiguous()?, x.contiguous()?);
            let j = join(&h, x.dim(1)?, up)?;
            let out = on_f32s(&[&h, &x], "skip_add", |v| skip::skip_add(v[0], v[1], j))?;
            Tensor::from_vec(out, h.dims(), h.device())
        } else {
            reference(&h, &x, up)
        }
    })?;
    // The backward reads x's shape only: nothing else is kept.
    let dims = x.dims4()?;
    let back: Pullback = Box::new(move |g| {
        let g = g.detach();
        let dx = profile::time(g.device(), "backward", kind, || dx(&g, dims, up, own))?;
        Ok(vec![g, dx])
    });
    Ok((out, back))
}

/// The gradient of x `[B, C, H, W]` (`dims`) from the join's output's,
/// `g`: each 2×2 window's sum where `up`, the channels past g's zero.
fn dx(
    g: &Tensor,
    dims: (usize, usize, usize, usize),
    up: bool,
    own: bool,
) -> candle_core::Result<Tensor> {
    let (_, xc, xh, xw) = dims;
    if own {
        return cuda::skip_add_dx(g, xc, up);
    }
    if cpu_kernels_apply(&[g]) {
        return join_dx(g, xc, up);
    }
    let (b, c, hh, hw) = g.dims4()?;
    let mut dx = if up {
        g.reshape((b, c, hh / 2, 2, hw / 2, 2))?.sum((3, 5))?
    } else {
        g.clone()
    };
    if xc > c {
        let zeros = Tensor::zeros((b, xc - c, xh, xw), g.dtype(), g.device())?;
        dx = Tensor::cat(&[&dx, &zeros], 1)?;
    }
    Ok(dx)
}

/// The CPU kernels' sizes of a join whose output (or its gradient) is
/// `h`, of an `x` of `xc` channels.
fn join(h: &Tensor, xc: usize, up: bool) -> candle_core::Result<Join> {
    let (b, c, hh, hw) = h.dims4()?;
    Ok(Join {
        b,
        c,
        hh,
        hw,
        xc,
        s: if up { 2 } else { 1 },
    })
}

/// The gradient of a join's `x` (`xc` channels) from its output's, `g`,
/// on the CPU kernel (f32 values on the CPU): also the ×2 upsampling's
/// backward (`xc` = g's channels, `up`).
pub(crate) fn join_dx(g: &Tensor, xc: usize, up: bool) -> candle_core::Result<Tensor> {
    let g = g.contiguous()?;
    let j = join(&g, xc, up)?;
    let dx = on_f32s(&[&g], "skip_add_dx", |v| skip::skip_add_dx(v[0], j))?;
    Tensor::from_vec(dx, (j.b, xc, j.hh / j.s, j.hw / j.s), g.device())
}

/// Refuses an `x` that does not fit `h` (see [`skip_add`]).
fn check(h: &Tensor, x: &Tensor, up: bool) -> candle_core::Result<()> {
    let (b, c, hh, hw) = h.dims4()?;
    let (xb, xc, xh, xw) = x.dims4()?;
    let s = if up { 2 } else { 1 };
    if xb != b || xc < c || xh * s != hh || xw * s != hw {
        candle_core::bail!(
            "skip_add: h {:?} takes x [{b}, ≥ {c}, {}, {}], got {:?}",
            h.dims(),
            hh / s,
            hw / s,
            x.dims()
        );
    }
    Ok(())
}

/// The profile's row.
fn kind() -> String {
    "skip add (BigGAN)".into()
}

/// candle's ops.
fn reference(h: &Tensor, x: &Tensor, up: bool) -> candle_core::Result<Tensor> {
    let c = h.dim(1)?;
    let mut skip = x.clone();
    if x.dim(1)? != c {
        skip = skip.narrow(1, 0, c)?;
    }
    if up {
        skip = crate::zoo::upsample_nearest(&skip, 2)?;
    }
    h + skip
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};

    use super::super::tests::{randn, rel_err};
    use super::{reference, skip_add};

    /// Output and both gradients agree with candle's ops, with and without
    /// the upsampling and the channel crop.
    #[test]
    fn agrees_with_candles_ops_forward_and_both_gradients() {
        for (up, xc) in [(true, 5), (true, 3), (false, 5), (false, 3)] {
            let s = if up { 2 } else { 1 };
            let h = Var::from_tensor(&randn(&[2, 3, 4 * s, 6 * s], 1)).unwrap();
            let x = Var::from_tensor(&randn(&[2, xc, 4, 6], 2)).unwrap();
            let w = randn(&[2, 3, 4 * s, 6 * s], 3);
            let run = |f: &dyn Fn(&Tensor, &Tensor, bool) -> candle_core::Result<Tensor>| {
                let y = f(h.as_tensor(), x.as_tensor(), up).unwrap();
                let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let d = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
                [y, d(&h), d(&x)]
            };
            let fast = run(&skip_add);
            let slow = run(&reference);
            for (name, (f, s)) in ["out", "dh", "dx"].iter().zip(fast.iter().zip(&slow)) {
                assert_eq!(f.dims(), s.dims(), "{name} (up {up}, {xc} channels)");
                let e = rel_err(f, s);
                assert!(
                    e < 1e-6,
                    "{name} (up {up}, {xc} channels): relative error {e}"
                );
            }
            assert!(!fast[2].track_op(), "a gradient carries a graph");
        }
    }

    #[test]
    fn refuses_a_skip_of_the_wrong_size() {
        let e = skip_add(&randn(&[1, 3, 8, 8], 1), &randn(&[1, 2, 4, 4], 2), true).unwrap_err();
        assert!(e.to_string().contains("[1, ≥ 3, 4, 4]"), "{e}");
    }
}
