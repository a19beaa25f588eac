// Elementwise activations. Free of C++ library templates, like qmm_kernel.h.
#pragma once

#include <cstdint>

namespace pensieve::kernels {

// out[i] = silu(gate[i]) * x[i] = gate[i] * x[i] / (1 + e^-gate[i]), for i in [begin, end).
void swiglu_avx2(const float* gate, const float* x, float* out, int64_t begin, int64_t end);
void swiglu_scalar(const float* gate, const float* x, float* out, int64_t begin, int64_t end);

} // namespace pensieve::kernels
