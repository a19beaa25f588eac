// The CpuSwiglu primitive: input checks, the elements split over the worker pool when many, the
// AVX2 or scalar kernel.
#include "activations.h"

#include <math.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "activations_kernel.h"
#include "runtime.h"

namespace pensieve::kernels {

namespace {

// Elements below which another thread costs more than it saves (one per ~2 ns on AVX2).
constexpr int64_t kMinElementsPerThread = 1 << 16;

} // namespace

void swiglu_scalar(const float* gate, const float* x, float* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    out[i] = gate[i] * x[i] / (1.0f + expf(-gate[i]));
  }
}

mx::array swiglu(const mx::array& gate, const mx::array& x, mx::StreamOrDevice s) {
  require(gate.dtype() == mx::float32 && x.dtype() == mx::float32, "swiglu", "gate and x must be float32");
  require(gate.shape() == x.shape(), "swiglu", "gate and x must have one shape");
  require(gate.size() > 0, "swiglu", "empty inputs are left to MLX");
  const mx::Stream stream = mx::to_stream(s);
  require(stream.device == mx::Device::cpu, "swiglu", "only CPU streams are supported");
  return mx::array(gate.shape(), mx::float32, std::make_shared<CpuSwiglu>(stream), {gate, x});
}

void CpuSwiglu::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu_encoder(stream(), inputs, out);
  const Input gate(inputs[0]), x(inputs[1]);
  float* out_ptr = out.data<float>();
  const bool simd = simd_active() != Simd::kScalar;
  encoder.dispatch([=]() {
    std::vector<float> gate_copy, x_copy;
    const float* gate_ptr = gate.row_major(gate_copy);
    const float* x_ptr = x.row_major(x_copy);
    const int64_t size = static_cast<int64_t>(gate.size);
    WorkerPool& pool = WorkerPool::instance();
    const int parts = static_cast<int>(std::clamp<int64_t>(size / kMinElementsPerThread, 1, pool.size()));
    pool.run(parts, [&](int part) {
      const int64_t begin = size * part / parts, end = size * (part + 1) / parts;
      if (simd) {
        swiglu_avx2(gate_ptr, x_ptr, out_ptr, begin, end);
      } else {
        swiglu_scalar(gate_ptr, x_ptr, out_ptr, begin, end);
      }
    });
  });
}

void CpuSwiglu::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("[pensieve swiglu] CpuSwiglu has no GPU implementation.");
}

} // namespace pensieve::kernels
