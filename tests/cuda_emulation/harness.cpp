// Runs gevaldi's CUDA kernels (src/engine/cuda/kernels.cu, included as
// is) on the CPU and checks them against naive loops: every block's
// threads are real threads meeting at __syncthreads (a C++20 barrier),
// blocks run one after another, and grids are small so that each
// grid-stride loop goes round more than once. Built and run by
// tests/cuda_kernels.rs; prints one line per kernel and exits 1 on a
// mismatch.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

struct Dim3 {
  unsigned x, y, z;
};
thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim, gridDim;
static std::barrier<> *block_barrier;
static void __syncthreads() { block_barrier->arrive_and_wait(); }
static float __int_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
#define __global__
#define __device__
#define __shared__ static
#include "../../src/engine/cuda/kernels.cu"

template <class F> static void launch(unsigned grid, unsigned block, F f) {
  gridDim = {grid, 1, 1};
  blockDim = {block, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    std::barrier<> bar(block);
    block_barrier = &bar;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, t] {
        threadIdx = {t, 0, 0};
        blockIdx = {b, 0, 0};
        f();
      });
    for (auto &t : threads) t.join();
  }
}
// A grid of 3 blocks of 32 threads: fewer threads than elements.
#define RUN(call) launch(3, 32, [&] { call; })

static int failures = 0;
static int checks = 0;
#define CHECK(cond, ...)                   \
  do {                                     \
    ++checks;                              \
    if (!(cond)) {                         \
      if (++failures <= 10) {              \
        std::printf("MISMATCH: ");         \
        std::printf(__VA_ARGS__);          \
        std::printf("\n");                 \
      }                                    \
    }                                      \
  } while (0)

static std::mt19937 rng(7);
static float uniform() { return std::uniform_real_distribution<float>(-1, 1)(rng); }
static int below(int n) { return (int)(rng() % (unsigned)n); }
static bool same(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// PyTorch's output length of a max-pool along one axis (gevaldi's
// PoolAxis::len): the window spans (k - 1) * d + 1 positions.
static int pool_len(int n, int k, int s, int p, int d, bool ceil_mode) {
  int span = n + 2 * p, e = (k - 1) * d + 1;
  if (span < e) return 0;
  int o = ceil_mode ? (span - e + s - 1) / s + 1 : (span - e) / s + 1;
  if (ceil_mode && (o - 1) * s >= n + p) --o;
  return o;
}

static void max_pools() {
  int before = failures;
  for (int trial = 0; trial < 400; ++trial) {
    // Half the trials draw each axis's kernel, stride, padding and
    // dilation on its own; the others one square window, dilation 1.
    bool axes = trial % 2 == 1;
    int planes = 1 + below(3), h = 1 + below(9), w = 1 + below(9);
    int kh = 1 + below(4), sh = 1 + below(3), ph = below(kh / 2 + 1), dh = 1;
    int kw = kh, sw = sh, pw = ph, dw = 1;
    if (axes) {
      kw = 1 + below(4), sw = 1 + below(3), pw = below(kw / 2 + 1);
      dh = 1 + below(3), dw = 1 + below(3);
    }
    bool ceil_mode = below(2);
    int ho = pool_len(h, kh, sh, ph, dh, ceil_mode), wo = pool_len(w, kw, sw, pw, dw, ceil_mode);
    if (ho <= 0 || wo <= 0) continue;
    // The padded plane as gevaldi lays it out (src/zoo/pooling.rs's padded_len).
    int wp = std::max(w + pw, (kw - 1) * dw + sw * wo);
    int eh = (kh - 1) * dh + 1, ew = (kw - 1) * dw + 1;
    std::vector<float> x(planes * h * w);
    for (auto &v : x) v = (float)below(3);  // small integers: ties
    if (trial % 5 == 0) x[below((int)x.size())] = NAN;
    int n = planes * ho * wo;
    std::vector<unsigned> pos(n);
    std::vector<float> y(n), g(n), dx(planes * h * w), ref(planes * h * w, 0.f);
    for (auto &v : g) v = uniform();
    RUN(maxpool_argmax(x.data(), pos.data(), n, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw, wp));
    RUN(maxpool_gather(x.data(), pos.data(), y.data(), n, ho * wo, h, w, ph, pw, wp));
    RUN(maxpool_backward(g.data(), pos.data(), dx.data(), planes * h * w, h, w, ho, wo, eh, ew, sh,
                         sw, ph, pw, wp));
    // Naive: the first maximum in row-major order (a NaN beats any
    // number), padding -inf; each output's gradient added at its maximum,
    // outputs in order.
    for (int pl = 0; pl < planes; ++pl)
      for (int oy = 0; oy < ho; ++oy)
        for (int ox = 0; ox < wo; ++ox) {
          float m = 0;
          int br = 0, bc = 0;
          bool any = false;
          for (int di = 0; di < kh; ++di)
            for (int dj = 0; dj < kw; ++dj) {
              int r = oy * sh + di * dh - ph, c = ox * sw + dj * dw - pw;
              float v = (r >= 0 && r < h && c >= 0 && c < w) ? x[(pl * h + r) * w + c] : -INFINITY;
              if (!any || (!std::isnan(m) && (v > m || std::isnan(v)))) {
                m = v;
                br = r;
                bc = c;
                any = true;
              }
            }
          int o = (pl * ho + oy) * wo + ox;
          CHECK(same(y[o], m), "maxpool value: trial %d output %d: %g, naive %g", trial, o, y[o], m);
          CHECK(pos[o] == (unsigned)((br + ph) * wp + bc + pw),
                "maxpool position: trial %d output %d", trial, o);
          if (br >= 0 && br < h && bc >= 0 && bc < w) ref[(pl * h + br) * w + bc] += g[o];
        }
    for (size_t i = 0; i < dx.size(); ++i)
      CHECK(dx[i] == ref[i],
            "maxpool gradient: trial %d (h %d w %d k %dx%d s %dx%d p %dx%d d %dx%d) at %zu: %g, "
            "naive %g",
            trial, h, w, kh, kw, sh, sw, ph, pw, dh, dw, i, dx[i], ref[i]);
  }
  std::printf("maxpool_argmax, maxpool_gather, maxpool_backward: %s\n", failures == before ? "ok" : "FAILED");
}

static void elementwise() {
  int before = failures;
  int b = 2, c = 3, plane = 37, n = b * c * plane;
  // ab: each sample's c scales, then its c shifts.
  std::vector<float> x(n), y(n), g(n), ab(2 * b * c), out(n), out2(n);
  for (auto &v : x) v = uniform();
  for (auto &v : g) v = uniform();
  for (auto &v : ab) v = uniform();
  auto scale = [&](int j) { return ab[(j / c) * 2 * c + j % c]; };
  auto shift = [&](int j) { return ab[(j / c) * 2 * c + c + j % c]; };
  x[5] = NAN;
  RUN(scale_shift_relu(x.data(), ab.data(), y.data(), n, plane, c));
  for (int i = 0; i < n; ++i) {
    volatile float prod = x[i] * scale(i / plane);  // rounded, then added
    float v = prod + shift(i / plane);
    float want = std::isnan(v) ? v : (v > 0 ? v : 0.f);
    CHECK(same(y[i], want), "scale_shift_relu at %d: %g, naive %g", i, y[i], want);
  }
  RUN(relu_backward(g.data(), y.data(), out.data(), n));
  for (int i = 0; i < n; ++i) {
    float want = y[i] <= 0 ? 0.f : g[i];  // a NaN output passes g on
    CHECK(same(out[i], want), "relu_backward at %d", i);
  }
  // The output worked out again from x.
  RUN(scale_shift_relu_dx(g.data(), x.data(), ab.data(), out2.data(), n, plane, c));
  for (int i = 0; i < n; ++i) {
    float want = y[i] > 0 ? g[i] * scale(i / plane) : 0.f;
    CHECK(same(out2[i], want), "scale_shift_relu_dx at %d", i);
  }
  std::printf("scale_shift_relu, relu_backward, scale_shift_relu_dx: %s\n",
              failures == before ? "ok" : "FAILED");
}

static void scale_shift_sums() {
  int before = failures;
  // Planes smaller and larger than a block; more planes than blocks.
  for (int plane : {1, 37, 256, 700}) {
    int b = 2, c = 3, planes = b * c, n = planes * plane;
    std::vector<float> g(n), x(n), ab(2 * planes), out(2 * planes);
    for (int i = 0; i < n; ++i) {
      g[i] = uniform();
      x[i] = uniform();
    }
    for (auto &v : ab) v = uniform();
    launch(2, 256, [&] { scale_shift_relu_dab(g.data(), x.data(), ab.data(), out.data(), planes, plane, c); });
    for (int j = 0; j < planes; ++j) {
      int k = (j / c) * 2 * c + j % c;  // plane j's scale in ab; its shift c further
      double da = 0, db = 0, mag = 0;
      for (int t = 0; t < plane; ++t) {
        volatile float prod = x[j * plane + t] * ab[k];  // rounded, then added
        float y = prod + ab[k + c];
        double gm = y > 0 ? g[j * plane + t] : 0;
        da += gm * x[j * plane + t];
        db += gm;
        mag += std::fabs(gm);
      }
      double tol = 1e-5 * (mag + 1);
      CHECK(std::fabs(out[k] - da) <= tol, "scale_shift_relu_dab: plane %d of %d: da %g, naive %g", j, plane,
            out[k], da);
      CHECK(std::fabs(out[k + c] - db) <= tol, "scale_shift_relu_dab: plane %d of %d: db %g, naive %g", j,
            plane, out[k + c], db);
    }
  }
  std::printf("scale_shift_relu_dab: %s\n", failures == before ? "ok" : "FAILED");
}

static void skip_adds() {
  int before = failures;
  for (int trial = 0; trial < 50; ++trial) {
    int b = 1 + below(2), c = 1 + below(3), xc = c + below(3), s = 1 + below(2), xh = 1 + below(4),
        xw = 1 + below(4);
    int hh = xh * s, hw = xw * s, n = b * c * hh * hw, nx = b * xc * xh * xw;
    std::vector<float> h(n), x(nx), out(n), dx(nx);
    for (auto &v : h) v = uniform();
    for (auto &v : x) v = uniform();
    RUN(skip_add(h.data(), x.data(), out.data(), n, c, hh, hw, xc, s));
    for (int bb = 0; bb < b; ++bb)
      for (int ch = 0; ch < c; ++ch)
        for (int r = 0; r < hh; ++r)
          for (int q = 0; q < hw; ++q) {
            int i = ((bb * c + ch) * hh + r) * hw + q;
            CHECK(out[i] == h[i] + x[((bb * xc + ch) * xh + r / s) * xw + q / s], "skip_add: trial %d at %d",
                  trial, i);
          }
    RUN(skip_add_dx(h.data(), dx.data(), nx, c, xc, xh, xw, s));
    for (int bb = 0; bb < b; ++bb)
      for (int ch = 0; ch < xc; ++ch)
        for (int r = 0; r < xh; ++r)
          for (int q = 0; q < xw; ++q) {
            float acc = 0;
            if (ch < c)
              for (int di = 0; di < s; ++di)
                for (int dj = 0; dj < s; ++dj) acc += h[((bb * c + ch) * hh + r * s + di) * hw + q * s + dj];
            CHECK(dx[((bb * xc + ch) * xh + r) * xw + q] == acc, "skip_add_dx: trial %d", trial);
          }
  }
  std::printf("skip_add, skip_add_dx: %s\n", failures == before ? "ok" : "FAILED");
}

// im2col and col2im on the same random conv shapes: each tap of each
// output position reads one input position (or padding), im2col copies it
// into its column and col2im adds the column back there. Stride, padding
// and dilation per axis (rows, columns): the same on both in even trials,
// drawn for each in odd ones.
static void conv_columns() {
  int before = failures;
  for (int trial = 0; trial < 400; ++trial) {
    int b = 1 + below(2), cin = 1 + below(3), h = 1 + below(10), w = 1 + below(10), kh = 1 + below(4),
        kw = 1 + below(4), sh = 1 + below(4), ph = below(3), dh = 1 + below(2);
    int sw = sh, pw = ph, dw = dh;
    if (trial % 2) sw = 1 + below(4), pw = below(4), dw = 1 + below(3);
    int eh = h + 2 * ph - dh * (kh - 1) - 1, ew = w + 2 * pw - dw * (kw - 1) - 1;
    if (eh < 0 || ew < 0) continue;
    int ho = eh / sh + 1, wo = ew / sw + 1, m = ho * wo, K = cin * kh * kw;
    std::vector<float> x(b * cin * h * w), cols(b * K * m), got_cols(b * K * m), dx(b * cin * h * w),
        ref(b * cin * h * w, 0.f);
    for (auto &v : x) v = uniform();
    for (auto &v : cols) v = uniform();
    RUN(im2col(x.data(), got_cols.data(), b * K * m, cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw));
    RUN(col2im(cols.data(), dx.data(), b * cin * h * w, cin, h, w, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw));
    for (int bb = 0; bb < b; ++bb)
      for (int c = 0; c < cin; ++c)
        for (int ky = 0; ky < kh; ++ky)
          for (int kx = 0; kx < kw; ++kx)
            for (int oy = 0; oy < ho; ++oy)
              for (int ox = 0; ox < wo; ++ox) {
                int y = oy * sh - ph + ky * dh, xx = ox * sw - pw + kx * dw;
                bool inside = y >= 0 && y < h && xx >= 0 && xx < w;
                int i = ((bb * cin + c) * kh * kw + ky * kw + kx) * m + oy * wo + ox;
                float want = inside ? x[((bb * cin + c) * h + y) * w + xx] : 0.f;
                CHECK(got_cols[i] == want, "im2col: trial %d at %d", trial, i);
                if (inside) ref[((bb * cin + c) * h + y) * w + xx] += cols[i];
              }
    for (size_t i = 0; i < dx.size(); ++i)
      CHECK(std::fabs(dx[i] - ref[i]) <= 1e-5f,
            "col2im: trial %d (k %dx%d s %dx%d p %dx%d d %dx%d) at %zu: %g, naive %g", trial, kh, kw, sh, sw, ph,
            pw, dh, dw, i, dx[i], ref[i]);
  }
  std::printf("im2col, col2im: %s\n", failures == before ? "ok" : "FAILED");
}

static void bias_acts() {
  int before = failures;
  int b = 2, c = 5, plane = 13, n = b * c * plane;
  std::vector<float> y(n), bias(c), out(n);
  for (auto &v : y) v = uniform();
  for (auto &v : bias) v = uniform();
  y[3] = NAN;
  for (int relu : {0, 1}) {
    RUN(bias_act(y.data(), bias.data(), out.data(), n, plane, c, relu));
    for (int i = 0; i < n; ++i) {
      float v = y[i] + bias[(i / plane) % c];
      float want = relu && !(v > 0 || std::isnan(v)) ? 0.f : v;
      CHECK(same(out[i], want), "bias_act (relu %d) at %d: %g, naive %g", relu, i, out[i], want);
    }
  }
  std::printf("bias_act: %s\n", failures == before ? "ok" : "FAILED");
}

// The divergence of one row in double, from its definition (js's mixture
// max-shifted, as a mixture of two underflowed probabilities is 0).
static double head_row(const double *x1, const double *x2, int k, int kind, const float *w) {
  std::vector<double> f[2];
  const double *xs[2] = {x1, x2};
  for (int m = 0; m < 2; ++m) {
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < k; ++j) mx = std::max(mx, xs[m][j]);
    for (int j = 0; j < k; ++j) s += std::exp(xs[m][j] - mx);
    for (int j = 0; j < k; ++j) f[m].push_back(std::max(xs[m][j] - mx - std::log(s), -1e4));
  }
  double d = 0;
  for (int j = 0; j < k; ++j) {
    double f1 = f[0][j], f2 = f[1][j], p1 = std::exp(f1), p2 = std::exp(f2);
    if (kind == 0) d += p1 * (f1 - f2);
    if (kind == 1) d += p2 * (f2 - f1);
    if (kind == 2) d += p1 * (f1 - f2) + p2 * (f2 - f1);
    if (kind == 3) d += 0.5 * std::fabs(p1 - p2);
    if (kind == 4) {
      double mm = std::max(f1, f2);
      double lm = mm + std::log(w[0] * std::exp(f1 - mm) + w[1] * std::exp(f2 - mm));
      d += w[0] * p1 * (f1 - lm) + w[1] * p2 * (f2 - lm);
    }
  }
  return d;
}

// head_forward against the definitions, and head_backward against central
// differences of them (in double), for every kind, with logits spread wide
// enough that some log-probabilities fall below the floor; grids of 4
// threads for up to 7 samples, so that the loop over samples goes round.
static void heads() {
  int before = failures;
  const char *names[] = {"kl", "reverse-kl", "jeffreys", "tv", "js"};
  for (int kind = 0; kind < 5; ++kind)
    for (double spread : {3.0, 3e4}) {
      int b = 5 + below(3), k = 2 + below(11);
      std::vector<float> l(2 * b * k), w = {0.25f, 0.75f}, out(b + 2 * b * k), u(b), dl(2 * b * k);
      for (auto &v : l) v = (float)(uniform() * spread);
      for (auto &v : u) v = 1.0f + 0.5f * uniform();
      const float *l1 = l.data(), *l2 = l.data() + b * k;
      launch(2, 2, [&] { head_forward(l1, l2, w.data(), out.data(), b, k, kind); });
      launch(2, 2, [&] { head_backward(out.data(), u.data(), w.data(), dl.data(), b, k, kind); });
      for (int r = 0; r < b; ++r) {
        std::vector<double> x1(l1 + r * k, l1 + (r + 1) * k), x2(l2 + r * k, l2 + (r + 1) * k);
        double d = head_row(x1.data(), x2.data(), k, kind, w.data());
        CHECK(std::fabs(out[r] - d) <= 1e-5 * (1 + std::fabs(d)), "head_forward %s (spread %g): sample %d: %g, naive %g",
              names[kind], spread, r, out[r], d);
        for (int m = 0; m < 2; ++m) {
          const std::vector<double> &x = m == 0 ? x1 : x2;
          double mx = -INFINITY, s = 0;
          for (double v : x) mx = std::max(mx, v);
          for (double v : x) s += std::exp(v - mx);
          for (int j = 0; j < k; ++j) {
            double lp = x[j] - mx - std::log(s), got = out[b + m * b * k + r * k + j];
            CHECK(std::fabs(got - lp) <= 1e-5 * (1 + std::fabs(lp)), "head_forward %s: log p%d at %d,%d: %g, naive %g",
                  names[kind], m + 1, r, j, got, lp);
          }
        }
        // Central differences, scaled by the sample's u.
        std::vector<double> fd(2 * k);
        double top = 0, h = 1e-4 * std::max(1.0, spread / 100);
        for (int m = 0; m < 2; ++m)
          for (int j = 0; j < k; ++j) {
            std::vector<double> a = x1, c = x2;
            (m == 0 ? a : c)[j] += h;
            double up = head_row(a.data(), c.data(), k, kind, w.data());
            (m == 0 ? a : c)[j] -= 2 * h;
            double down = head_row(a.data(), c.data(), k, kind, w.data());
            fd[m * k + j] = (up - down) / (2 * h) * u[r];
            top = std::max(top, std::fabs(fd[m * k + j]));
          }
        for (int m = 0; m < 2; ++m)
          for (int j = 0; j < k; ++j) {
            double got = dl[m * b * k + r * k + j], want = fd[m * k + j];
            CHECK(std::fabs(got - want) <= 1e-3 * (1 + top), "head_backward %s (spread %g): model %d at %d,%d: %g, central differences %g",
                  names[kind], spread, m + 1, r, j, got, want);
          }
      }
    }
  std::printf("head_forward, head_backward: %s\n", failures == before ? "ok" : "FAILED");
}

// adam_step over three steps, the state fed back, against Adam in double
// (PyTorch's form: m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)).
static void adam_steps() {
  int before = failures;
  int n = 203;
  double b1 = 0.9, b2 = 0.999, eps = 1e-8, lr = 0.05;
  std::vector<float> state(3 * n, 0.f), next(3 * n);
  std::vector<double> z(n), m(n, 0.0), v(n, 0.0);
  for (int i = 0; i < n; ++i) z[i] = state[i] = uniform();
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g(n);
    for (int i = 0; i < n; ++i) g[i] = i % 7 == 0 ? 0.f : uniform() * (i % 3 == 0 ? 100.f : 1.f);
    double bc1 = 1 / (1 - std::pow(b1, t)), bc2 = 1 / (1 - std::pow(b2, t));
    float hp[8] = {(float)b1, (float)(1 - b1), (float)b2, (float)(1 - b2), (float)bc1, (float)bc2, (float)eps,
                   (float)lr};
    RUN(adam_step(g.data(), state.data(), hp, next.data(), n));
    for (int i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
      z[i] += lr * (m[i] * bc1) / (std::sqrt(v[i] * bc2) + eps);
      CHECK(std::fabs(next[i] - z[i]) <= 1e-5 * (1 + std::fabs(z[i])), "adam_step: step %d, z[%d]: %g, naive %g", t, i,
            next[i], z[i]);
      CHECK(std::fabs(next[n + i] - m[i]) <= 1e-5 * (1 + std::fabs(m[i])), "adam_step: step %d, m[%d]", t, i);
      CHECK(std::fabs(next[2 * n + i] - v[i]) <= 1e-5 * (1 + std::fabs(v[i])), "adam_step: step %d, v[%d]", t, i);
    }
    state = next;
  }
  std::printf("adam_step: %s\n", failures == before ? "ok" : "FAILED");
}

// The grid-stride loops (GRID_LOOP) where an int index would overflow: n
// past 2^30, with a grid of one thread per element (blocks of 256, as
// src/engine/cuda/ops.rs launches: the grid rounds n up, to 2^31 at n =
// 2^31 - 1) and with a grid clamped at 65535 blocks. The indices of the
// first block's and the last two blocks' threads, then relu_backward
// itself in the last two blocks at n = 2^31 - 1 on a window of the arrays
// (its indices below the window are never read: other blocks' work).
static void grid_loops() {
  int before = failures;
  for (long long n : {(1LL << 30) + 1, (1LL << 31) - 300, (1LL << 31) - 1})
    for (unsigned blocks : {(unsigned)((n + 255) / 256), 65535u}) {
      blockDim = {256, 1, 1};
      gridDim = {blocks, 1, 1};
      long long stride = 256LL * blocks;
      for (unsigned b : {0u, blocks - 2, blocks - 1})
        for (unsigned t = 0; t < 256; ++t) {
          blockIdx = {b, 0, 0};
          threadIdx = {t, 0, 0};
          long long want = 256LL * b + t, visits = 0;
          bool ok = true;
          GRID_LOOP(i, (int)n) {
            ok = ok && (long long)i == want && want < n;
            want += stride;
            if (!ok || ++visits > n / stride + 1) {
              ok = false;
              break;
            }
          }
          CHECK(ok && want >= n, "GRID_LOOP: n %lld, %u blocks: block %u thread %u", n, blocks, b, t);
        }
    }
  const long long n = (1LL << 31) - 1;
  const unsigned blocks = (unsigned)((n + 255) / 256);
  const long long lo = 256LL * (blocks - 2), len = n - lo;
  std::vector<float> g(len), y(len), dx(len, NAN);
  for (long long j = 0; j < len; ++j) {
    g[j] = uniform();
    y[j] = j % 3 == 0 ? 0.f : 1.f;
  }
  blockDim = {256, 1, 1};
  gridDim = {blocks, 1, 1};
  for (unsigned b = blocks - 2; b < blocks; ++b)
    for (unsigned t = 0; t < 256; ++t) {
      blockIdx = {b, 0, 0};
      threadIdx = {t, 0, 0};
      relu_backward(g.data() - lo, y.data() - lo, dx.data() - lo, (int)n);
    }
  for (long long j = 0; j < len; ++j)
    CHECK(dx[j] == (y[j] <= 0 ? 0.f : g[j]), "relu_backward at %lld of 2^31 - 1", lo + j);
  std::printf("grid-stride loops past 2^30 elements: %s\n", failures == before ? "ok" : "FAILED");
}

int main() {
  max_pools();
  conv_columns();
  bias_acts();
  elementwise();
  scale_shift_sums();
  skip_adds();
  heads();
  adam_steps();
  grid_loops();
  std::printf("%d checks, %d mismatches\n", checks, failures);
  return failures != 0;
}
