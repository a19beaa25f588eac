// AVX2/FMA activations; called only after the runtime CPU check (runtime.h).
#include <immintrin.h>

#include <math.h>

#include "activations_kernel.h"
#include "vec_math_avx2.h"

namespace pensieve::kernels {

void swiglu_avx2(const float* gate, const float* x, float* out, int64_t begin, int64_t end) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 denominator = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    _mm256_storeu_ps(out + i, _mm256_div_ps(_mm256_mul_ps(g, _mm256_loadu_ps(x + i)), denominator));
  }
  for (; i < end; ++i) {
    out[i] = gate[i] * x[i] / (1.0f + expf(-gate[i]));
  }
}

} // namespace pensieve::kernels
