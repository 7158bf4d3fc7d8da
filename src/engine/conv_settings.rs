//! A convolution's settings, per axis: what PyTorch's `Conv2d` takes.

/// A 2-D convolution's settings, each per axis as `[height, width]`:
/// PyTorch's `Conv2d(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
/// groups)` is `Conv2dSettings { stride: [sh, sw], padding: [ph, pw],
/// dilation: [dh, dw], groups }`. The default is PyTorch's: stride 1, no
/// padding, dilation 1, one group. candle_nn's `Conv2dConfig` (one value
/// for both axes) converts with `From`.
///
/// A stride or a dilation of 0 on either axis, groups of 0, or groups that
/// do not divide the output channels, are refused when the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSettings {
    /// The step between windows, `[rows, columns]`.
    pub stride: [usize; 2],
    /// Zeros added on both sides, `[rows (top and bottom), columns (left
    /// and right)]`.
    pub padding: [usize; 2],
    /// The step between a window's taps, `[rows, columns]`.
    pub dilation: [usize; 2],
    /// Input and output channels split into this many independent groups
    /// (the weight is `[Cout, Cin / groups, kh, kw]`).
    pub groups: usize,
}

impl Default for Conv2dSettings {
    fn default() -> Self {
        Conv2dSettings {
            stride: [1; 2],
            padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
}

impl From<candle_nn::Conv2dConfig> for Conv2dSettings {
    fn from(c: candle_nn::Conv2dConfig) -> Self {
        Conv2dSettings {
            stride: [c.stride; 2],
            padding: [c.padding; 2],
            dilation: [c.dilation; 2],
            groups: c.groups,
        }
    }
}

impl Conv2dSettings {
    /// The settings with one stride, padding and dilation for both axes.
    pub(crate) fn square(stride: usize, padding: usize, dilation: usize, groups: usize) -> Self {
        Conv2dSettings {
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [dilation; 2],
            groups,
        }
    }

    /// `(stride, padding, dilation)` where both axes have the same, as
    /// candle's conv2d takes them; `None` where an axis differs.
    pub(crate) fn uniform(&self) -> Option<(usize, usize, usize)> {
        let [s, p, d] = [self.stride, self.padding, self.dilation];
        (s[0] == s[1] && p[0] == p[1] && d[0] == d[1]).then_some((s[0], p[0], d[0]))
    }

    /// The message refusing a stride or dilation of 0 on an axis, or
    /// groups 0 or that do not split `cout` output channels (PyTorch
    /// refuses them; unchecked, the CPU kernels took dilation 0 as 1, the
    /// generic path as 0, candle's backward divided by it and panicked).
    /// A setting the same on both axes is named as one number.
    pub(crate) fn refused(&self, cout: usize) -> Option<String> {
        for (name, v) in [("stride", self.stride), ("dilation", self.dilation)] {
            if v.contains(&0) {
                return Some(format!("conv: {name} {}, expected 1 or more", axes(v)));
            }
        }
        if self.groups == 0 {
            Some("conv: groups 0, expected 1 or more".into())
        } else if !cout.is_multiple_of(self.groups) {
            Some(format!(
                "conv: {cout} output channels do not split into {} groups",
                self.groups
            ))
        } else {
            None
        }
    }
}

/// A per-axis setting as messages name it: `2` where both axes have it,
/// else `[2, 1] ([rows, columns])`.
pub(crate) fn axes(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("{v:?} ([rows, columns])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pytorchs_and_candles_config_converts() {
        assert_eq!(
            Conv2dSettings::default(),
            Conv2dSettings::square(1, 0, 1, 1)
        );
        let c = candle_nn::Conv2dConfig {
            padding: 2,
            stride: 3,
            dilation: 4,
            groups: 5,
            cudnn_fwd_algo: None,
        };
        let s = Conv2dSettings::from(c);
        assert_eq!(
            (s.stride, s.padding, s.dilation, s.groups),
            ([3, 3], [2, 2], [4, 4], 5)
        );
        assert_eq!(s.uniform(), Some((3, 2, 4)));
        let odd = Conv2dSettings {
            padding: [0, 3],
            ..Default::default()
        };
        assert_eq!(odd.uniform(), None);
    }

    #[test]
    fn zeros_on_either_axis_are_refused_naming_it() {
        let s = |stride, dilation, groups| Conv2dSettings {
            stride,
            dilation,
            groups,
            ..Default::default()
        };
        assert_eq!(s([1, 1], [1, 1], 1).refused(4), None);
        assert_eq!(
            s([2, 0], [1, 1], 1).refused(4).unwrap(),
            "conv: stride [2, 0] ([rows, columns]), expected 1 or more"
        );
        assert_eq!(
            s([0, 0], [1, 1], 1).refused(4).unwrap(),
            "conv: stride 0, expected 1 or more"
        );
        assert_eq!(
            s([1, 1], [0, 2], 1).refused(4).unwrap(),
            "conv: dilation [0, 2] ([rows, columns]), expected 1 or more"
        );
        assert!(s([1, 1], [1, 1], 0)
            .refused(4)
            .unwrap()
            .contains("groups 0"));
        assert!(s([1, 1], [1, 1], 3)
            .refused(4)
            .unwrap()
            .contains("3 groups"));
    }
}
