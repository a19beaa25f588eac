// The CpuDecodeAttention primitive: input checks, heads split over the worker pool, the AVX2 or
// scalar kernel per head.
#include "attention.h"

#include <math.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mlx/ops.h"

#include "attention_kernel.h"
#include "runtime.h"

namespace pensieve::kernels {

namespace {

// Multiply-adds (heads * length * (head_dim + value_dim)) below which the heads stay on one thread.
// Lower than the matmuls' threshold: between a step's matmuls the other core idles, and at 8
// sequences of ~100 positions (~0.7M) splitting made a decode step ~3% faster; one sequence stays
// on one thread up to ~230 positions of the default model (9 heads of 64).
constexpr int64_t kMinAttentionWorkPerThread = 1 << 18;

void require_attention(bool condition, const std::string& message) {
  require(condition, "decode_attention", message);
}

} // namespace

void attend_scalar(const HeadArgs& a, float* scores) {
  float max = -INFINITY;
  for (int l = 0; l < a.length; ++l) {
    const float* key = a.k + l * a.k_stride;
    float s = 0.0f;
    for (int d = 0; d < a.head_dim; ++d) {
      s += a.q[d] * key[d];
    }
    s *= a.scale;
    if (a.mask_kind == MaskKind::kBool) {
      s = static_cast<const bool*>(a.mask)[l * a.mask_stride] ? s : -INFINITY;
    } else if (a.mask_kind == MaskKind::kAdditive) {
      s += static_cast<const float*>(a.mask)[l * a.mask_stride];
    }
    scores[l] = s;
    max = std::max(max, s);
  }
  std::fill(a.out, a.out + a.value_dim, 0.0f);
  if (max == -INFINITY) {
    return; // every position masked: nothing to attend to
  }
  float sum = 0.0f;
  for (int l = 0; l < a.length; ++l) {
    const float p = expf(scores[l] - max);
    sum += p;
    const float* value = a.v + l * a.v_stride;
    for (int d = 0; d < a.value_dim; ++d) {
      a.out[d] += p * value[d];
    }
  }
  for (int d = 0; d < a.value_dim; ++d) {
    a.out[d] /= sum;
  }
}

mx::array decode_attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::optional<mx::array>& mask,
    mx::StreamOrDevice s) {
  require_attention(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, "q, k and v must be 4-D");
  require_attention(
      q.dtype() == mx::float32 && k.dtype() == mx::float32 && v.dtype() == mx::float32,
      "q, k and v must be float32");
  const int batch = q.shape(0), heads = q.shape(1), head_dim = q.shape(3);
  const int kv_heads = k.shape(1), length = k.shape(2);
  require_attention(q.shape(2) == 1, "one query position only");
  require_attention(batch > 0 && heads > 0 && head_dim > 0 && length > 0, "empty inputs are left to MLX");
  require_attention(
      k.shape(0) == batch && v.shape(0) == batch && v.shape(1) == kv_heads && v.shape(2) == length &&
          k.shape(3) == head_dim,
      "q, k and v shapes do not match");
  require_attention(kv_heads > 0 && heads % kv_heads == 0, "query heads must be a multiple of kv heads");
  require_attention(k.strides(3) == 1 && v.strides(3) == 1, "k and v rows must be contiguous");
  std::vector<mx::array> inputs = {q, k, v};
  if (mask.has_value()) {
    const mx::Shape full = {batch, heads, 1, length};
    require_attention(
        mask->dtype() == mx::bool_ || mask->dtype() == mx::float32, "mask must be bool or float32");
    require_attention(mask->ndim() <= 4, "mask has too many dimensions");
    inputs.push_back(mx::broadcast_to(*mask, full, s));
  }
  const mx::Stream stream = mx::to_stream(s);
  require_attention(stream.device == mx::Device::cpu, "only CPU streams are supported");
  mx::Shape out_shape = {batch, heads, 1, v.shape(3)};
  return mx::array(
      std::move(out_shape), mx::float32, std::make_shared<CpuDecodeAttention>(stream, scale), std::move(inputs));
}

void CpuDecodeAttention::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  auto& encoder = cpu_encoder(stream(), inputs, out);

  const bool has_mask = inputs.size() == 4;
  const Input q(inputs[0]), k(inputs[1]), v(inputs[2]);
  const Input mask = has_mask ? Input(inputs[3]) : Input(inputs[0]);
  const MaskKind mask_kind =
      !has_mask ? MaskKind::kNone : (inputs[3].dtype() == mx::bool_ ? MaskKind::kBool : MaskKind::kAdditive);
  const size_t mask_item = has_mask ? inputs[3].itemsize() : 0;
  float* out_ptr = out.data<float>();
  const float scale = scale_;
  const bool simd = simd_active() != Simd::kScalar;
  encoder.dispatch([=]() {
    const int batch = q.shape[0], heads = q.shape[1], head_dim = q.shape[3];
    const int kv_heads = k.shape[1], length = k.shape[2], value_dim = v.shape[3];
    const int group = heads / kv_heads;
    const int total = batch * heads;
    const auto* q_data = static_cast<const float*>(q.data);
    const auto* k_data = static_cast<const float*>(k.data);
    const auto* v_data = static_cast<const float*>(v.data);
    const auto* mask_data = static_cast<const char*>(mask.data);
    auto head = [&](int index, float* scores) {
      const int b = index / heads, h = index % heads, kv = h / group;
      HeadArgs args{
          q_data + b * q.strides[0] + h * q.strides[1],
          k_data + b * k.strides[0] + kv * k.strides[1],
          v_data + b * v.strides[0] + kv * v.strides[1],
          has_mask ? mask_data + (b * mask.strides[0] + h * mask.strides[1]) * mask_item : nullptr,
          out_ptr + static_cast<int64_t>(index) * value_dim,
          k.strides[2],
          v.strides[2],
          has_mask ? mask.strides[3] : 0,
          length,
          head_dim,
          value_dim,
          scale,
          mask_kind};
      // q's last axis is contiguous unless q is a strided view: read it through a copy then.
      std::vector<float> q_copy;
      if (q.strides[3] != 1) {
        q_copy.resize(head_dim);
        for (int d = 0; d < head_dim; ++d) {
          q_copy[d] = args.q[d * q.strides[3]];
        }
        args.q = q_copy.data();
      }
      if (simd) {
        attend_avx2(args, scores);
      } else {
        attend_scalar(args, scores);
      }
    };
    WorkerPool& pool = WorkerPool::instance();
    const int64_t work = static_cast<int64_t>(total) * length * (head_dim + value_dim);
    const int parts =
        static_cast<int>(std::clamp<int64_t>(work / kMinAttentionWorkPerThread, 1, std::min(pool.size(), total)));
    pool.run(parts, [&](int part) {
      thread_local std::vector<float> scores;
      scores.resize(length);
      for (int index = total * part / parts; index < total * (part + 1) / parts; ++index) {
        head(index, scores.data());
      }
    });
  });
}

void CpuDecodeAttention::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("[pensieve decode_attention] CpuDecodeAttention has no GPU implementation.");
}

bool CpuDecodeAttention::is_equivalent(const mx::Primitive& other) const {
  return scale_ == static_cast<const CpuDecodeAttention&>(other).scale_;
}

std::vector<mx::Shape> CpuDecodeAttention::output_shapes(const std::vector<mx::array>& inputs) {
  return {mx::Shape{inputs[0].shape(0), inputs[0].shape(1), 1, inputs[2].shape(3)}};
}

} // namespace pensieve::kernels
