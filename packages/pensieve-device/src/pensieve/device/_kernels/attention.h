// MLX op and primitive for the attention of a decode step (one query per sequence) on the CPU.
#pragma once

#include <optional>
#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace pensieve::kernels {

namespace mx = mlx::core;

// mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask) for one query position:
// float32 q [B, Hq, 1, D], k [B, Hkv, L, D] and v [B, Hkv, L, Dv] with Hq a multiple of Hkv (grouped
// queries), and mask None or a bool (keep) / float32 (added) array broadcastable to [B, Hq, 1, L].
// k, v and mask may be strided views (a KV cache's slice). Anything else throws
// std::invalid_argument (ValueError in Python) so the caller can fall back to MLX.
mx::array decode_attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::optional<mx::array>& mask,
    mx::StreamOrDevice s = {});

class CpuDecodeAttention : public mx::UnaryPrimitive {
 public:
  CpuDecodeAttention(mx::Stream stream, float scale) : mx::UnaryPrimitive(stream), scale_(scale) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  const char* name() const override {
    return "CpuDecodeAttention";
  }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override;

 private:
  float scale_;
};

} // namespace pensieve::kernels
