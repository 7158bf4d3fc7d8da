//! A pooling's settings, per axis: what PyTorch's `MaxPool2d` and
//! `AvgPool2d` take, and the windows they give.

use super::conv_settings::axes;

/// A 2-D max or average pooling's settings, each per axis as `[height,
/// width]`: PyTorch's `MaxPool2d(kernel_size=(kh, kw), stride=(sh, sw),
/// padding=(ph, pw), dilation=(dh, dw), ceil_mode)` and `AvgPool2d(
/// kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode,
/// count_include_pad)`. [`Pool2dSettings::new`] gives PyTorch's defaults
/// for a kernel: stride the kernel, no padding, dilation 1, no ceil mode,
/// padding counted in an average; change the others with struct update
/// syntax (`Pool2dSettings { ceil_mode: true, ..Pool2dSettings::new([2, 2]) }`).
///
/// Refused when the network runs, as PyTorch refuses them: a kernel,
/// stride or dilation of 0 on either axis, padding more than half the
/// kernel on an axis, an input smaller than a window, a dilation other
/// than 1 on an average pool (PyTorch's `AvgPool2d` has none), and
/// `count_include_pad: false` on a max pool (which never reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSettings {
    /// The window, `[rows, columns]`.
    pub kernel: [usize; 2],
    /// The step between windows, `[rows, columns]`.
    pub stride: [usize; 2],
    /// Implicit padding on both sides, `[rows (top and bottom), columns
    /// (left and right)]`: −∞ for a max, zeros for an average.
    pub padding: [usize; 2],
    /// The step between a window's taps, `[rows, columns]` (max pools
    /// only).
    pub dilation: [usize; 2],
    /// PyTorch's `ceil_mode`: one more window along an axis where the last
    /// one would be partial, if it starts inside the input or the left
    /// padding.
    pub ceil_mode: bool,
    /// PyTorch's `count_include_pad` (average pools only): divide by the
    /// window's size, padding included (clipped to input and padding in
    /// ceil mode), or else by the input values it holds.
    pub count_include_pad: bool,
}

impl Pool2dSettings {
    /// PyTorch's defaults for a `kernel` (`[rows, columns]`): stride the
    /// kernel, no padding, dilation 1, no ceil mode, padding counted.
    pub fn new(kernel: [usize; 2]) -> Self {
        Pool2dSettings {
            kernel,
            stride: kernel,
            padding: [0; 2],
            dilation: [1; 2],
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// The settings with one kernel, stride and padding for both axes
    /// (`NetBuilder::max_pool2d`'s and `avg_pool2d`'s).
    pub(crate) fn square(k: usize, s: usize, p: usize, ceil_mode: bool) -> Self {
        Pool2dSettings {
            stride: [s; 2],
            padding: [p; 2],
            ceil_mode,
            ..Pool2dSettings::new([k; 2])
        }
    }

    /// Axis `a`'s window (0 rows, 1 columns).
    pub(crate) fn axis(&self, a: usize) -> PoolAxis {
        PoolAxis {
            k: self.kernel[a],
            s: self.stride[a],
            p: self.padding[a],
            d: self.dilation[a],
            ceil: self.ceil_mode,
        }
    }

    /// The output's rows and columns of the pooling `kind` over an input
    /// of `h` × `w`, or the message refusing the settings (every path's).
    pub(crate) fn output(
        &self,
        kind: PoolKind,
        h: usize,
        w: usize,
    ) -> candle_core::Result<[usize; 2]> {
        let op = kind.name();
        for (name, v) in [
            ("window", self.kernel),
            ("stride", self.stride),
            ("dilation", self.dilation),
        ] {
            if v.contains(&0) {
                candle_core::bail!("{op}: {name} {}, expected 1 or more", axes(v));
            }
        }
        match kind {
            PoolKind::Avg if self.dilation != [1, 1] => candle_core::bail!(
                "avg_pool2d: dilation {}, expected 1 (PyTorch's AvgPool2d has none)",
                axes(self.dilation)
            ),
            PoolKind::Max if !self.count_include_pad => candle_core::bail!(
                "max_pool2d: count_include_pad false, which only an average pool reads"
            ),
            _ => {}
        }
        // PyTorch's rule: beyond it a window can cover padding only.
        if (0..2).any(|a| 2 * self.padding[a] > self.kernel[a]) {
            candle_core::bail!(
                "{op}: padding {} is more than half the window {}",
                axes(self.padding),
                axes(self.kernel)
            );
        }
        Ok([self.axis(0).len(op, h)?, self.axis(1).len(op, w)?])
    }
}

/// A max or an average pooling, as its errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "max_pool2d",
            PoolKind::Avg => "avg_pool2d",
        }
    }
}

/// One axis of a pooling: kernel `k`, stride `s`, padding `p`, dilation
/// `d`, ceil mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolAxis {
    pub(crate) k: usize,
    pub(crate) s: usize,
    pub(crate) p: usize,
    pub(crate) d: usize,
    pub(crate) ceil: bool,
}

impl PoolAxis {
    /// The positions a window spans, first tap to last: `(k − 1)·d + 1`.
    pub(crate) fn extent(&self) -> usize {
        (self.k - 1) * self.d + 1
    }

    /// PyTorch's output length over `n` (settings checked by
    /// [`Pool2dSettings::output`]): `⌊(n + 2p − (k − 1)·d − 1) / s⌋ + 1`,
    /// rounded up in ceil mode, less the last window where it would start
    /// in the right padding.
    fn len(&self, op: &str, n: usize) -> candle_core::Result<usize> {
        let (s, p) = (self.s, self.p);
        let span = n + 2 * p;
        if span < self.extent() {
            candle_core::bail!(
                "{op}: input {n} (+2·{p} padding) is smaller than the window's span {}",
                self.extent()
            );
        }
        let rest = span - self.extent();
        let mut o = if self.ceil {
            rest.div_ceil(s) + 1
        } else {
            rest / s + 1
        };
        if self.ceil && (o - 1) * s >= n + p {
            o -= 1;
        }
        // A dilated window can step over the whole input (taps in the
        // padding on both sides): PyTorch pools it to −∞ and sends its
        // gradient out of the input.
        if let Some(i) = (0..o).find(|&i| self.taps(i, n).0 >= n) {
            candle_core::bail!(
                "{op}: window {i} of an input {n} long holds padding only (window {}, dilation {}, padding {p})",
                self.k,
                self.d
            );
        }
        Ok(o)
    }

    /// Window `o`'s taps inside an input `n` long: `(first, end)`, the
    /// taps `first, first + d, …` below `end` (`first ≥ end`: none).
    pub(crate) fn taps(&self, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.s) as isize - self.p as isize;
        // The first tap at or after 0.
        let first = if start < 0 {
            start + ((-start) as usize).div_ceil(self.d) as isize * self.d as isize
        } else {
            start
        };
        let end = (start + self.extent() as isize).min(n as isize);
        (first as usize, end.max(0) as usize)
    }

    /// An average's divisor for window `o` over an input `n` long: its
    /// length clipped to input and padding (`count_include_pad`), or to the
    /// input (PyTorch's `(hend − hstart)` before or after clamping to the
    /// input).
    pub(crate) fn count(&self, o: usize, n: usize, include_pad: bool) -> usize {
        let start = (o * self.s) as isize - self.p as isize;
        let end = (start + self.k as isize).min((n + self.p) as isize);
        if include_pad {
            (end - start) as usize
        } else {
            let (a, b) = (start.max(0), end.min(n as isize));
            (b - a).max(0) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's defaults: stride the kernel, nothing else.
    #[test]
    fn new_is_pytorchs_default() {
        let s = Pool2dSettings::new([3, 1]);
        assert_eq!(s.stride, [3, 1]);
        assert_eq!((s.padding, s.dilation), ([0, 0], [1, 1]));
        assert!(!s.ceil_mode && s.count_include_pad);
        assert_eq!(
            Pool2dSettings::square(2, 2, 0, false),
            Pool2dSettings::new([2, 2])
        );
    }

    /// Output lengths by PyTorch's formula (values from
    /// `torch.nn.functional.max_pool2d` / `avg_pool2d` shapes).
    #[test]
    fn output_lengths_are_pytorchs() {
        let max = |k, s, p, d, ceil, n| {
            let a = PoolAxis { k, s, p, d, ceil };
            a.len("max_pool2d", n).ok()
        };
        // MaxPool2d(3, 2, 1, dilation=2) over 9: (9 + 2 - 4 - 1) / 2 + 1 = 4.
        assert_eq!(max(3, 2, 1, 2, false, 9), Some(4));
        // ceil: (10 + 2 - 5) / 2 -> ceil 4 + 1 = 5; the 5th starts at 8 - 1 = 7 < 11.
        assert_eq!(max(3, 2, 1, 2, true, 10), Some(5));
        // AvgPool2d(2, ceil_mode=True) over 7: 4, the last window one wide.
        assert_eq!(max(2, 2, 0, 1, true, 7), Some(4));
        // ceil drops a window starting in the right padding: 5, k2 s2 p1
        // gives ceil(5/2) + 1 = 4, whose last starts at 6 - 1 = 5, past
        // the input (5): 3.
        assert_eq!(max(2, 2, 1, 1, true, 5), Some(3));
        // 6, k3 s3 p1 ceil: ceil(5/3)+1 = 3, the 3rd starts at 6 - 1 = 5 < 7: kept.
        assert_eq!(max(3, 3, 1, 1, true, 6), Some(3));
        // 2, k2 d3 p1: the one window's taps are -1 and 2, both padding.
        assert_eq!(max(2, 1, 1, 3, false, 2), None);
    }

    /// Divisors as PyTorch's avg_pool2d: with ceil mode and padding
    /// counted, the last window clipped to input + padding, not to k.
    #[test]
    fn average_divisors_are_pytorchs() {
        // AvgPool2d(3, 2, 1, ceil_mode=True) over 6: windows at -1, 1, 3, 5.
        let a = PoolAxis {
            k: 3,
            s: 2,
            p: 1,
            d: 1,
            ceil: true,
        };
        let counted: Vec<_> = (0..4).map(|o| a.count(o, 6, true)).collect();
        let inside: Vec<_> = (0..4).map(|o| a.count(o, 6, false)).collect();
        assert_eq!(counted, [3, 3, 3, 2]);
        assert_eq!(inside, [2, 3, 3, 1]);
    }

    #[test]
    fn refusals_name_the_op_and_the_axes() {
        let e = |s: Pool2dSettings, kind| s.output(kind, 8, 8).unwrap_err().to_string();
        let k0 = Pool2dSettings {
            kernel: [0, 2],
            ..Pool2dSettings::new([1, 2])
        };
        assert!(e(k0, PoolKind::Max).contains("max_pool2d: window [0, 2] ([rows, columns])"));
        let s0 = Pool2dSettings {
            stride: [2, 0],
            ..Pool2dSettings::new([2, 2])
        };
        assert!(e(s0, PoolKind::Avg).contains("avg_pool2d: stride [2, 0] ([rows, columns])"));
        let wide = Pool2dSettings {
            padding: [0, 1],
            ..Pool2dSettings::new([3, 1])
        };
        assert!(
            e(wide, PoolKind::Avg).contains("padding [0, 1] ([rows, columns]) is more than half the window [3, 1] ([rows, columns])")
        );
        let dilated = Pool2dSettings {
            dilation: [2, 2],
            ..Pool2dSettings::new([2, 2])
        };
        assert!(e(dilated, PoolKind::Avg).contains("avg_pool2d: dilation 2, expected 1"));
        assert!(dilated.output(PoolKind::Max, 8, 8).is_ok());
        let excl = Pool2dSettings {
            count_include_pad: false,
            ..Pool2dSettings::new([2, 2])
        };
        assert!(e(excl, PoolKind::Max).contains("count_include_pad"));
    }
}
