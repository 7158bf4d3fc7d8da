// gevaldi's own CUDA kernels, compiled once per process by NVRTC
// (src/engine/cuda.rs) with --fmad=false, so that a product and a sum
// round as candle's separate ops do. Every kernel is a grid-stride loop
// over its output elements (one thread per output, no atomics): each
// output is written once, in a fixed order of additions, so a run gives
// the same bits every time. f32 only; sizes are below 2^31.

#define NEG_INF __int_as_float(0xff800000)

// A grid-stride loop over i in [0, n), n < 2^31 (the launch checks it).
// i is unsigned: a launch of one thread per element rounds n up to its
// grid (256 threads a block), so a thread's first index reaches 2^31 - 1
// and its next one about 2n, past an int's range (then negative, and
// below n) as soon as n passes 2^30; unsigned, both stay below 2^32.
#define GRID_LOOP(i, n) \
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(n); \
       i += blockDim.x * gridDim.x)

__device__ inline int imin(int a, int b) { return a < b ? a : b; }

// The position of the first maximum of each kh x kw window (strides sh,
// sw, paddings ph, pw, dilations dh, dw) of planes h x w, as row * wp +
// column in the padded plane (rows shifted by ph, columns by pw); a NaN wins over any number (the first
// NaN of the window). out: planes x ho x wo.
extern "C" __global__ void maxpool_argmax(const float *x, unsigned *pos, int n, int h,
                                          int w, int ho, int wo, int kh, int kw, int sh,
                                          int sw, int ph, int pw, int dh, int dw, int wp) {
  GRID_LOOP(i, n) {
    int ox = i % wo;
    int oy = (i / wo) % ho;
    long long plane = i / (wo * ho);
    const float *xp = x + plane * h * w;
    float m = NEG_INF;
    int br = oy * sh, bc = ox * sw;
    for (int di = 0; di < kh; ++di) {
      int pr = oy * sh + di * dh, r = pr - ph;
      for (int dj = 0; dj < kw; ++dj) {
        int pc = ox * sw + dj * dw, c = pc - pw;
        float v = (r >= 0 && r < h && c >= 0 && c < w) ? xp[r * w + c] : NEG_INF;
        if (v > m || (v != v && m == m)) {
          m = v;
          br = pr;
          bc = pc;
        }
      }
    }
    pos[i] = (unsigned)(br * wp + bc);
  }
}

// y = the input at each position maxpool_argmax found (-inf in padding).
extern "C" __global__ void maxpool_gather(const float *x, const unsigned *pos, float *y,
                                          int n, int hw_out, int h, int w, int ph, int pw,
                                          int wp) {
  GRID_LOOP(i, n) {
    long long plane = i / hw_out;
    int q = (int)pos[i];
    int r = q / wp - ph, c = q % wp - pw;
    y[i] = (r >= 0 && r < h && c >= 0 && c < w) ? x[plane * h * w + r * w + c] : NEG_INF;
  }
}

// dx at each input position: the sum, in the order of the outputs, of the
// gradients of the windows whose maximum it was (the same additions as
// candle's scatter_add along a plane).
extern "C" __global__ void maxpool_backward(const float *g, const unsigned *pos, float *dx,
                                            int n, int h, int w, int ho, int wo, int eh,
                                            int ew, int sh, int sw, int ph, int pw, int wp) {
  GRID_LOOP(i, n) {
    int c = i % w;
    int r = (i / w) % h;
    long long plane = i / (w * h);
    int pr = r + ph, pc = c + pw;
    unsigned q = (unsigned)(pr * wp + pc);
    // Windows oy with oy * sh <= pr <= oy * sh + eh - 1 (eh, ew: the
    // positions a window spans, (k - 1) * dilation + 1).
    int ar = pr - eh + 1, ac = pc - ew + 1;
    int oy0 = ar > 0 ? (ar + sh - 1) / sh : 0, oy1 = imin(pr / sh, ho - 1);
    int ox0 = ac > 0 ? (ac + sw - 1) / sw : 0, ox1 = imin(pc / sw, wo - 1);
    const unsigned *pp = pos + plane * ho * wo;
    const float *gp = g + plane * ho * wo;
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox)
        if (pp[oy * wo + ox] == q) acc += gp[oy * wo + ox];
    dx[i] = acc;
  }
}

// A ReLU's input gradient from its output y: 0 where y <= 0, else g (a
// NaN output passes its gradient on, as PyTorch's threshold_backward).
extern "C" __global__ void relu_backward(const float *g, const float *y, float *dx, int n) {
  GRID_LOOP(i, n)
    dx[i] = y[i] <= 0.0f ? 0.0f : g[i];
}

// relu(x * a + b), a and b one per plane (sample and channel), side by side
// in ab: a sample's c scales, then its c shifts (the index of plane j's
// scale is j + (j / c) * c, its shift's c more). NaN kept.
extern "C" __global__ void scale_shift_relu(const float *x, const float *ab, float *y, int n,
                                            int plane, int c) {
  GRID_LOOP(i, n) {
    int j = i / plane;
    int k = j + (j / c) * c;
    float v = x[i] * ab[k] + ab[k + c];
    y[i] = v > 0.0f || v != v ? v : 0.0f;
  }
}

// Its input gradient: g * a where the output y > 0, else 0. y is not
// kept: x * a + b is worked out again as the forward did (a product and a
// sum rounded apart: NVRTC runs with --fmad=false).
extern "C" __global__ void scale_shift_relu_dx(const float *g, const float *x, const float *ab,
                                               float *dx, int n, int plane, int c) {
  GRID_LOOP(i, n) {
    int j = i / plane;
    int k = j + (j / c) * c;
    float v = x[i] * ab[k] + ab[k + c];
    dx[i] = v > 0.0f ? g[i] * ab[k] : 0.0f;
  }
}

// The gradients of its scale and shift, laid out as ab, one block per plane
// (blockDim.x a power of two, at most 1024): the scale's the sum of g * x
// where y > 0, the shift's the sum of g there (y worked out again as in
// scale_shift_relu_dx).
extern "C" __global__ void scale_shift_relu_dab(const float *g, const float *x, const float *ab,
                                                float *out, int planes, int plane, int c) {
  __shared__ float sa[1024];
  __shared__ float sb[1024];
  for (int j = blockIdx.x; j < planes; j += gridDim.x) {
    const long long base = (long long)j * plane;
    const int k = j + (j / c) * c;
    const float a = ab[k], b = ab[k + c];
    float da = 0.0f, db = 0.0f;
    for (int t = threadIdx.x; t < plane; t += blockDim.x) {
      float v = x[base + t] * a + b;
      float gm = v > 0.0f ? g[base + t] : 0.0f;
      da += gm * x[base + t];
      db += gm;
    }
    sa[threadIdx.x] = da;
    sb[threadIdx.x] = db;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) {
        sa[threadIdx.x] += sa[threadIdx.x + half];
        sb[threadIdx.x] += sb[threadIdx.x + half];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      out[k] = sa[0];
      out[k + c] = sb[0];
    }
    __syncthreads();
  }
}

// BigGAN's residual join: out = h + x[:, :c] upsampled by s (1 or 2,
// nearest). h: b x c x hh x hw; x: b x xc x hh/s x hw/s.
extern "C" __global__ void skip_add(const float *h, const float *x, float *out, int n, int c,
                                    int hh, int hw, int xc, int s) {
  GRID_LOOP(i, n) {
    int col = i % hw;
    int row = (i / hw) % hh;
    int ch = (i / (hw * hh)) % c;
    long long bb = i / (hw * hh * c);
    int xh = hh / s, xw = hw / s;
    out[i] = h[i] + x[((bb * xc + ch) * xh + row / s) * xw + col / s];
  }
}

// Its gradient for x: g summed over each s x s window, zero in the
// channels c.. xc that the join dropped. dx: b x xc x xh x xw.
extern "C" __global__ void skip_add_dx(const float *g, float *dx, int n, int c, int xc, int xh,
                                       int xw, int s) {
  GRID_LOOP(i, n) {
    int col = i % xw;
    int row = (i / xw) % xh;
    int ch = (i / (xw * xh)) % xc;
    long long bb = i / (xw * xh * xc);
    float acc = 0.0f;
    if (ch < c) {
      int hh = xh * s, hw = xw * s;
      const float *gp = g + ((bb * c + ch) * hh + row * s) * hw + col * s;
      for (int di = 0; di < s; ++di)
        for (int dj = 0; dj < s; ++dj) acc += gp[di * hw + dj];
    }
    dx[i] = acc;
  }
}

// A conv's input gradient from its columns: cols b x (cin * kh * kw) x
// (ho * wo), the transposed weight times the output's gradient; dx at
// (b, c, y, x) sums, in the order of the taps, the columns of every
// output position whose window (stride sh x sw, padding ph x pw, dilation
// dh x dw: rows x columns) took it.
extern "C" __global__ void col2im(const float *cols, float *dx, int n, int cin, int h, int w,
                                  int kh, int kw, int ho, int wo, int sh, int sw, int ph,
                                  int pw, int dh, int dw) {
  GRID_LOOP(i, n) {
    int x = i % w;
    int y = (i / w) % h;
    int ch = (i / (w * h)) % cin;
    long long bb = i / (w * h * cin);
    const long long m = (long long)ho * wo;
    const float *cp = cols + (bb * cin + ch) * kh * kw * m;
    float acc = 0.0f;
    for (int ky = 0; ky < kh; ++ky) {
      int ry = y + ph - ky * dh;
      if (ry < 0 || ry % sh != 0 || ry / sh >= ho) continue;
      for (int kx = 0; kx < kw; ++kx) {
        int rx = x + pw - kx * dw;
        if (rx < 0 || rx % sw != 0 || rx / sw >= wo) continue;
        acc += cp[(ky * kw + kx) * m + (ry / sh) * wo + rx / sw];
      }
    }
    dx[i] = acc;
  }
}

// A conv's columns, laid out for one product per sample with the weight
// `[Cout, Cin * kh * kw]`: cols b x (cin * kh * kw) x (ho * wo), the input
// at (oy * sh - ph + ky * dh, ox * sw - pw + kx * dw), 0 outside it.
extern "C" __global__ void im2col(const float *x, float *cols, int n, int cin, int h, int w,
                                  int kh, int kw, int ho, int wo, int sh, int sw, int ph,
                                  int pw, int dh, int dw) {
  GRID_LOOP(i, n) {
    int m = ho * wo;
    int ox = i % wo;
    int oy = (i / wo) % ho;
    int kx = (i / m) % kw;
    int ky = (i / (m * kw)) % kh;
    long long bc = i / (m * kw * kh);  // sample * cin + channel
    int y = oy * sh - ph + ky * dh, x_ = ox * sw - pw + kx * dw;
    cols[i] = (y >= 0 && y < h && x_ >= 0 && x_ < w) ? x[(bc * h + y) * w + x_] : 0.0f;
  }
}

// out = y + bias[channel], then a ReLU (NaN kept) where relu != 0; y is
// b x channels x plane.
extern "C" __global__ void bias_act(const float *y, const float *bias, float *out, int n,
                                    int plane, int channels, int relu) {
  GRID_LOOP(i, n) {
    float v = y[i] + bias[(i / plane) % channels];
    out[i] = relu && !(v > 0.0f || v != v) ? 0.0f : v;
  }
}

// The search's head for two models (src/divergence/head.rs), one thread
// per sample. kind: 0 kl, 1 reverse-kl, 2 jeffreys, 3 tv, 4 js (weights
// w[0], w[1]; the others ignore w). As candle's ops define them: lp =
// (x - max) - log(sum(exp(x - max))), f = max(lp, -1e4), p = exp(f); the
// forward works them out in double, the backward in float.
#define LOG_PROB_FLOOR (-1e4f)

__device__ inline float floored(float lp) { return lp < LOG_PROB_FLOOR ? LOG_PROB_FLOOR : lp; }

// log p-bar of js per class: mm + log(exp(f1 - mm) w1 + exp(f2 - mm) w2),
// mm the larger of the two.
__device__ inline float log_mix(float f1, float f2, const float *w) {
  float mm = f1 < f2 ? f2 : f1;
  return logf(expf(f1 - mm) * w[0] + expf(f2 - mm) * w[1]) + mm;
}

// The maximum of a row of logits and ln sum exp(x - max), in double: the
// forward takes each log-probability and the divergence in double from the
// float logits and rounds them to float last (ops.rs's CPU twin says why).
__device__ void log_normaliser(const float *x, int k, double *m, double *ls) {
  float mx = NEG_INF;
  for (int j = 0; j < k; ++j)
    if (x[j] > mx) mx = x[j];
  double s = 0.0;
  for (int j = 0; j < k; ++j) s += exp((double)x[j] - (double)mx);
  *m = mx;
  *ls = log(s);
}

__device__ inline double floored64(double lp) { return lp < (double)LOG_PROB_FLOOR ? (double)LOG_PROB_FLOOR : lp; }

__device__ inline double log_mix64(double f1, double f2, const float *w) {
  double mm = f1 < f2 ? f2 : f1;
  return log(exp(f1 - mm) * (double)w[0] + exp(f2 - mm) * (double)w[1]) + mm;
}

// out: the divergence (b), then log p1 (b x k) and log p2 (b x k).
extern "C" __global__ void head_forward(const float *l1, const float *l2, const float *w,
                                        float *out, int b, int k, int kind) {
  GRID_LOOP(r, b) {
    const long long at = (long long)r * k;
    float *lp1 = out + b + at, *lp2 = out + b + (long long)b * k + at;
    double m1, ls1, m2, ls2;
    log_normaliser(l1 + at, k, &m1, &ls1);
    log_normaliser(l2 + at, k, &m2, &ls2);
    double d = 0.0, d2 = 0.0;
    for (int j = 0; j < k; ++j) {
      double e1 = (double)l1[at + j] - m1 - ls1, e2 = (double)l2[at + j] - m2 - ls2;
      lp1[j] = (float)e1;
      lp2[j] = (float)e2;
      double f1 = floored64(e1), f2 = floored64(e2);
      switch (kind) {
        case 0: d += exp(f1) * (f1 - f2); break;
        case 1: d += exp(f2) * (f2 - f1); break;
        case 2: d += (exp(f1) - exp(f2)) * (f1 - f2); break;
        case 3: d += fabs(exp(f1) - exp(f2)); break;
        default: {
          double lm = log_mix64(f1, f2, w);
          d += exp(f1) * (f1 - lm);
          d2 += exp(f2) * (f2 - lm);
        }
      }
    }
    if (kind == 3) d = d * 0.5;
    if (kind == 4) d = d * (double)w[0] + d2 * (double)w[1];
    out[r] = (float)d;
  }
}

// The gradients of the two models' logits (dl: model 1's b x k, then
// model 2's) from head_forward's log-probabilities and the divergence's
// gradient u (b): with G = dD/df per class and c = [lp >= floor],
// g = (G c) u and dl = g - exp(lp) sum(g).
extern "C" __global__ void head_backward(const float *packed, const float *u, const float *w,
                                         float *dl, int b, int k, int kind) {
  GRID_LOOP(r, b) {
    const long long at = (long long)r * k, second = (long long)b * k;
    const float *lp1 = packed + b + at, *lp2 = packed + b + second + at;
    float *d1 = dl + at, *d2 = dl + second + at;
    float ur = u[r], s1 = 0.0f, s2 = 0.0f;
    for (int j = 0; j < k; ++j) {
      float f1 = floored(lp1[j]), f2 = floored(lp2[j]);
      float p1 = expf(f1), p2 = expf(f2), g1, g2;
      switch (kind) {
        case 0: g1 = p1 * (f1 - f2); g2 = -p1; break;
        case 1: g1 = -p2; g2 = p2 * (f2 - f1); break;
        case 2: g1 = p1 * (f1 - f2) - p2; g2 = -(p2 * (f1 - f2) + p1); break;
        case 3: {
          float diff = p1 - p2;
          float sg = (float)(diff > 0.0f) - (float)(diff < 0.0f);
          g1 = (sg * p1) * 0.5f;
          g2 = (sg * p2) * -0.5f;
          break;
        }
        default: {
          float lm = log_mix(f1, f2, w);
          g1 = (p1 * (f1 - lm)) * w[0];
          g2 = (p2 * (f2 - lm)) * w[1];
        }
      }
      g1 = (g1 * (float)(lp1[j] >= LOG_PROB_FLOOR)) * ur;
      g2 = (g2 * (float)(lp2[j] >= LOG_PROB_FLOOR)) * ur;
      d1[j] = g1;
      d2[j] = g2;
      s1 += g1;
      s2 += g2;
    }
    for (int j = 0; j < k; ++j) {
      d1[j] = d1[j] - expf(lp1[j]) * s1;
      d2[j] = d2[j] - expf(lp2[j]) * s2;
    }
  }
}

// Adam's step (src/search/update.rs), one thread per element of z (n):
// state is z, m and v (n each); hp holds beta1, 1 - beta1, beta2,
// 1 - beta2, the bias corrections 1 / (1 - beta1^t) and 1 / (1 - beta2^t),
// epsilon and lr, as f32; out is the next state. The operations and their
// order are those of the search's Adam on candle's ops (each scaling is
// candle's affine, x * a + 0), so that the CPU twin gives the same bits.
extern "C" __global__ void adam_step(const float *g, const float *state, const float *hp,
                                     float *out, int n) {
  GRID_LOOP(i, n) {
    float gi = g[i];
    float m = (state[n + i] * hp[0] + 0.0f) + (gi * hp[1] + 0.0f);
    float v = (state[2LL * n + i] * hp[2] + 0.0f) + ((gi * gi) * hp[3] + 0.0f);
    float m_hat = m * hp[4] + 0.0f, v_hat = v * hp[5] + 0.0f;
    float update = (m_hat / (sqrtf(v_hat) + hp[6])) * hp[7] + 0.0f;
    out[i] = state[i] + update;
    out[n + i] = m;
    out[2LL * n + i] = v;
  }
}
