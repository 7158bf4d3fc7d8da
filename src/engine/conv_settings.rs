//! A convolution's and a transposed convolution's settings, per axis:
//! what PyTorch's `Conv2d` and `ConvTranspose2d` take.

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
    #[cfg(test)]
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

/// A 2-D transposed convolution's settings, each per axis as `[height,
/// width]`: PyTorch's `ConvTranspose2d(stride=(sh, sw), padding=(ph, pw),
/// output_padding=(oh, ow), dilation=(dh, dw))` (one group) is
/// `ConvTranspose2dSettings { stride: [sh, sw], padding: [ph, pw],
/// output_padding: [oh, ow], dilation: [dh, dw] }`. The default is
/// PyTorch's: stride 1, no padding or output padding, dilation 1.
/// candle_nn's `ConvTranspose2dConfig` (one value for both axes) converts
/// with `From`.
///
/// Refused when the network runs: a stride or dilation of 0 on an axis,
/// an output padding not below its axis's stride (PyTorch also takes one
/// below the dilation; gevaldi's transposed conv is the input gradient of
/// a conv of that stride, and says so), padding that leaves no output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dSettings {
    /// The conv's step it transposes, `[rows, columns]`: the output grows
    /// by it per input position.
    pub stride: [usize; 2],
    /// Rows and columns cut from both sides of the output.
    pub padding: [usize; 2],
    /// Rows and columns added at the bottom and right of the output, each
    /// below its axis's stride.
    pub output_padding: [usize; 2],
    /// The step between a kernel's taps, `[rows, columns]`.
    pub dilation: [usize; 2],
}

impl Default for ConvTranspose2dSettings {
    fn default() -> Self {
        ConvTranspose2dSettings {
            stride: [1; 2],
            padding: [0; 2],
            output_padding: [0; 2],
            dilation: [1; 2],
        }
    }
}

impl From<candle_nn::ConvTranspose2dConfig> for ConvTranspose2dSettings {
    fn from(c: candle_nn::ConvTranspose2dConfig) -> Self {
        ConvTranspose2dSettings {
            stride: [c.stride; 2],
            padding: [c.padding; 2],
            output_padding: [c.output_padding; 2],
            dilation: [c.dilation; 2],
        }
    }
}

impl ConvTranspose2dSettings {
    /// The settings of the conv whose input gradient this transposed conv
    /// is: the same stride, padding and dilation per axis, one group.
    pub(crate) fn conv(&self) -> Conv2dSettings {
        Conv2dSettings {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: 1,
        }
    }

    /// `(stride, padding, output padding, dilation)` where both axes have
    /// the same, as candle's conv_transpose2d takes them.
    pub(crate) fn uniform(&self) -> Option<(usize, usize, usize, usize)> {
        let same = |v: [usize; 2]| (v[0] == v[1]).then_some(v[0]);
        Some((
            same(self.stride)?,
            same(self.padding)?,
            same(self.output_padding)?,
            same(self.dilation)?,
        ))
    }

    /// The output length along axis `a` (0 rows, 1 columns) of input
    /// length `n`, kernel length `k`: (n − 1)·s − 2p + d·(k − 1) + output
    /// padding + 1, PyTorch's; an error where a stride is 0, the output
    /// padding is not less than the stride (the conv it transposes would
    /// then not map the output back to `n`), or the output would be empty.
    pub(crate) fn len(&self, a: usize, n: usize, k: usize) -> candle_core::Result<usize> {
        if self.stride.contains(&0) {
            candle_core::bail!(
                "conv_transpose2d: stride {}, expected 1 or more",
                axes(self.stride)
            );
        }
        let (stride, pad, out_pad, dil) = (
            self.stride[a],
            self.padding[a],
            self.output_padding[a],
            self.dilation[a],
        );
        if out_pad >= stride {
            // PyTorch takes one less than the dilation too; gevaldi does not.
            let also = if out_pad < dil {
                format!(
                    " (PyTorch also takes one less than the dilation {dil}, gevaldi not: \
                     its transposed conv is the input gradient of a conv of stride {stride})"
                )
            } else {
                String::new()
            };
            candle_core::bail!(
                "conv_transpose2d: output padding {out_pad}, expected less than the stride {stride}{also}"
            );
        }
        if n == 0 || k == 0 {
            candle_core::bail!("conv_transpose2d: an input or kernel of length 0");
        }
        let full = (n - 1) * stride + dil.max(1) * (k - 1) + out_pad + 1;
        if full <= 2 * pad {
            candle_core::bail!(
                "conv_transpose2d: input {n}, kernel {k}, stride {stride}: padding {pad} leaves no output"
            );
        }
        Ok(full - 2 * pad)
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

    /// A transposed conv's default is PyTorch's; candle's config gives
    /// equal axes, which candle's own op takes; its output length is
    /// PyTorch's per axis.
    #[test]
    fn transposed_settings_convert_and_measure_each_axis() {
        let c = candle_nn::ConvTranspose2dConfig {
            padding: 1,
            output_padding: 1,
            stride: 2,
            dilation: 3,
        };
        let s = ConvTranspose2dSettings::from(c);
        assert_eq!(s.uniform(), Some((2, 1, 1, 3)));
        assert_eq!(
            ConvTranspose2dSettings::default().uniform(),
            Some((1, 0, 0, 1))
        );
        let tall = ConvTranspose2dSettings {
            stride: [2, 1],
            output_padding: [1, 0],
            ..Default::default()
        };
        assert_eq!(tall.uniform(), None);
        assert_eq!(tall.conv().stride, [2, 1]);
        // (n − 1)·s − 2p + d·(k − 1) + op + 1: rows (4 − 1)·2 + 2 + 1 + 1,
        // columns (4 − 1)·1 + 2 + 0 + 1.
        assert_eq!(
            (tall.len(0, 4, 3).unwrap(), tall.len(1, 4, 3).unwrap()),
            (10, 6)
        );
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
