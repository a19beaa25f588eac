// AVX2/FMA decode attention for one head; called only after the runtime CPU check (runtime.h).
// Keys are scored eight at a time and the softmax's exp is vectorized: per key, a one-key-at-a-time
// loop spends more on horizontal sums and a scalar expf than on the dot product itself.
#include <immintrin.h>

#include <math.h>

#include "attention_kernel.h"
#include "vec_math_avx2.h"

namespace pensieve::kernels {
namespace {

// Value columns kept in registers while the keys stream past.
constexpr int kValueChunk = 64;

// [sum(a0), sum(a1), ..., sum(a7)]
inline __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  const __m256 s01 = _mm256_hadd_ps(a0, a1), s23 = _mm256_hadd_ps(a2, a3);
  const __m256 s45 = _mm256_hadd_ps(a4, a5), s67 = _mm256_hadd_ps(a6, a7);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  // s0123 = [0 1 2 3 | 0 1 2 3] (low and high 128-bit halves), likewise s4567.
  return _mm256_add_ps(
      _mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

inline float dot(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  for (; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

// scale * q . k_l for eight consecutive keys; head_dim is a multiple of 8.
inline __m256 score8(const HeadArgs& a, int l) {
  const float* k = a.k + l * a.k_stride;
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) {
    acc[j] = _mm256_setzero_ps();
  }
  for (int d = 0; d < a.head_dim; d += 8) {
    const __m256 q = _mm256_loadu_ps(a.q + d);
    for (int j = 0; j < 8; ++j) {
      acc[j] = _mm256_fmadd_ps(q, _mm256_loadu_ps(k + j * a.k_stride + d), acc[j]);
    }
  }
  return _mm256_mul_ps(
      _mm256_set1_ps(a.scale), hsum8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]));
}

inline float masked(const HeadArgs& a, int l, float s) {
  if (a.mask_kind == MaskKind::kBool) {
    return static_cast<const bool*>(a.mask)[l * a.mask_stride] ? s : -INFINITY;
  }
  if (a.mask_kind == MaskKind::kAdditive) {
    return s + static_cast<const float*>(a.mask)[l * a.mask_stride];
  }
  return s;
}

// out[d0, d0 + width) = sum_l p_l * v_l[d0, d0 + width), width <= kValueChunk and a multiple of 8.
template <int Width>
inline void weighted_values(const HeadArgs& a, const float* p, int d0) {
  __m256 acc[Width / 8];
  for (int i = 0; i < Width / 8; ++i) {
    acc[i] = _mm256_setzero_ps();
  }
  for (int l = 0; l < a.length; ++l) {
    const __m256 weight = _mm256_broadcast_ss(p + l);
    const float* v = a.v + l * a.v_stride + d0;
    for (int i = 0; i < Width / 8; ++i) {
      acc[i] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
  }
  for (int i = 0; i < Width / 8; ++i) {
    _mm256_storeu_ps(a.out + d0 + 8 * i, acc[i]);
  }
}

} // namespace

void attend_avx2(const HeadArgs& a, float* scores) {
  // Scores, eight keys at a time where the rows allow it.
  int l = 0;
  if (a.head_dim % 8 == 0) {
    for (; l + 8 <= a.length; l += 8) {
      _mm256_storeu_ps(scores + l, score8(a, l));
    }
  }
  for (; l < a.length; ++l) {
    scores[l] = a.scale * dot(a.q, a.k + l * a.k_stride, a.head_dim);
  }
  float max = -INFINITY;
  for (l = 0; l < a.length; ++l) {
    scores[l] = masked(a, l, scores[l]);
    max = scores[l] > max ? scores[l] : max;
  }
  if (max == -INFINITY) {
    for (int d = 0; d < a.value_dim; ++d) {
      a.out[d] = 0.0f; // every position masked: nothing to attend to
    }
    return;
  }
  // Probabilities, normalized before they weigh the values.
  const __m256 max8 = _mm256_set1_ps(max);
  __m256 sum8 = _mm256_setzero_ps();
  for (l = 0; l + 8 <= a.length; l += 8) {
    const __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + l), max8));
    _mm256_storeu_ps(scores + l, p);
    sum8 = _mm256_add_ps(sum8, p);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum8);
  float sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  for (; l < a.length; ++l) {
    scores[l] = expf(scores[l] - max);
    sum += scores[l];
  }
  const float inverse = 1.0f / sum;
  for (l = 0; l < a.length; ++l) {
    scores[l] *= inverse;
  }
  // Values, a register-resident chunk of columns at a time.
  int d0 = 0;
  for (; d0 + kValueChunk <= a.value_dim; d0 += kValueChunk) {
    weighted_values<kValueChunk>(a, scores, d0);
  }
  for (; d0 + 8 <= a.value_dim; d0 += 8) {
    weighted_values<8>(a, scores, d0);
  }
  for (; d0 < a.value_dim; ++d0) {
    float acc = 0.0f;
    for (l = 0; l < a.length; ++l) {
      acc += scores[l] * a.v[l * a.v_stride + d0];
    }
    a.out[d0] = acc;
  }
}

} // namespace pensieve::kernels
