// Quantized matmul kernels on MLX's affine layout. Kept free of C++ library templates: qmm_avx2.cpp
// is compiled with -mavx2 -mfma, and a template instantiated there could be merged by the linker
// into code that also runs on CPUs without AVX2.
#pragma once

#include <cstdint>

namespace pensieve::kernels {

// Output columns handled together by the AVX2 kernel; a thread's column range starts on a multiple.
constexpr int kTile = 4;

// out[r, n] = sum_k x[r, k] * (scales[n, g] * q[n, k] + biases[n, g]), g = k / group_size.
// All arrays row-contiguous: x [rows, k], w [n, k * bits / 32], scales and biases [n, k / group_size].
struct QmmArgs {
  const float* x;
  const uint32_t* w;
  const float* scales;
  const float* biases;
  float* out;
  int rows;
  int k;
  int n;
  int group_size;
  int bits;
};

// Columns [n_begin, n_end) of the output. scratch holds kTile * k floats for this call's exclusive use.
void qmm_avx2(const QmmArgs& a, int n_begin, int n_end, float* scratch);

// Portable version for CPUs without AVX2/FMA.
void qmm_scalar(const QmmArgs& a, int n_begin, int n_end);

// Output columns per tile of the packed layout, where each tile interleaves the weights of its
// columns: w [tiles, k * bits / 32, kPackedTile] (word i of column 8t + c at [t, i, c]), scales and
// biases [tiles, k / group_size, kPackedTile], zero past column n. A vector then holds one weight of
// eight columns, dequantized once and multiplied with every row of x.
constexpr int kPackedTile = 8;

// Columns of tiles [tile_begin, tile_end) of the output (a.w, a.scales, a.biases packed; a.n the
// output width).
void qmm_packed_avx2(const QmmArgs& a, int tile_begin, int tile_end);
void qmm_packed_avx512(const QmmArgs& a, int tile_begin, int tile_end);
void qmm_packed_scalar(const QmmArgs& a, int tile_begin, int tile_end);

} // namespace pensieve::kernels
