// MLX op and primitive for rotary position embeddings on the CPU.
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace pensieve::kernels {

namespace mx = mlx::core;

// mx.fast.rope(x, dims, traditional=traditional, base=base, scale=scale, offset=offset) for a float32
// x [B, H, L, D] (any strides) and an integer offset, one for all (shape []) or one per sequence
// (shape [B]). Anything else throws std::invalid_argument (ValueError in Python) so the caller can
// fall back to MLX.
mx::array rope(
    const mx::array& x,
    int dims,
    bool traditional,
    float base,
    float scale,
    const mx::array& offset,
    mx::StreamOrDevice s = {});

class CpuRope : public mx::UnaryPrimitive {
 public:
  CpuRope(mx::Stream stream, int dims, bool traditional, float base, float scale)
      : mx::UnaryPrimitive(stream), dims_(dims), traditional_(traditional), base_(base), scale_(scale) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override {
    return "CpuRope";
  }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }

 private:
  int dims_;
  bool traditional_;
  float base_;
  float scale_;
};

} // namespace pensieve::kernels
