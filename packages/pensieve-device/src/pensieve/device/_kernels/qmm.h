// MLX op and primitive for affine-quantized matmul on the CPU (see qmm_kernel.h for the kernels).
#pragma once

#include <string>
#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace pensieve::kernels {

namespace mx = mlx::core;

// mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size, bits) for float32 x, scales
// and biases, bits 4 or 8, group_size 32, 64 or 128 and a 2-D w, on a CPU stream. Anything else
// throws std::invalid_argument (ValueError in Python) so the caller can fall back to MLX.
mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

// The kernel quantized_matmul runs on this CPU: "avx2" or "scalar".
std::string simd();

// Lets tests run the scalar kernel on an AVX2 machine; enabling has no effect without AVX2/FMA.
void use_simd(bool enabled);

class CpuQuantizedMatmul : public mx::UnaryPrimitive {
 public:
  CpuQuantizedMatmul(mx::Stream stream, int group_size, int bits)
      : mx::UnaryPrimitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override {
    return "CpuQuantizedMatmul";
  }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  int group_size_;
  int bits_;
};

} // namespace pensieve::kernels
