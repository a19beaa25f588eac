// The CpuQuantizedMatmul primitive on MLX's layout or the packed one: input checks, the output
// columns split over the worker pool (runtime.h), the kernel for the CPU's instruction set, and
// the scalar kernels used without AVX2/FMA.
#include "qmm.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "qmm_kernel.h"
#include "runtime.h"

namespace pensieve::kernels {

namespace {

void require_qmm(bool condition, const std::string& message) {
  require(condition, "quantized_matmul", message);
}

// Per group scale * dot(x_g, q_g) + bias * sum(x_g), with the group sums of x computed once.
template <int Bits>
void qmm_scalar_bits(const QmmArgs& a, int n_begin, int n_end) {
  constexpr int per_word = 32 / Bits;
  constexpr uint32_t mask = (1u << Bits) - 1;
  const int groups = a.k / a.group_size;
  const int words_per_group = a.group_size / per_word;
  std::vector<float> x_sums(static_cast<size_t>(a.rows) * groups);
  for (int r = 0; r < a.rows; ++r) {
    for (int g = 0; g < groups; ++g) {
      const float* x = a.x + static_cast<size_t>(r) * a.k + static_cast<size_t>(g) * a.group_size;
      float sum = 0.0f;
      for (int i = 0; i < a.group_size; ++i) {
        sum += x[i];
      }
      x_sums[static_cast<size_t>(r) * groups + g] = sum;
    }
  }
  for (int n = n_begin; n < n_end; ++n) {
    const uint32_t* w = a.w + static_cast<size_t>(n) * groups * words_per_group;
    const float* scales = a.scales + static_cast<size_t>(n) * groups;
    const float* biases = a.biases + static_cast<size_t>(n) * groups;
    for (int r = 0; r < a.rows; ++r) {
      const float* x = a.x + static_cast<size_t>(r) * a.k;
      const float* sums = x_sums.data() + static_cast<size_t>(r) * groups;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        float dot = 0.0f;
        for (int i = 0; i < words_per_group; ++i) {
          const uint32_t word = w[g * words_per_group + i];
          const float* xw = x + (g * words_per_group + i) * per_word;
          for (int j = 0; j < per_word; ++j) {
            dot += xw[j] * static_cast<float>((word >> (j * Bits)) & mask);
          }
        }
        acc += scales[g] * dot + biases[g] * sums[g];
      }
      a.out[static_cast<size_t>(r) * a.n + n] = acc;
    }
  }
}

template <int Bits>
void qmm_packed_scalar_bits(const QmmArgs& a, int tile_begin, int tile_end) {
  constexpr int per_word = 32 / Bits;
  constexpr uint32_t mask = (1u << Bits) - 1;
  const int words_per_row = a.k / per_word;
  const int groups = a.k / a.group_size;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const uint32_t* w = a.w + static_cast<size_t>(tile) * words_per_row * kPackedTile;
    const float* scales = a.scales + static_cast<size_t>(tile) * groups * kPackedTile;
    const float* biases = a.biases + static_cast<size_t>(tile) * groups * kPackedTile;
    for (int c = 0; c < kPackedTile && tile * kPackedTile + c < a.n; ++c) {
      for (int r = 0; r < a.rows; ++r) {
        const float* x = a.x + static_cast<size_t>(r) * a.k;
        float acc = 0.0f;
        for (int i = 0; i < words_per_row; ++i) {
          const uint32_t word = w[i * kPackedTile + c];
          const int g = i * per_word / a.group_size;
          const float scale = scales[g * kPackedTile + c], bias = biases[g * kPackedTile + c];
          for (int j = 0; j < per_word; ++j) {
            acc += x[i * per_word + j] * (scale * static_cast<float>((word >> (j * Bits)) & mask) + bias);
          }
        }
        a.out[static_cast<size_t>(r) * a.n + tile * kPackedTile + c] = acc;
      }
    }
  }
}

// Checks shared by both layouts; returns the rows of x.
int64_t check_inputs(
    const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases, int group_size, int bits) {
  require_qmm(bits == 4 || bits == 8, "bits must be 4 or 8");
  require_qmm(group_size == 32 || group_size == 64 || group_size == 128, "group_size must be 32, 64 or 128");
  require_qmm(x.dtype() == mx::float32, "x must be float32");
  require_qmm(
      scales.dtype() == mx::float32 && biases.dtype() == mx::float32, "scales and biases must be float32");
  require_qmm(w.dtype() == mx::uint32, "w must be uint32");
  require_qmm(x.ndim() >= 1, "x must have at least one dimension");
  const int64_t k = x.shape(-1);
  const int64_t rows = k > 0 ? static_cast<int64_t>(x.size()) / k : 0;
  require_qmm(k > 0 && rows > 0, "empty inputs are left to MLX");
  require_qmm(k % group_size == 0, "x's last dimension must be a multiple of group_size");
  return rows;
}

mx::array matmul_array(
    const mx::array& x,
    std::vector<mx::array> inputs,
    int n,
    int group_size,
    int bits,
    bool packed,
    mx::StreamOrDevice s) {
  const mx::Stream stream = mx::to_stream(s);
  require_qmm(stream.device == mx::Device::cpu, "only CPU streams are supported");
  mx::Shape out_shape = x.shape();
  out_shape.back() = n;
  return mx::array(
      std::move(out_shape),
      mx::float32,
      std::make_shared<CpuQuantizedMatmul>(stream, group_size, bits, packed, n),
      std::move(inputs));
}

} // namespace

void qmm_packed_scalar(const QmmArgs& a, int tile_begin, int tile_end) {
  if (a.bits == 4) {
    qmm_packed_scalar_bits<4>(a, tile_begin, tile_end);
  } else {
    qmm_packed_scalar_bits<8>(a, tile_begin, tile_end);
  }
}

void qmm_scalar(const QmmArgs& a, int n_begin, int n_end) {
  if (a.bits == 4) {
    qmm_scalar_bits<4>(a, n_begin, n_end);
  } else {
    qmm_scalar_bits<8>(a, n_begin, n_end);
  }
}

mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  const int64_t rows = check_inputs(x, w, scales, biases, group_size, bits);
  require_qmm(w.ndim() == 2, "w must have two dimensions");
  const int64_t k = x.shape(-1);
  const int64_t n = w.shape(0);
  require_qmm(n > 0, "empty inputs are left to MLX");
  require_qmm(static_cast<int64_t>(w.shape(1)) * 32 / bits == k, "w's packed width does not match x");
  const mx::Shape group_shape = {static_cast<int>(n), static_cast<int>(k / group_size)};
  require_qmm(scales.shape() == group_shape && biases.shape() == group_shape, "scales/biases shape mismatch");
  require_qmm(rows * n < (int64_t{1} << 31), "output too large");
  return matmul_array(x, {x, w, scales, biases}, static_cast<int>(n), group_size, bits, false, s);
}

mx::array packed_quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int n,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  const int64_t rows = check_inputs(x, w, scales, biases, group_size, bits);
  const int64_t k = x.shape(-1);
  const int tiles = (n + kPackedTile - 1) / kPackedTile;
  require_qmm(n > 0, "n must be positive");
  require_qmm(
      w.shape() == mx::Shape({tiles, static_cast<int>(k * bits / 32), kPackedTile}),
      "w must be [ceil(n / 8), k * bits / 32, 8]");
  const mx::Shape group_shape = {tiles, static_cast<int>(k / group_size), kPackedTile};
  require_qmm(scales.shape() == group_shape && biases.shape() == group_shape, "scales/biases shape mismatch");
  require_qmm(rows * n < (int64_t{1} << 31), "output too large");
  return matmul_array(x, {x, w, scales, biases}, n, group_size, bits, true, s);
}

std::string simd() {
  switch (simd_active()) {
    case Simd::kAvx512:
      return "avx512";
    case Simd::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

void use_simd(const std::string& level) {
  require(level == "avx512" || level == "avx2" || level == "scalar", "use_simd", "unknown level " + level);
  const Simd cap = level == "avx512" ? Simd::kAvx512 : level == "avx2" ? Simd::kAvx2 : Simd::kScalar;
  simd_cap.store(cap, std::memory_order_relaxed);
}

void CpuQuantizedMatmul::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu_encoder(stream(), inputs, out);

  const Input x(inputs[0]), w(inputs[1]), scales(inputs[2]), biases(inputs[3]);
  const int k = inputs[0].shape(-1);
  const int n = out.shape(-1);
  const int rows = static_cast<int>(inputs[0].size() / k);
  float* out_ptr = out.data<float>();
  const int group_size = group_size_;
  const int bits = bits_;
  const bool packed = packed_;
  const Simd simd = simd_active();
  encoder.dispatch([=]() {
    std::vector<float> x_copy, scales_copy, biases_copy;
    std::vector<uint32_t> w_copy;
    const QmmArgs args{
        x.row_major(x_copy),
        w.row_major(w_copy),
        scales.row_major(scales_copy),
        biases.row_major(biases_copy),
        out_ptr,
        rows,
        k,
        n,
        group_size,
        bits};
    WorkerPool& pool = WorkerPool::instance();
    const int tile = packed ? kPackedTile : kTile;
    const int tiles = (n + tile - 1) / tile;
    const int64_t work = static_cast<int64_t>(rows) * n * k;
    const int most = std::min(pool.size(), tiles);
    const int parts = static_cast<int>(std::clamp<int64_t>(work / kMinWorkPerThread, 1, most));
    pool.run(parts, [&](int part) {
      if (packed) {
        const int tile_begin = static_cast<int>(int64_t{tiles} * part / parts);
        const int tile_end = static_cast<int>(int64_t{tiles} * (part + 1) / parts);
        if (simd == Simd::kAvx512) {
          qmm_packed_avx512(args, tile_begin, tile_end);
        } else if (simd == Simd::kAvx2) {
          qmm_packed_avx2(args, tile_begin, tile_end);
        } else {
          qmm_packed_scalar(args, tile_begin, tile_end);
        }
        return;
      }
      const int n_begin = std::min(n, static_cast<int>(int64_t{tiles} * part / parts) * kTile);
      const int n_end = std::min(n, static_cast<int>(int64_t{tiles} * (part + 1) / parts) * kTile);
      if (simd != Simd::kScalar) {
        thread_local std::vector<float> scratch;
        scratch.resize(static_cast<size_t>(kTile) * k);
        qmm_avx2(args, n_begin, n_end, scratch.data());
      } else {
        qmm_scalar(args, n_begin, n_end);
      }
    });
  });
}

void CpuQuantizedMatmul::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("[pensieve quantized_matmul] CpuQuantizedMatmul has no GPU implementation.");
}

bool CpuQuantizedMatmul::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CpuQuantizedMatmul&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_ && packed_ == o.packed_;
}

std::vector<mx::Shape> CpuQuantizedMatmul::output_shapes(const std::vector<mx::array>& inputs) {
  mx::Shape shape = inputs[0].shape();
  shape.back() = packed_ ? n_ : inputs[1].shape(0);
  return {shape};
}

} // namespace pensieve::kernels
