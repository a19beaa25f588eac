// AVX2/FMA quantized matmul. The only source compiled with -mavx2 -mfma (see CMakeLists.txt); it is
// called only after a runtime check that the CPU has both.
#include <immintrin.h>

#include "qmm_kernel.h"
#include "qmm_packed.h"

namespace pensieve::kernels {
namespace {

// Rows of x per pass: the block (32 x k floats) stays in L2 while the weight tiles stream past it.
constexpr int kRowBlock = 32;

inline int imin(int a, int b) {
  return a < b ? a : b;
}

// Weights 8 * block .. 8 * block + 7 of one output row as floats (the stored integers, not scaled).
// 4-bit: one word holds 8 values, first in the low nibble. 8-bit: two words, one value per byte.
template <int Bits>
inline __m256 load_q(const uint32_t* row, int block) {
  if constexpr (Bits == 4) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i word = _mm256_set1_epi32(static_cast<int>(row[block]));
    __m256i q = _mm256_and_si256(_mm256_srlv_epi32(word, shifts), _mm256_set1_epi32(0xF));
    return _mm256_cvtepi32_ps(q);
  } else {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 2 * block));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The kTile sums of a0..a3, in order.
inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

struct Layout {
  int words_per_row;
  int groups;
  int blocks_per_group;
};

template <int Bits>
inline Layout layout(const QmmArgs& a) {
  return {a.k * Bits / 32, a.k / a.group_size, a.group_size / 8};
}

// One row of x against output columns [n_begin, n_end), dequantizing on the fly: nothing to amortize.
template <int Bits>
void single_row(const QmmArgs& a, int n_begin, int n_end) {
  const Layout l = layout<Bits>(a);
  for (int n = n_begin; n < n_end; ++n) {
    const uint32_t* w = a.w + static_cast<size_t>(n) * l.words_per_row;
    const float* scales = a.scales + static_cast<size_t>(n) * l.groups;
    const float* biases = a.biases + static_cast<size_t>(n) * l.groups;
    // Four chains hide the FMA latency; group_size is a multiple of 32, so blocks come in fours.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int block = 0;
    for (int g = 0; g < l.groups; ++g) {
      const __m256 s = _mm256_set1_ps(scales[g]);
      const __m256 b = _mm256_set1_ps(biases[g]);
      for (int j = 0; j < l.blocks_per_group; j += 4, block += 4) {
        const float* x = a.x + 8 * block;
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_fmadd_ps(load_q<Bits>(w, block), s, b), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(x + 8), _mm256_fmadd_ps(load_q<Bits>(w, block + 1), s, b), acc1);
        acc2 = _mm256_fmadd_ps(
            _mm256_loadu_ps(x + 16), _mm256_fmadd_ps(load_q<Bits>(w, block + 2), s, b), acc2);
        acc3 = _mm256_fmadd_ps(
            _mm256_loadu_ps(x + 24), _mm256_fmadd_ps(load_q<Bits>(w, block + 3), s, b), acc3);
      }
    }
    a.out[n] = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  }
}

// Dequantizes output row n (all k weights, scale and bias applied) into dst.
template <int Bits>
void dequantize_row(const QmmArgs& a, int n, float* dst) {
  const Layout l = layout<Bits>(a);
  const uint32_t* w = a.w + static_cast<size_t>(n) * l.words_per_row;
  const float* scales = a.scales + static_cast<size_t>(n) * l.groups;
  const float* biases = a.biases + static_cast<size_t>(n) * l.groups;
  int block = 0;
  for (int g = 0; g < l.groups; ++g) {
    const __m256 s = _mm256_set1_ps(scales[g]);
    const __m256 b = _mm256_set1_ps(biases[g]);
    for (int j = 0; j < l.blocks_per_group; ++j, ++block) {
      _mm256_storeu_ps(dst + 8 * block, _mm256_fmadd_ps(load_q<Bits>(w, block), s, b));
    }
  }
}

// R rows of x against a tile of kTile dequantized weight rows (wt, each k floats long): each weight
// vector loaded once serves R rows. Writes `count` (<= kTile) outputs per row.
template <int R>
void rows_by_tile(const float* wt, const float* x, int k, float* out, int ldo, int count) {
  __m256 acc[R][kTile];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < kTile; ++t) {
      acc[r][t] = _mm256_setzero_ps();
    }
  }
  for (int kk = 0; kk < k; kk += 8) {
    __m256 wv[kTile];
    for (int t = 0; t < kTile; ++t) {
      wv[t] = _mm256_loadu_ps(wt + static_cast<size_t>(t) * k + kk);
    }
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + static_cast<size_t>(r) * k + kk);
      for (int t = 0; t < kTile; ++t) {
        acc[r][t] = _mm256_fmadd_ps(xv, wv[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float sums[kTile];
    _mm_storeu_ps(sums, hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
    for (int t = 0; t < count; ++t) {
      out[static_cast<size_t>(r) * ldo + t] = sums[t];
    }
  }
}

// Several rows: dequantize kTile output rows once into scratch, then run every row of x against them.
template <int Bits>
void multi_row(const QmmArgs& a, int n_begin, int n_end, float* scratch) {
  for (int r0 = 0; r0 < a.rows; r0 += kRowBlock) {
    const int rows = imin(kRowBlock, a.rows - r0);
    for (int n = n_begin; n < n_end; n += kTile) {
      const int count = imin(kTile, n_end - n);
      for (int t = 0; t < kTile; ++t) {
        float* dst = scratch + static_cast<size_t>(t) * a.k;
        if (t < count) {
          dequantize_row<Bits>(a, n + t, dst);
        } else {
          for (int kk = 0; kk < a.k; ++kk) {
            dst[kk] = 0.0f;
          }
        }
      }
      int r = r0;
      const int r_end = r0 + rows;
      const size_t ldx = static_cast<size_t>(a.k);
      for (; r + 3 <= r_end; r += 3) {
        rows_by_tile<3>(scratch, a.x + r * ldx, a.k, a.out + static_cast<size_t>(r) * a.n + n, a.n, count);
      }
      if (r_end - r == 2) {
        rows_by_tile<2>(scratch, a.x + r * ldx, a.k, a.out + static_cast<size_t>(r) * a.n + n, a.n, count);
      } else if (r_end - r == 1) {
        rows_by_tile<1>(scratch, a.x + r * ldx, a.k, a.out + static_cast<size_t>(r) * a.n + n, a.n, count);
      }
    }
  }
}

template <int Bits>
void run(const QmmArgs& a, int n_begin, int n_end, float* scratch) {
  if (a.rows == 1) {
    single_row<Bits>(a, n_begin, n_end);
  } else {
    multi_row<Bits>(a, n_begin, n_end, scratch);
  }
}

} // namespace

void qmm_packed_avx2(const QmmArgs& a, int tile_begin, int tile_end) {
  packed_tiles(a, tile_begin, tile_end);
}

void qmm_avx2(const QmmArgs& a, int n_begin, int n_end, float* scratch) {
  if (a.bits == 4) {
    run<4>(a, n_begin, n_end, scratch);
  } else {
    run<8>(a, n_begin, n_end, scratch);
  }
}

} // namespace pensieve::kernels
