//! Convolution on NHWC: im2col and one matrix product per group (a 1×1
//! stride-1 conv multiplies the input directly, a depthwise conv runs its
//! own loop); the input's gradient by the transposed products and col2im.

use super::simd::{madd, simd_fn};
use std::cell::RefCell;

use ndarray::ArrayView2;
use rayon::prelude::*;

use super::super::{Conv2dSettings, ConvTranspose2dSettings};
use super::elementwise::bias_act;
use super::winograd::Winograd;
use super::{buffer, gemm, view, view_mut, Activation, Dims};

/// A compiled convolution.
#[derive(Debug)]
pub(crate) struct ConvK {
    cout: usize,
    cin_g: usize,
    kh: usize,
    kw: usize,
    /// Per axis, `[rows, columns]`.
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    groups: usize,
    /// `[cout, kh, kw, cin_g]`: group g's matrix `[cout_g, K]` at row
    /// g·cout_g, K = kh·kw·cin_g in (ky, kx, ci) order (empty for a
    /// depthwise conv, which reads `dw`).
    w: Vec<f32>,
    /// For a depthwise conv: `[kh·kw, C]` (else empty).
    dw: Vec<f32>,
    /// For a conv that [`Winograd::applies`] to, once [`Self::prepare`]d
    /// (then `w` is empty).
    wino: Option<Winograd>,
    /// Once [`Self::prepare_forward_rhs`]d (one group): `w` transposed,
    /// `[K, cout]`, the forward's right-hand operand (else empty).
    wt: Vec<f32>,
    bias: Vec<f32>,
}

thread_local! {
    /// im2col rows (or their gradient), reused by every conv on this thread.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// At most this many floats of im2col rows at once (16 MB).
const COLS_LIMIT: usize = 1 << 22;

/// Runs `f` with this thread's [`COLS`] buffer, or a fresh one where it is
/// in use: a rayon worker waiting inside one conv's parallel loop may pick
/// up another engine pass's conv (passes on several threads at once, as
/// tests and tournaments run them).
fn with_cols<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    COLS.with(|cols| match cols.try_borrow_mut() {
        Ok(mut c) => f(&mut c),
        Err(_) => f(&mut Vec::new()),
    })
}

/// A conv's output length along an axis of input length `n`, kernel
/// length `k`: an error where the padded input is shorter than the
/// kernel's dilated span (candle's conv2d panics there) or the stride is 0.
pub(crate) fn conv_len(
    n: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> candle_core::Result<usize> {
    if stride == 0 {
        candle_core::bail!("conv: stride 0, expected 1 or more");
    }
    let span = dil * (k.max(1) - 1) + 1;
    if n + 2 * pad < span {
        candle_core::bail!(
            "conv: input {n} (+2·{pad} padding) is smaller than the kernel's span {span}"
        );
    }
    Ok((n + 2 * pad - span) / stride + 1)
}

/// A transposed conv's settings (the public [`ConvTranspose2dSettings`]).
pub(crate) type TransposeSettings = ConvTranspose2dSettings;

impl ConvK {
    /// From PyTorch's `[cout, cin_g, kh, kw]` weight; `None` for
    /// inconsistent sizes.
    pub(crate) fn new(
        w_oihw: &[f32],
        bias: Vec<f32>,
        [cout, cin_g, kh, kw]: [usize; 4],
        settings: Conv2dSettings,
    ) -> Option<Self> {
        let Conv2dSettings {
            stride,
            padding: pad,
            dilation: dil,
            groups,
        } = settings;
        if groups == 0
            || !cout.is_multiple_of(groups)
            || bias.len() != cout
            || stride.contains(&0)
            || kh == 0
            || kw == 0
        {
            return None;
        }
        let mut w = vec![0f32; w_oihw.len()];
        for o in 0..cout {
            for i in 0..cin_g {
                for y in 0..kh {
                    for x in 0..kw {
                        w[((o * kh + y) * kw + x) * cin_g + i] =
                            w_oihw[((o * cin_g + i) * kh + y) * kw + x];
                    }
                }
            }
        }
        let mut k = ConvK {
            cout,
            cin_g,
            kh,
            kw,
            stride,
            pad,
            dil: dil.map(|d| d.max(1)),
            groups,
            w,
            dw: Vec::new(),
            wino: None,
            wt: Vec::new(),
            bias,
        };
        k.relayout();
        Some(k)
    }

    fn depthwise(&self) -> bool {
        self.cin_g == 1 && self.groups == self.cout && self.groups > 1
    }

    fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.stride, self.pad) == (1, 1, [1; 2], [0; 2])
    }

    /// A 1×1 stride-1 conv with one group: on NCHW values it is one
    /// product per sample, `W [cout, cin] · X [cin, H·W]`, with no
    /// transposes ([`Self::forward_nchw`], [`Self::backward_nchw`]).
    pub(crate) fn is_plain_pointwise(&self) -> bool {
        self.pointwise() && self.groups == 1
    }

    /// `conv(x) + bias` of NCHW `x`, `b` samples of `H·W` = `hw` pixels,
    /// for [`Self::is_plain_pointwise`] convs.
    pub(crate) fn forward_nchw(&self, x: &[f32], b: usize, hw: usize) -> Vec<f32> {
        let w = view(&self.w, 0, self.cout, self.cin_g, self.cin_g);
        let mut y = per_sample_products(w, x, b, hw);
        for ys in y.chunks_mut(self.cout * hw) {
            for (row, bias) in ys.chunks_mut(hw).zip(&self.bias) {
                row.iter_mut().for_each(|v| *v += bias);
            }
        }
        y
    }

    /// The gradient of NCHW `x` from `g`, the output's gradient, for
    /// [`Self::is_plain_pointwise`] convs: `Wᵀ · G` per sample.
    pub(crate) fn backward_nchw(&self, g: &[f32], b: usize, hw: usize) -> Vec<f32> {
        let w = view(&self.w, 0, self.cout, self.cin_g, self.cin_g);
        per_sample_products(w.t(), g, b, hw)
    }

    /// A depthwise conv's weights to `dw` (the only copy kept).
    fn relayout(&mut self) {
        if self.depthwise() {
            let (c, kk) = (self.cout, self.kh * self.kw);
            self.dw = vec![0f32; kk * c];
            for ch in 0..c {
                for p in 0..kk {
                    self.dw[p * c + ch] = self.w[ch * kk + p];
                }
            }
            self.w = Vec::new();
        }
    }

    /// Makes the weights the kernel runs on (Winograd's transform where
    /// it applies); after this, no [`Self::fold_affine`].
    pub(crate) fn prepare(&mut self) {
        let shape = [self.cout, self.cin_g, self.kh, self.kw];
        if self.wino.is_none()
            && Winograd::applies(shape, self.stride, self.pad, self.dil, self.groups)
        {
            // `applies` holds for one padding on both axes only.
            self.wino = Some(Winograd::new(&self.w, self.cin_g, self.cout, self.pad[0]));
            self.w = Vec::new();
        }
    }

    /// Keeps `w` transposed as well, `[K, cout]`, as the forward's
    /// right-hand operand (one group, no Winograd; the weights take twice
    /// the memory). The gemm crate takes a row-major product transposed, this
    /// operand on the left: as `w`'s transposed view (a stride of K along
    /// cout) it packs it again for every block of the product (`pack_lhs`,
    /// a quarter of a DCGAN generator's step at batch 64, `perf`); as a
    /// row-major `[K, cout]` matrix it reads it as it is.
    /// A transposed conv's backward is this forward: 40 → 15..18 ms per
    /// layer of that generator (2 cores). Every conv keeps it (the backward,
    /// `G · W`, reads `w` as it is): the packing was 14% of a ResNet-18
    /// step (its strided and 1×1 convs, the stem). After this, no
    /// [`Self::fold_affine`].
    pub(crate) fn prepare_forward_rhs(&mut self) {
        if self.groups != 1 || self.wino.is_some() || self.w.is_empty() {
            return;
        }
        let kk = self.kh * self.kw * self.cin_g;
        let mut wt = vec![0f32; self.w.len()];
        for o in 0..self.cout {
            for k in 0..kk {
                wt[k * self.cout + o] = self.w[o * kk + k];
            }
        }
        self.wt = wt;
    }

    /// Folds `y · scale + shift` per output channel into the weights;
    /// false when the sizes do not match or the weights are
    /// [`Self::prepare`]d.
    pub(crate) fn fold_affine(&mut self, scale: &[f32], shift: &[f32]) -> bool {
        if scale.len() != self.cout
            || shift.len() != self.cout
            || self.wino.is_some()
            || !self.wt.is_empty()
        {
            return false;
        }
        if !self.depthwise() {
            return super::fold_affine_rows(&mut self.w, &mut self.bias, scale, shift);
        }
        for px in self.dw.chunks_mut(self.cout) {
            px.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
        }
        for (o, b) in self.bias.iter_mut().enumerate() {
            *b = *b * scale[o] + shift[o];
        }
        true
    }

    /// The output dims for input dims `d`.
    pub(crate) fn out_dims(&self, d: Dims) -> candle_core::Result<Dims> {
        if !d.spatial || d.c != self.cin_g * self.groups {
            candle_core::bail!(
                "conv: expected [B, {}, H, W], got {} channels{}",
                self.cin_g * self.groups,
                d.c,
                if d.spatial { "" } else { " (flat)" }
            );
        }
        let out = |n, k, a: usize| conv_len(n, k, self.stride[a], self.pad[a], self.dil[a]);
        Ok(Dims {
            h: out(d.h, self.kh, 0)?,
            w: out(d.w, self.kw, 1)?,
            c: self.cout,
            ..d
        })
    }

    /// Samples per chunk: im2col rows of at most [`COLS_LIMIT`] floats.
    fn per_chunk(&self, o: Dims) -> usize {
        let per = o.h * o.w * self.kh * self.kw * self.cin_g * self.groups;
        (COLS_LIMIT / per.max(1)).clamp(1, o.b.max(1))
    }

    /// `act(conv(x) + bias)` of NHWC `x` with dims `d`, the bias and the
    /// activation applied to each chunk right after its products; also the
    /// activation's slope where it [keeps it](super::keeps_slope) (GELU),
    /// else empty.
    pub(crate) fn forward(
        &self,
        x: &[f32],
        d: Dims,
        act: Option<Activation>,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let o = self.out_dims(d)?;
        let mut out = vec![0f32; o.len()];
        let mut slope = super::elementwise::slope_buffer(act, o.len());
        if self.depthwise() || self.wino.is_some() {
            match &self.wino {
                Some(wino) => wino.forward(x, d, o, &mut out),
                None => self.depthwise_forward(x, d, o, &mut out),
            }
            bias_act(&mut out, &self.bias, act, &mut slope);
        } else {
            let per = self.per_chunk(o);
            let (kk, cout_g) = (self.kh * self.kw * self.cin_g, self.cout / self.groups);
            for (i, (xs, os)) in x
                .chunks(per * d.per_sample())
                .zip(out.chunks_mut(per * o.per_sample()))
                .enumerate()
            {
                let n = xs.len() / d.per_sample();
                let rows = n * o.h * o.w;
                with_cols(|cols| {
                    let (a, rs): (&[f32], usize) = if self.pointwise() {
                        (xs, d.c)
                    } else {
                        self.im2col(xs, Dims { b: n, ..d }, o, cols);
                        (&cols[..rows * kk * self.groups], kk * self.groups)
                    };
                    if !self.wt.is_empty() {
                        let c = view_mut(os, 0, rows, self.cout, self.cout);
                        let wt = view(&self.wt, 0, kk, self.cout, self.cout);
                        gemm(view(a, 0, rows, kk, rs), wt, c, 0.0);
                        return;
                    }
                    for g in 0..self.groups {
                        let wg = view(&self.w, g * cout_g * kk, cout_g, kk, kk);
                        let c = view_mut(os, g * cout_g, rows, cout_g, self.cout);
                        gemm(view(a, g * kk, rows, kk, rs), wg.t(), c, 0.0);
                    }
                });
                let slope = if slope.is_empty() {
                    &mut [][..]
                } else {
                    &mut slope[i * per * o.per_sample()..][..os.len()]
                };
                bias_act(os, &self.bias, act, slope);
            }
        }
        Ok((out, slope))
    }

    /// The gradient of the input (dims `d`) from `g`, the gradient of the
    /// output before the bias.
    pub(crate) fn backward(&self, g: &[f32], d: Dims) -> candle_core::Result<Vec<f32>> {
        Ok(self.backward_bias_act(g, d, None)?.0)
    }

    /// [`Self::backward`] as a transposed conv's forward: with `(bias, act)`,
    /// `act(dx + bias)` per channel of `d` applied to each chunk of samples
    /// right after its col2im (while it is in cache), and the activation's
    /// slope where it [keeps it](super::keeps_slope) (else empty).
    pub(crate) fn backward_bias_act(
        &self,
        g: &[f32],
        d: Dims,
        epilogue: Option<(&[f32], Option<Activation>)>,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let o = self.out_dims(d)?;
        let mut dx = vec![0f32; d.len()];
        let act = epilogue.and_then(|(_, a)| a);
        let mut slope = super::elementwise::slope_buffer(act, d.len());
        let whole = |dx: &mut [f32], slope: &mut [f32]| {
            if let Some((bias, act)) = epilogue {
                bias_act(dx, bias, act, slope);
            }
        };
        if self.depthwise() {
            self.depthwise_backward(g, d, o, &mut dx);
            whole(&mut dx, &mut slope);
            return Ok((dx, slope));
        }
        if let Some(wino) = &self.wino {
            wino.backward(g, o, d, &mut dx);
            whole(&mut dx, &mut slope);
            return Ok((dx, slope));
        }
        let per = self.per_chunk(o);
        let (kk, cout_g) = (self.kh * self.kw * self.cin_g, self.cout / self.groups);
        for (i, (gs, dxs)) in g
            .chunks(per * o.per_sample())
            .zip(dx.chunks_mut(per * d.per_sample()))
            .enumerate()
        {
            let n = gs.len() / o.per_sample();
            let rows = n * o.h * o.w;
            let product = |da: &mut [f32], rs: usize| {
                for gr in 0..self.groups {
                    let wg = view(&self.w, gr * cout_g * kk, cout_g, kk, kk);
                    let gg = view(gs, gr * cout_g, rows, cout_g, self.cout);
                    gemm(gg, wg, view_mut(da, gr * kk, rows, kk, rs), 0.0);
                }
            };
            if self.pointwise() {
                product(dxs, d.c);
            } else {
                with_cols(|cols| {
                    // The products overwrite every value (`beta` 0).
                    let cols = buffer(cols, rows * kk * self.groups);
                    product(cols, kk * self.groups);
                    self.col2im(cols, Dims { b: n, ..d }, o, dxs);
                });
            }
            let slope = if slope.is_empty() {
                &mut [][..]
            } else {
                &mut slope[i * per * d.per_sample()..][..dxs.len()]
            };
            whole(dxs, slope);
        }
        Ok((dx, slope))
    }

    /// Multiplies the weights by `scale` per input channel, which is a
    /// transposed conv's output channel: `y · scale` of the transposed
    /// conv that this conv's [`Self::backward`] is (its batch norm folded
    /// in; the bias is the caller's). False with several groups, a scale
    /// of another length, or the weights [`Self::prepare`]d.
    pub(crate) fn scale_inputs(&mut self, scale: &[f32]) -> bool {
        if self.groups != 1
            || scale.len() != self.cin_g
            || self.wino.is_some()
            || !self.wt.is_empty()
            || self.w.is_empty()
        {
            return false;
        }
        // `w` is [cout, kh, kw, cin]: the input channel is the fastest.
        for px in self.w.chunks_mut(self.cin_g) {
            px.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
        }
        true
    }

    /// The input row (`axis` 0) or column (1) of `n` read by output row
    /// or column `o` at kernel offset `k`, or `None` in the padding.
    fn at(&self, axis: usize, o: usize, k: usize, n: usize) -> Option<usize> {
        let (s, d, p) = (self.stride[axis], self.dil[axis], self.pad[axis]);
        let i = (o * s + k * d) as isize - p as isize;
        (i >= 0 && (i as usize) < n).then_some(i as usize)
    }

    /// The taps `kx0..kx0 + n` of output column `ox` that fall inside the
    /// input (`w` columns) and the first one's column, as `(kx0, ix0, n)`:
    /// with one group and no dilation they read one contiguous run.
    fn tap_run(&self, ox: usize, w: usize) -> Option<(usize, usize, usize)> {
        let kx0 = (0..self.kw).find(|&kx| self.at(1, ox, kx, w).is_some())?;
        let kx1 = (0..self.kw)
            .rev()
            .find(|&kx| self.at(1, ox, kx, w).is_some())
            .unwrap_or(kx0);
        Some((kx0, self.at(1, ox, kx0, w)?, kx1 + 1 - kx0))
    }

    /// [`Self::tap_run`] of every output column (`o_w` of them) on an
    /// input `w` columns wide, once per pass rather than per output pixel
    /// and kernel row (the two searches were most of a LeNet-5's one-channel
    /// im2col and col2im, `perf`); empty where the taps are not one run
    /// (groups, dilation across).
    fn tap_runs(&self, o_w: usize, w: usize) -> Vec<Option<(usize, usize, usize)>> {
        if self.groups != 1 || self.dil[1] != 1 {
            return Vec::new();
        }
        (0..o_w).map(|ox| self.tap_run(ox, w)).collect()
    }

    /// One im2col row per output pixel, `[groups, kh, kw, cin_g]`, zeros in
    /// the padding.
    fn im2col(&self, x: &[f32], d: Dims, o: Dims, cols: &mut Vec<f32>) {
        let (kk, c) = (self.kh * self.kw * self.cin_g, d.c);
        let row = kk * self.groups;
        // Every value is written below (zeros where a pixel reads the
        // padding), so the buffer is not cleared first.
        let cols = buffer(cols, d.b * o.h * o.w * row);
        let inside = |a: usize, o: usize, k: usize, n: usize| {
            self.at(a, o, 0, n).is_some() && self.at(a, o, k - 1, n).is_some()
        };
        let runs = self.tap_runs(o.w, d.w);
        // One output line per task.
        cols.par_chunks_mut(o.w * row)
            .enumerate()
            .for_each(|(line, out)| {
                let (s, oy) = (line / o.h, line % o.h);
                let img = &x[s * d.per_sample()..][..d.per_sample()];
                let rows_inside = inside(0, oy, self.kh, d.h);
                for ox in 0..o.w {
                    let r = &mut out[ox * row..][..row];
                    if !(rows_inside && inside(1, ox, self.kw, d.w)) {
                        r.fill(0.0);
                    }
                    for ky in 0..self.kh {
                        let Some(iy) = self.at(0, oy, ky, d.h) else {
                            continue;
                        };
                        let line = &img[iy * d.w * c..][..d.w * c];
                        if !runs.is_empty() {
                            let Some((kx0, ix0, taps)) = runs[ox] else {
                                continue;
                            };
                            let len = taps * c;
                            let at = (ky * self.kw + kx0) * c;
                            r[at..at + len].copy_from_slice(&line[ix0 * c..ix0 * c + len]);
                            continue;
                        }
                        for kx in 0..self.kw {
                            let Some(ix) = self.at(1, ox, kx, d.w) else {
                                continue;
                            };
                            for g in 0..self.groups {
                                let at = g * kk + (ky * self.kw + kx) * self.cin_g;
                                r[at..at + self.cin_g].copy_from_slice(
                                    &line[ix * c + g * self.cin_g..][..self.cin_g],
                                );
                            }
                        }
                    }
                }
            });
    }

    /// Adds each im2col row's values back to the input positions it read.
    fn col2im(&self, cols: &[f32], d: Dims, o: Dims, dx: &mut [f32]) {
        let row = self.kh * self.kw * self.cin_g * self.groups;
        let runs = self.tap_runs(o.w, d.w);
        dx.par_chunks_mut(d.per_sample())
            .zip(cols.par_chunks(o.h * o.w * row))
            .for_each(|(img, cs)| col2im_sample(self, cs, d, o, &runs, img));
    }

    fn depthwise_forward(&self, x: &[f32], d: Dims, o: Dims, out: &mut [f32]) {
        if self.stride == [1; 2] {
            let k = [self.kh, self.kw];
            return depthwise_padded(x, d, o, &self.dw, k, (self.dil, self.pad), out);
        }
        // out[oy, ox] = Σ x[oy·s + ky·dil − pad, ox·s + kx·dil − pad] · w[ky, kx]
        let at = |a: usize, o: usize, k: usize, n: usize| self.at(a, o, k, n);
        depthwise_gather(x, d, o, &self.dw, [self.kh, self.kw], at, out);
    }

    fn depthwise_backward(&self, g: &[f32], d: Dims, o: Dims, dx: &mut [f32]) {
        // g's row iy + pad − ky·dil is row iy + (kh − 1 − ky)·dil of g
        // padded by (kh − 1)·dil − pad rows (columns alike): a stride-1
        // gather with the kernel flipped.
        let reach = [(self.kh - 1) * self.dil[0], (self.kw - 1) * self.dil[1]];
        if self.stride == [1; 2] && self.pad[0] <= reach[0] && self.pad[1] <= reach[1] {
            let taps = self.kh * self.kw;
            let flipped: Vec<f32> = (0..taps)
                .flat_map(|t| &self.dw[(taps - 1 - t) * d.c..][..d.c])
                .copied()
                .collect();
            let (k, off) = ([self.kh, self.kw], [0, 1].map(|a| reach[a] - self.pad[a]));
            return depthwise_padded(g, o, d, &flipped, k, (self.dil, off), dx);
        }
        if self.stride == [1; 2] {
            // dx[iy, ix] = Σ g[iy + pad − ky·dil, ix + pad − kx·dil] · w[ky, kx]:
            // the same gather over the output's gradient.
            let at = |a: usize, i: usize, k: usize, n: usize| {
                let v = (i + self.pad[a]) as isize - (k * self.dil[a]) as isize;
                (v >= 0 && (v as usize) < n).then_some(v as usize)
            };
            return depthwise_gather(g, o, d, &self.dw, [self.kh, self.kw], at, dx);
        }
        let c = d.c;
        dx.par_chunks_mut(d.per_sample())
            .zip(g.par_chunks(o.per_sample()))
            .for_each(|(img, gs)| {
                for oy in 0..o.h {
                    for ky in 0..self.kh {
                        let Some(iy) = self.at(0, oy, ky, d.h) else {
                            continue;
                        };
                        for ox in 0..o.w {
                            let gp = &gs[(oy * o.w + ox) * c..][..c];
                            for kx in 0..self.kw {
                                let Some(ix) = self.at(1, ox, kx, d.w) else {
                                    continue;
                                };
                                let px = &mut img[(iy * d.w + ix) * c..][..c];
                                let wk = &self.dw[(ky * self.kw + kx) * c..][..c];
                                for ((v, a), b) in px.iter_mut().zip(gp).zip(wk) {
                                    *v += a * b;
                                }
                            }
                        }
                    }
                }
            });
    }
}

/// `m · X` for each of `b` samples of NCHW `x` (`X` its `[k, hw]`
/// matrix), `m` being `[rows, k]`: `b` matrices `[rows, hw]`.
fn per_sample_products(m: ArrayView2<f32>, x: &[f32], b: usize, hw: usize) -> Vec<f32> {
    let (rows, k) = m.dim();
    let mut y = vec![0f32; b * rows * hw];
    for (ys, xs) in y.chunks_mut(rows * hw).zip(x.chunks(k * hw)) {
        gemm(
            m,
            view(xs, 0, k, hw, hw),
            view_mut(ys, 0, rows, hw, hw),
            0.0,
        );
    }
    y
}

simd_fn! {
    /// [`ConvK::col2im`] of one sample: `cs` its im2col rows' gradients,
    /// added into `img`. Where the taps of a row read one contiguous run of
    /// the input (one group, no dilation: `runs`, [`ConvK::tap_runs`]),
    /// the run is added at once.
    fn col2im_sample(
        k: &ConvK,
        cs: &[f32],
        d: Dims,
        o: Dims,
        runs: &[Option<(usize, usize, usize)>],
        img: &mut [f32],
    ) {
        let (kk, c) = (k.kh * k.kw * k.cin_g, d.c);
        let row = kk * k.groups;
        for oy in 0..o.h {
            for ky in 0..k.kh {
                let Some(iy) = k.at(0, oy, ky, d.h) else {
                    continue;
                };
                let line = &mut img[iy * d.w * c..][..d.w * c];
                for ox in 0..o.w {
                    let r = &cs[(oy * o.w + ox) * row..][..row];
                    if !runs.is_empty() {
                        let Some((kx0, ix0, taps)) = runs[ox] else {
                            continue;
                        };
                        let len = taps * c;
                        let src = &r[(ky * k.kw + kx0) * c..][..len];
                        line[ix0 * c..][..len]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(v, s)| *v += s);
                        continue;
                    }
                    for kx in 0..k.kw {
                        let Some(ix) = k.at(1, ox, kx, d.w) else {
                            continue;
                        };
                        let px = &mut line[ix * c..][..c];
                        for g in 0..k.groups {
                            let src = &r[g * kk + (ky * k.kw + kx) * k.cin_g..][..k.cin_g];
                            px[g * k.cin_g..][..k.cin_g]
                                .iter_mut()
                                .zip(src)
                                .for_each(|(v, s)| *v += s);
                        }
                    }
                }
            }
        }
    }
}

/// [`depthwise_gather`] at stride 1 with the source's padding written out:
/// `src` (dims `sd`) is first copied into a zero-filled image of the size
/// that `od`'s pixels reach, at rows and columns `off` (output (y, x) then
/// reads its (y + ky·dil[0], x + kx·dil[1])), so that every output pixel is an
/// interior one, summed in registers four pixels at a time (the border
/// pixels, most of ConvNeXt's 14 × 14 and 7 × 7 stages' pixels, took the
/// per-tap path). A tap in the padding adds 0 · w. The padded image lives
/// in this thread's im2col scratch ([`with_cols`]) where it fits.
fn depthwise_padded(
    src: &[f32],
    sd: Dims,
    od: Dims,
    w: &[f32],
    [kh, kw]: [usize; 2],
    (dil, off): ([usize; 2], [usize; 2]),
    out: &mut [f32],
) {
    let c = sd.c;
    let pd = Dims {
        h: od.h + (kh - 1) * dil[0],
        w: od.w + (kw - 1) * dil[1],
        ..sd
    };
    // This thread's im2col scratch holds the padded image where it is no
    // larger than im2col's (no allocation, and each value written once:
    // the padding's zeros and the copy); a larger one is not kept.
    let mut run = |cols: &mut Vec<f32>| {
        let padded = buffer(cols, pd.len());
        padded
            .par_chunks_mut(pd.w * c)
            .enumerate()
            .for_each(|(row, line)| {
                let (s, py) = (row / pd.h, row % pd.h);
                let Some(sy) = py.checked_sub(off[0]).filter(|&sy| sy < sd.h) else {
                    return line.fill(0.0);
                };
                let n = sd.w.min(pd.w.saturating_sub(off[1]));
                let (left, rest) = line.split_at_mut(off[1] * c);
                let (inner, right) = rest.split_at_mut(n * c);
                left.fill(0.0);
                inner.copy_from_slice(&src[(s * sd.h + sy) * sd.w * c..][..n * c]);
                right.fill(0.0);
            });
        depthwise_on_padded(padded, pd, od, w, [kh, kw], dil, out);
    };
    if pd.len() <= COLS_LIMIT {
        with_cols(run);
    } else {
        run(&mut Vec::new());
    }
}

/// [`depthwise_padded`]'s sums over its padded image `padded` (dims `pd`).
fn depthwise_on_padded(
    padded: &[f32],
    pd: Dims,
    od: Dims,
    w: &[f32],
    [kh, kw]: [usize; 2],
    dil: [usize; 2],
    out: &mut [f32],
) {
    let c = pd.c;
    if !c.is_multiple_of(DW_LANES) {
        // Output (y, x) reads the padded image's (y + ky·dil[0], x + kx·dil[1]).
        let at = |a: usize, o: usize, k: usize, n: usize| Some(o + k * dil[a]).filter(|&i| i < n);
        return depthwise_gather(padded, pd, od, w, [kh, kw], at, out);
    }
    // Whole register blocks of channels: each tap of each pixel is one
    // indexed block, with none of the per-tap slicing of `gather_line`.
    let (img, _) = padded.as_chunks::<DW_LANES>();
    let (w, _) = w.as_chunks::<DW_LANES>();
    let (out, _) = out.as_chunks_mut::<DW_LANES>();
    let cb = c / DW_LANES;
    out.par_chunks_mut(od.w * cb)
        .enumerate()
        .for_each(|(line, out)| {
            let (s, oy) = (line / od.h, line % od.h);
            let img = &img[s * pd.h * pd.w * cb..][..pd.h * pd.w * cb];
            let rows = Rows {
                pw: pd.w * cb,
                oy,
                dil,
                k: [kh, kw],
            };
            padded_line(img, w, rows, cb, out);
        });
}

/// Which rows [`padded_line`] reads: output line `oy` reads padded rows
/// `oy + ky·dil[0]` (`pw` blocks a row) for `ky < k[0]`, `k[1]` taps a
/// row, `dil[1]` apart.
#[derive(Clone, Copy)]
struct Rows {
    pw: usize,
    oy: usize,
    dil: [usize; 2],
    k: [usize; 2],
}

simd_fn! {
    /// One output line of [`depthwise_padded`] in blocks of [`DW_LANES`]
    /// channels (`cb` a pixel) from its padded sample `img` and the weights
    /// `w` (`[kh·kw, cb]` blocks): [`DW_PIXELS`] pixels × one block summed
    /// in registers; the line's last pixels one at a time, four blocks at
    /// once (a lone block's sum is a chain of dependent adds).
    fn padded_line(img: &[[f32; DW_LANES]], w: &[[f32; DW_LANES]], r: Rows, cb: usize, out: &mut [[f32; DW_LANES]]) {
        let [kh, kw] = r.k;
        let ow = out.len() / cb.max(1);
        let mut ox = 0;
        while ox + DW_PIXELS <= ow {
            for b in 0..cb {
                let mut acc = [[0f32; DW_LANES]; DW_PIXELS];
                for ky in 0..kh {
                    let row = &img[(r.oy + ky * r.dil[0]) * r.pw..][..r.pw];
                    for kx in 0..kw {
                        let wv = &w[(ky * kw + kx) * cb + b];
                        let p0 = (ox + kx * r.dil[1]) * cb + b;
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let xv = &row[p0 + j * cb];
                            for l in 0..DW_LANES {
                                acc[l] = madd::<S>(xv[l], wv[l], acc[l]);
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    out[(ox + j) * cb + b] = *acc;
                }
            }
            ox += DW_PIXELS;
        }
        for ox in ox..ow {
            let mut b = 0;
            while b < cb {
                let n = (cb - b).min(4);
                let mut acc = [[0f32; DW_LANES]; 4];
                for ky in 0..kh {
                    let row = &img[(r.oy + ky * r.dil[0]) * r.pw..][..r.pw];
                    for kx in 0..kw {
                        let ws = &w[(ky * kw + kx) * cb + b..][..n];
                        let xs = &row[(ox + kx * r.dil[1]) * cb + b..][..n];
                        for ((acc, xv), wv) in acc.iter_mut().zip(xs).zip(ws) {
                            for l in 0..DW_LANES {
                                acc[l] = madd::<S>(xv[l], wv[l], acc[l]);
                            }
                        }
                    }
                }
                out[ox * cb + b..][..n].copy_from_slice(&acc[..n]);
                b += n;
            }
        }
    }
}

/// Channels per register block of [`gather_line`] (one AVX-512 vector,
/// two AVX2 ones, four SSE ones).
const DW_LANES: usize = 16;

/// Output pixels per register block of [`gather_line`]'s interior.
const DW_PIXELS: usize = 4;

/// `out[y, x, c] = Σ_{ky, kx} src[at(0, y, ky), at(1, x, kx), c] · w[ky, kx, c]`
/// (`at` gives the source row (axis 0) or column (1) a tap reads, `None`
/// outside):
/// a depthwise conv's forward pass, and its input's gradient at stride 1.
/// Each output pixel sums its taps in registers, [`DW_LANES`] channels at
/// a time.
fn depthwise_gather(
    src: &[f32],
    sd: Dims,
    od: Dims,
    w: &[f32],
    [kh, kw]: [usize; 2],
    at: impl Fn(usize, usize, usize, usize) -> Option<usize>,
    out: &mut [f32],
) {
    let c = sd.c;
    // The source row (column) of each output row (column) at each tap.
    let ys: Vec<Option<usize>> = (0..od.h)
        .flat_map(|y| (0..kh).map(move |k| (y, k)))
        .map(|(y, k)| at(0, y, k, sd.h))
        .collect();
    let xs: Vec<Option<usize>> = (0..od.w)
        .flat_map(|x| (0..kw).map(move |k| (x, k)))
        .map(|(x, k)| at(1, x, k, sd.w))
        .collect();
    out.par_chunks_mut(od.w * c)
        .enumerate()
        .for_each(|(line, out)| {
            let (s, oy) = (line / od.h, line % od.h);
            let img = &src[s * sd.per_sample()..][..sd.per_sample()];
            gather_line(img, sd.w, &ys[oy * kh..][..kh], &xs, kw, w, c, out);
        });
}

simd_fn! {
    /// One output line of [`depthwise_gather`] (`c` channels a pixel):
    /// `img` is the source sample, `sw` pixels a row; `rows` the source row
    /// at each `ky`, `cols` the source column at each (x, kx), `kw` taps a
    /// row.
    #[allow(clippy::too_many_arguments)]
    fn gather_line(
        img: &[f32],
        sw: usize,
        rows: &[Option<usize>],
        cols: &[Option<usize>],
        kw: usize,
        w: &[f32],
        c: usize,
        out: &mut [f32],
    ) {
        // (weight row, source pixel) per tap of the current pixel.
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(rows.len() * kw);
        // The source column of each pixel of a group at each kx.
        let mut group_cols = vec![0usize; DW_PIXELS * kw];
        let all_rows = rows.iter().all(Option::is_some);
        let full = c - c % DW_LANES;
        let ow = out.len() / c.max(1);
        let mut ox = 0;
        while ox < ow {
            // DW_PIXELS pixels whose taps all fall inside the source: each
            // tap's weights loaded once for all of them, DW_PIXELS × 2
            // (AVX2) independent sums.
            let inside = all_rows
                && full > 0
                && ox + DW_PIXELS <= ow
                && cols[ox * kw..(ox + DW_PIXELS) * kw]
                    .iter()
                    .zip(group_cols.iter_mut())
                    .all(|(ix, gc)| match ix {
                        Some(ix) => {
                            *gc = *ix;
                            true
                        }
                        None => false,
                    });
            if !inside {
                let px = &mut out[ox * c..][..c];
                gather_pixel::<S>(img, sw, rows, cols, kw, w, c, ox, 0, &mut taps, px);
                ox += 1;
                continue;
            }
            let group = &mut out[ox * c..][..DW_PIXELS * c];
            for c0 in (0..full).step_by(DW_LANES) {
                let mut acc = [[0f32; DW_LANES]; DW_PIXELS];
                for (ky, iy) in rows.iter().enumerate() {
                    let line = &img[iy.expect("all rows inside") * sw * c..];
                    for kx in 0..kw {
                        let wv: &[f32; DW_LANES] =
                            w[(ky * kw + kx) * c + c0..][..DW_LANES].try_into().expect("lanes");
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let xv: &[f32; DW_LANES] = line[group_cols[j * kw + kx] * c + c0..]
                                [..DW_LANES]
                                .try_into()
                                .expect("lanes");
                            for l in 0..DW_LANES {
                                acc[l] = madd::<S>(xv[l], wv[l], acc[l]);
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    group[j * c + c0..][..DW_LANES].copy_from_slice(acc);
                }
            }
            if full < c {
                for j in 0..DW_PIXELS {
                    let px = &mut group[j * c..][..c];
                    gather_pixel::<S>(img, sw, rows, cols, kw, w, c, ox + j, full, &mut taps, px);
                }
            }
            ox += DW_PIXELS;
        }
    }
}

/// Channels `from..` of pixel `ox` of [`gather_line`] (a pixel with taps
/// outside the source, or the channels past a group's register blocks;
/// `taps`: scratch).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather_pixel<S: pulp::Simd>(
    img: &[f32],
    sw: usize,
    rows: &[Option<usize>],
    cols: &[Option<usize>],
    kw: usize,
    w: &[f32],
    c: usize,
    ox: usize,
    from: usize,
    taps: &mut Vec<(usize, usize)>,
    px: &mut [f32],
) {
    taps.clear();
    for (ky, iy) in rows.iter().enumerate() {
        let Some(iy) = iy else { continue };
        for (kx, ix) in cols[ox * kw..][..kw].iter().enumerate() {
            if let Some(ix) = ix {
                taps.push((ky * kw + kx, iy * sw + ix));
            }
        }
    }
    let mut c0 = from;
    // Four register blocks at a time where there are four: one block's
    // sum is a chain of dependent adds (the border pixels of ConvNeXt's
    // 14 × 14 and 7 × 7 stages, most of their pixels, waited on it).
    while c0 + 4 * DW_LANES <= c {
        sum_taps::<S, { 4 * DW_LANES }>(img, w, c, c0, taps, px);
        c0 += 4 * DW_LANES;
    }
    while c0 + DW_LANES <= c {
        sum_taps::<S, DW_LANES>(img, w, c, c0, taps, px);
        c0 += DW_LANES;
    }
    for ch in c0..c {
        px[ch] = taps
            .iter()
            .map(|&(k, p)| img[p * c + ch] * w[k * c + ch])
            .sum();
    }
}

/// Channels `c0..c0 + N` of one pixel: the sum over `taps` (weight row,
/// source pixel) of source times weight, in N running sums.
#[inline(always)]
fn sum_taps<S: pulp::Simd, const N: usize>(
    img: &[f32],
    w: &[f32],
    c: usize,
    c0: usize,
    taps: &[(usize, usize)],
    px: &mut [f32],
) {
    let mut acc = [0f32; N];
    for &(k, p) in taps {
        let xv: &[f32; N] = img[p * c + c0..][..N].try_into().expect("lanes");
        let wv: &[f32; N] = w[k * c + c0..][..N].try_into().expect("lanes");
        for l in 0..N {
            acc[l] = madd::<S>(xv[l], wv[l], acc[l]);
        }
    }
    px[c0..c0 + N].copy_from_slice(&acc);
}
