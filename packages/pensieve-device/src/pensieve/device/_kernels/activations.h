// MLX op and primitive for the SwiGLU activation on the CPU.
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace pensieve::kernels {

namespace mx = mlx::core;

// silu(gate) * x for float32 arrays of one shape (mlx-lm's swiglu). Anything else throws
// std::invalid_argument (ValueError in Python) so the caller can fall back to MLX.
mx::array swiglu(const mx::array& gate, const mx::array& x, mx::StreamOrDevice s = {});

class CpuSwiglu : public mx::UnaryPrimitive {
 public:
  explicit CpuSwiglu(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override {
    return "CpuSwiglu";
  }
  bool is_equivalent(const mx::Primitive&) const override {
    return true;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }
};

} // namespace pensieve::kernels
