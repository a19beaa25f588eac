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

// The same product on weights in the packed layout (qmm_kernel.h): w [ceil(n / 8), k * bits / 32, 8],
// scales and biases [ceil(n / 8), k / group_size, 8]; the output has n columns.
mx::array packed_quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int n,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

// The instruction set the kernels use on this CPU: "avx512", "avx2" or "scalar".
std::string simd();

// Lets tests run the other kernels: "avx2" or "scalar" caps the instruction set the kernels use
// ("avx512", the default, lifts the cap). A cap above what the CPU has changes nothing.
void use_simd(const std::string& level);

class CpuQuantizedMatmul : public mx::UnaryPrimitive {
 public:
  // packed: the weights are in the packed layout, for an output of n columns.
  CpuQuantizedMatmul(mx::Stream stream, int group_size, int bits, bool packed, int n)
      : mx::UnaryPrimitive(stream), group_size_(group_size), bits_(bits), packed_(packed), n_(n) {}

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
  bool packed_;
  int n_;
};

} // namespace pensieve::kernels
