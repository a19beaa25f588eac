// Python module _pensieve_kernels. NB_DOMAIN mlx in CMakeLists.txt lets it take and return the
// mlx.core array, Stream and Device types that MLX's own nanobind module registered.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include "activations.h"
#include "attention.h"
#include "qmm.h"
#include "rope.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_pensieve_kernels, m) {
  m.doc() = "Pensieve CPU kernels for MLX: affine-quantized matmul, decode attention, SwiGLU and RoPE.";

  m.def(
      "quantized_matmul",
      &pensieve::kernels::quantized_matmul,
      "x"_a,
      "w"_a,
      "scales"_a,
      "biases"_a,
      "group_size"_a,
      "bits"_a,
      "stream"_a = nb::none(),
      "mx.quantized_matmul(x, w, scales, biases, transpose=True, group_size=group_size, bits=bits) "
      "for float32 inputs, bits 4/8 and group_size 32/64/128; ValueError for anything else.");
  m.def(
      "packed_quantized_matmul",
      &pensieve::kernels::packed_quantized_matmul,
      "x"_a,
      "w"_a,
      "scales"_a,
      "biases"_a,
      "n"_a,
      "group_size"_a,
      "bits"_a,
      "stream"_a = nb::none(),
      "quantized_matmul on weights in the packed layout: w [ceil(n / 8), k * bits / 32, 8], scales and "
      "biases [ceil(n / 8), k / group_size, 8] (column 8t + c is tile t's lane c).");
  m.def(
      "decode_attention",
      &pensieve::kernels::decode_attention,
      "q"_a,
      "k"_a,
      "v"_a,
      "scale"_a,
      "mask"_a = nb::none(),
      "stream"_a = nb::none(),
      "mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask) for one float32 query "
      "position per sequence and a bool or float32 mask (or none); ValueError for anything else.");
  m.def(
      "swiglu",
      &pensieve::kernels::swiglu,
      "gate"_a,
      "x"_a,
      "stream"_a = nb::none(),
      "silu(gate) * x for float32 arrays of one shape; ValueError for anything else.");
  m.def(
      "rope",
      &pensieve::kernels::rope,
      "x"_a,
      "dims"_a,
      "traditional"_a,
      "base"_a,
      "scale"_a,
      "offset"_a,
      "stream"_a = nb::none(),
      "mx.fast.rope for a float32 [B, H, L, D] x and an integer offset (scalar or one per sequence); "
      "ValueError for anything else.");
  m.def(
      "simd",
      &pensieve::kernels::simd,
      "The instruction set the kernels use on this CPU: 'avx512' (AVX-512VL for the packed matmul, "
      "AVX2 elsewhere), 'avx2' or 'scalar'.");
  m.def(
      "use_simd",
      &pensieve::kernels::use_simd,
      "level"_a,
      "Testing hook: 'avx2' or 'scalar' caps the instruction set the kernels use; 'avx512' lifts it.");
}
