// The packed-layout matmul compiled with AVX-512VL (see qmm_packed.h); called only after a runtime
// check that the CPU has AVX-512F and AVX-512VL as well as AVX2 and FMA.
#include "qmm_packed.h"

namespace pensieve::kernels {

void qmm_packed_avx512(const QmmArgs& a, int tile_begin, int tile_end) {
  packed_tiles(a, tile_begin, tile_end);
}

} // namespace pensieve::kernels
