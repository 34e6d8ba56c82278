// Fused BatchNorm (+ residual add) + ReLU for training on CPU: bf16 activations in
// channels_last memory, seen as an (M, C) matrix (M = N*H*W rows, C channels, C % 16 == 0),
// fp32 statistics and affine parameters. Built and loaded by reslab/models/fused.py.
//
// Forward, two passes over x: per-channel sum and sum of squares (fp32 vector partial
// sums per block of rows, double across blocks and threads), then
//   y = relu(x * scale + shift [+ residual]),  scale = w / sqrt(var + eps),
//   shift = b - mean * scale,
// rounded to bf16 once. ATen's path (BatchNorm, add, ReLU as three ops) reads and writes
// the activation about twice as often.
// Backward, two passes: with g = dy * (y > 0),
//   db = sum(g), dw = sum(g * (x - mean)) * invstd,
//   dx = w * invstd * (g - db / M - (x - mean) * invstd^2 * sum(g * (x - mean)) / M),
// and the residual's gradient is g itself.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kBlock = 512;  // rows summed in fp32 before moving to double

// Rows per parallel task: about 128k elements, so that wide, short tensors (2048 channels
// at 7x7) are split between threads too.
inline int64_t grain(int64_t C) { return std::max<int64_t>(16, (int64_t{1} << 17) / C); }

inline __m512 load16(const at::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

inline void store16(at::BFloat16* p, __m512 v) {  // round to nearest even
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// Two per-channel sums over the rows: `row(m, a, b)` adds row m's contribution to the
// C/16 vector accumulators a and b. Returns them in double.
template <typename Row>
void channel_sums(int64_t M, int64_t C, std::vector<double>& sa, std::vector<double>& sb, Row row) {
  const int64_t nb = C / 16;
  const int threads = at::get_num_threads();
  std::vector<double> pa(threads * C, 0.0), pb(threads * C, 0.0);
  at::parallel_for(0, M, grain(C), [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    std::vector<__m512> a(nb), b(nb);
    alignas(64) float tmp[16];
    for (int64_t m0 = begin; m0 < end; m0 += kBlock) {
      const int64_t m1 = std::min(end, m0 + kBlock);
      for (int64_t k = 0; k < nb; ++k) a[k] = b[k] = _mm512_setzero_ps();
      for (int64_t m = m0; m < m1; ++m) row(m, a.data(), b.data());
      for (int64_t k = 0; k < nb; ++k) {
        _mm512_store_ps(tmp, a[k]);
        for (int i = 0; i < 16; ++i) pa[tid * C + 16 * k + i] += tmp[i];
        _mm512_store_ps(tmp, b[k]);
        for (int i = 0; i < 16; ++i) pb[tid * C + 16 * k + i] += tmp[i];
      }
    }
  });
  sa.assign(C, 0.0);
  sb.assign(C, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t c = 0; c < C; ++c) {
      sa[c] += pa[t * C + c];
      sb[c] += pb[t * C + c];
    }
}

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && t.scalar_type() == at::kBFloat16 && t.size(1) % 16 == 0,
              "bn_act: ", name, " must be a contiguous bf16 (M, C) matrix with C % 16 == 0");
}

void check_vec(const at::Tensor& t, int64_t C, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.numel() == C && t.is_contiguous() && t.scalar_type() == at::kFloat,
              "bn_act: ", name, " must be a contiguous fp32 vector of one value per channel");
}

}  // namespace

// x, residual: (M, C) bf16 contiguous; weight, bias: (C,) fp32.
// Returns y (M, C) bf16, and the batch mean, invstd and biased variance (C,) fp32.
std::vector<at::Tensor> bn_act_forward(const at::Tensor& x, const at::Tensor& weight,
                                       const at::Tensor& bias,
                                       const c10::optional<at::Tensor>& residual, double eps) {
  check_rows(x, "x");
  if (residual.has_value()) {
    check_rows(*residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes(), "bn_act: residual and x differ in shape");
  }
  const int64_t C = x.size(1), M = x.size(0), nb = C / 16;
  check_vec(weight, C, "weight");
  check_vec(bias, C, "bias");
  const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
  std::vector<double> s, q;
  channel_sums(M, C, s, q, [&](int64_t m, __m512* a, __m512* b) {
    const at::BFloat16* r = xp + m * C;
    for (int64_t k = 0; k < nb; ++k) {
      const __m512 v = load16(r + 16 * k);
      a[k] = _mm512_add_ps(a[k], v);
      b[k] = _mm512_fmadd_ps(v, v, b[k]);
    }
  });
  auto opts = weight.options();
  at::Tensor mean = at::empty({C}, opts), invstd = at::empty({C}, opts), var = at::empty({C}, opts);
  std::vector<float> scale(C), shift(C);
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double mu = s[c] / M;
    const double v = std::max(q[c] / M - mu * mu, 0.0);
    const double is = 1.0 / std::sqrt(v + eps);
    mean.data_ptr<float>()[c] = static_cast<float>(mu);
    invstd.data_ptr<float>()[c] = static_cast<float>(is);
    var.data_ptr<float>()[c] = static_cast<float>(v);
    scale[c] = static_cast<float>(w[c] * is);
    shift[c] = static_cast<float>(b[c] - mu * w[c] * is);
  }
  at::Tensor y = at::empty_like(x);
  at::BFloat16* yp = y.data_ptr<at::BFloat16>();
  const at::BFloat16* rp = residual.has_value() ? residual->data_ptr<at::BFloat16>() : nullptr;
  at::parallel_for(0, M, grain(C), [&](int64_t begin, int64_t end) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t k = 0; k < nb; ++k) {
        const int64_t off = m * C + 16 * k;
        __m512 v = _mm512_fmadd_ps(load16(xp + off), _mm512_loadu_ps(&scale[16 * k]),
                                   _mm512_loadu_ps(&shift[16 * k]));
        if (rp) v = _mm512_add_ps(v, load16(rp + off));
        v = _mm512_max_ps(v, zero);
        store16(yp + off, v);
      }
    }
  });
  return {y, mean, invstd, var};
}

// dy, x, y: (M, C) bf16; weight, mean, invstd: (C,) fp32.
// Returns dx (undefined unless want_dx), the residual's gradient (undefined unless
// want_dres), dw and db.
std::vector<at::Tensor> bn_act_backward(const at::Tensor& dy, const at::Tensor& x,
                                        const at::Tensor& y, const at::Tensor& weight,
                                        const at::Tensor& mean, const at::Tensor& invstd,
                                        bool want_dx, bool want_dres) {
  check_rows(dy, "dy");
  check_rows(x, "x");
  check_rows(y, "y");
  TORCH_CHECK(dy.sizes() == x.sizes() && y.sizes() == x.sizes(), "bn_act: dy, x and y differ in shape");
  const int64_t C = x.size(1), M = x.size(0), nb = C / 16;
  check_vec(weight, C, "weight");
  check_vec(mean, C, "mean");
  check_vec(invstd, C, "invstd");
  const at::BFloat16* dyp = dy.data_ptr<at::BFloat16>();
  const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
  const at::BFloat16* yp = y.data_ptr<at::BFloat16>();
  const float* mu = mean.data_ptr<float>();
  const float* is = invstd.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  at::Tensor dres;
  at::BFloat16* gp = nullptr;
  if (want_dres) {
    dres = at::empty_like(dy);
    gp = dres.data_ptr<at::BFloat16>();
  }
  auto masked = [&](int64_t off) {
    // ReLU's gradient: dy where the output is positive, 0 elsewhere
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(load16(yp + off), _mm512_setzero_ps(), _CMP_GT_OQ),
                               load16(dyp + off));
  };
  std::vector<double> sg, sgx;
  channel_sums(M, C, sg, sgx, [&](int64_t m, __m512* a, __m512* b) {
    for (int64_t k = 0; k < nb; ++k) {
      const int64_t off = m * C + 16 * k;
      const __m512 g = masked(off);
      if (gp) store16(gp + off, g);
      a[k] = _mm512_add_ps(a[k], g);
      b[k] = _mm512_fmadd_ps(g, _mm512_sub_ps(load16(xp + off), _mm512_loadu_ps(mu + 16 * k)), b[k]);
    }
  });
  auto opts = weight.options();
  at::Tensor dw = at::empty({C}, opts), db = at::empty({C}, opts);
  std::vector<float> k1(C), k2(C), k3(C);
  for (int64_t c = 0; c < C; ++c) {
    dw.data_ptr<float>()[c] = static_cast<float>(sgx[c] * is[c]);
    db.data_ptr<float>()[c] = static_cast<float>(sg[c]);
    const double a = static_cast<double>(w[c]) * is[c];
    const double bx = -a * is[c] * is[c] * sgx[c] / M;
    k1[c] = static_cast<float>(a);
    k2[c] = static_cast<float>(bx);
    k3[c] = static_cast<float>(-a * sg[c] / M - bx * mu[c]);
  }
  at::Tensor dx;
  if (want_dx) {
    dx = at::empty_like(x);
    at::BFloat16* dxp = dx.data_ptr<at::BFloat16>();
    at::parallel_for(0, M, grain(C), [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        for (int64_t k = 0; k < nb; ++k) {
          const int64_t off = m * C + 16 * k;
          const __m512 g = gp ? load16(gp + off) : masked(off);
          const __m512 lin = _mm512_fmadd_ps(load16(xp + off), _mm512_loadu_ps(&k2[16 * k]),
                                             _mm512_loadu_ps(&k3[16 * k]));
          store16(dxp + off, _mm512_fmadd_ps(g, _mm512_loadu_ps(&k1[16 * k]), lin));
        }
      }
    });
  }
  return {dx, dres, dw, db};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &bn_act_forward, "fused BatchNorm (+add) + ReLU, training forward",
        py::call_guard<py::gil_scoped_release>());
  m.def("backward", &bn_act_backward, "its backward", py::call_guard<py::gil_scoped_release>());
}
