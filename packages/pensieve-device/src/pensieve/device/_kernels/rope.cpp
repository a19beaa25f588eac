// The CpuRope primitive. A decode step rotates a few vectors per layer, where MLX's CPU path spends
// ~90 us per call on its separate ops; here the angles are computed once per position and shared
// by every head.
#include "rope.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "mlx/ops.h"

#include "runtime.h"

namespace pensieve::kernels {

namespace {

void require_rope(bool condition, const std::string& message) {
  require(condition, "rope", message);
}

} // namespace

mx::array rope(
    const mx::array& x,
    int dims,
    bool traditional,
    float base,
    float scale,
    const mx::array& offset,
    mx::StreamOrDevice s) {
  require_rope(x.dtype() == mx::float32, "x must be float32");
  require_rope(x.ndim() == 4 && x.size() > 0, "x must be a non-empty [B, H, L, D] array");
  require_rope(dims > 0 && dims % 2 == 0 && dims <= x.shape(3), "dims must be even and at most D");
  require_rope(
      mx::issubdtype(offset.dtype(), mx::integer) && offset.size() >= 1 &&
          (offset.ndim() == 0 || (offset.ndim() == 1 && offset.shape(0) == x.shape(0))),
      "offset must be an integer scalar or one per sequence");
  const mx::Stream stream = mx::to_stream(s);
  require_rope(stream.device == mx::Device::cpu, "only CPU streams are supported");
  return mx::array(
      x.shape(),
      mx::float32,
      std::make_shared<CpuRope>(stream, dims, traditional, base, scale),
      {x, mx::astype(offset, mx::int32, s)});
}

void CpuRope::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu_encoder(stream(), inputs, out);
  const Input x(inputs[0]), offset(inputs[1]);
  float* out_ptr = out.data<float>();
  const int dims = dims_;
  const bool traditional = traditional_;
  const float base = base_, scale = scale_;
  encoder.dispatch([=]() {
    const int batch = x.shape[0], heads = x.shape[1], length = x.shape[2], width = x.shape[3];
    const int half = dims / 2;
    const auto* x_data = static_cast<const float*>(x.data);
    const auto* offsets = static_cast<const int32_t*>(offset.data);
    // Angles (l + offset) * scale * base^(-i / half), in double: float32 angles of thousands of
    // radians would round by ~1e-4.
    std::vector<double> inverse_frequency(half);
    std::vector<float> cosines(half), sines(half);
    for (int i = 0; i < half; ++i) {
      inverse_frequency[i] = std::pow(static_cast<double>(base), -static_cast<double>(i) / half);
    }
    for (int b = 0; b < batch; ++b) {
      const int32_t start = offset.shape.empty() ? offsets[0] : offsets[b * offset.strides[0]];
      for (int l = 0; l < length; ++l) {
        const double position = static_cast<double>(start + l) * scale;
        for (int i = 0; i < half; ++i) {
          const double theta = position * inverse_frequency[i];
          cosines[i] = static_cast<float>(std::cos(theta));
          sines[i] = static_cast<float>(std::sin(theta));
        }
        for (int h = 0; h < heads; ++h) {
          const float* in = x_data + b * x.strides[0] + h * x.strides[1] + l * x.strides[2];
          float* o = out_ptr + ((static_cast<int64_t>(b) * heads + h) * length + l) * width;
          const int64_t step = x.strides[3];
          if (traditional) {
            for (int i = 0; i < half; ++i) {
              const float a = in[2 * i * step], c = in[(2 * i + 1) * step];
              o[2 * i] = a * cosines[i] - c * sines[i];
              o[2 * i + 1] = a * sines[i] + c * cosines[i];
            }
          } else {
            for (int i = 0; i < half; ++i) {
              const float a = in[i * step], c = in[(i + half) * step];
              o[i] = a * cosines[i] - c * sines[i];
              o[i + half] = a * sines[i] + c * cosines[i];
            }
          }
          for (int d = dims; d < width; ++d) {
            o[d] = in[d * step];
          }
        }
      }
    }
  });
}

void CpuRope::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("[pensieve rope] CpuRope has no GPU implementation.");
}

bool CpuRope::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CpuRope&>(other);
  return dims_ == o.dims_ && traditional_ == o.traditional_ && base_ == o.base_ && scale_ == o.scale_;
}

} // namespace pensieve::kernels
