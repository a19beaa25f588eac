// Python module _pensieve_kernels. NB_DOMAIN mlx in CMakeLists.txt lets it take and return the
// mlx.core array, Stream and Device types that MLX's own nanobind module registered.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include "qmm.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_pensieve_kernels, m) {
  m.doc() = "Pensieve CPU kernels for MLX: affine-quantized matmul with AVX2/FMA.";

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
  m.def("simd", &pensieve::kernels::simd, "The kernel used on this CPU: 'avx2' or 'scalar'.");
  m.def(
      "use_simd",
      &pensieve::kernels::use_simd,
      "enabled"_a,
      "Testing hook: False runs the scalar kernel even on an AVX2 CPU.");
}
