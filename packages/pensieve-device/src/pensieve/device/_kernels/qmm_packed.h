// The packed-layout quantized matmul (see qmm_kernel.h), written with AVX2/FMA intrinsics. Included
// by qmm_avx2.cpp and by qmm_avx512.cpp, which compiles the same code with AVX-512VL: its 32 vector
// registers and embedded broadcasts (x folded into the FMA) run it ~1.25x faster on CPUs that
// have them. Everything here has internal linkage, so each file keeps its own copy.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qmm_kernel.h"

namespace pensieve::kernels {
namespace {

inline int packed_imin(int a, int b) {
  return a < b ? a : b;
}

// R rows of x (from r0) against T packed tiles (from tile0): each dequantized weight vector serves R
// rows, and R * T independent accumulator chains keep both FMA pipes busy.
template <int Bits, int R, int T>
void tile_block(const QmmArgs& a, int tile0, int r0) {
  constexpr int per_word = 32 / Bits;
  const int words_per_row = a.k * Bits / 32;
  const int groups = a.k / a.group_size;
  const int words_per_group = a.group_size / per_word;
  const __m256i mask = _mm256_set1_epi32((1 << Bits) - 1);
  const float* x = a.x + static_cast<size_t>(r0) * a.k;
  const uint32_t* w[T];
  const float* scales[T];
  const float* biases[T];
  for (int t = 0; t < T; ++t) {
    w[t] = a.w + static_cast<size_t>(tile0 + t) * words_per_row * kPackedTile;
    scales[t] = a.scales + static_cast<size_t>(tile0 + t) * groups * kPackedTile;
    biases[t] = a.biases + static_cast<size_t>(tile0 + t) * groups * kPackedTile;
  }
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
    }
  }
  int word = 0;
  for (int g = 0; g < groups; ++g) {
    __m256 s[T], b[T];
    for (int t = 0; t < T; ++t) {
      s[t] = _mm256_loadu_ps(scales[t] + g * kPackedTile);
      b[t] = _mm256_loadu_ps(biases[t] + g * kPackedTile);
    }
    for (int i = 0; i < words_per_group; ++i, ++word) {
      __m256i words[T];
      for (int t = 0; t < T; ++t) {
        words[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[t] + word * kPackedTile));
      }
      const float* xk = x + word * per_word;
#pragma GCC unroll 8
      for (int j = 0; j < per_word; ++j) {
        __m256 wv[T];
        for (int t = 0; t < T; ++t) {
          const __m256i q = _mm256_and_si256(_mm256_srli_epi32(words[t], Bits * j), mask);
          wv[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s[t], b[t]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m256 xv = _mm256_broadcast_ss(xk + static_cast<size_t>(r) * a.k + j);
          for (int t = 0; t < T; ++t) {
            acc[r][t] = _mm256_fmadd_ps(xv, wv[t], acc[r][t]);
          }
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    const int n0 = (tile0 + t) * kPackedTile;
    const int count = packed_imin(kPackedTile, a.n - n0);
    for (int r = 0; r < R; ++r) {
      float* out = a.out + static_cast<size_t>(r0 + r) * a.n + n0;
      if (count == kPackedTile) {
        _mm256_storeu_ps(out, acc[r][t]);
      } else {
        alignas(32) float lanes[kPackedTile];
        _mm256_store_ps(lanes, acc[r][t]);
        for (int c = 0; c < count; ++c) {
          out[c] = lanes[c];
        }
      }
    }
  }
}

// All tiles for R rows: two tiles at a time below 5 rows, so there are enough accumulator chains.
template <int Bits, int R>
void packed_rows(const QmmArgs& a, int tile_begin, int tile_end, int r0) {
  int tile = tile_begin;
  if constexpr (R <= 4) {
    for (; tile + 2 <= tile_end; tile += 2) {
      tile_block<Bits, R, 2>(a, tile, r0);
    }
  }
  for (; tile < tile_end; ++tile) {
    tile_block<Bits, R, 1>(a, tile, r0);
  }
}

// Rows in blocks of eight: eight accumulators, the weights and x fit AVX2's sixteen registers.
template <int Bits>
void packed_bits(const QmmArgs& a, int tile_begin, int tile_end) {
  for (int r0 = 0; r0 < a.rows; r0 += 8) {
    switch (packed_imin(8, a.rows - r0)) {
      case 1: packed_rows<Bits, 1>(a, tile_begin, tile_end, r0); break;
      case 2: packed_rows<Bits, 2>(a, tile_begin, tile_end, r0); break;
      case 3: packed_rows<Bits, 3>(a, tile_begin, tile_end, r0); break;
      case 4: packed_rows<Bits, 4>(a, tile_begin, tile_end, r0); break;
      case 5: packed_rows<Bits, 5>(a, tile_begin, tile_end, r0); break;
      case 6: packed_rows<Bits, 6>(a, tile_begin, tile_end, r0); break;
      case 7: packed_rows<Bits, 7>(a, tile_begin, tile_end, r0); break;
      default: packed_rows<Bits, 8>(a, tile_begin, tile_end, r0); break;
    }
  }
}

inline void packed_tiles(const QmmArgs& a, int tile_begin, int tile_end) {
  if (a.bits == 4) {
    packed_bits<4>(a, tile_begin, tile_end);
  } else {
    packed_bits<8>(a, tile_begin, tile_end);
  }
}

} // namespace
} // namespace pensieve::kernels
