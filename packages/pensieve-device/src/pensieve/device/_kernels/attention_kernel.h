// Attention of one query vector over a head's keys and values. Free of C++ library templates for
// the same reason as qmm_kernel.h: attention_avx2.cpp is compiled with -mavx2 -mfma.
#pragma once

#include <cstdint>

namespace pensieve::kernels {

enum class MaskKind { kNone, kBool, kAdditive };

// out[d] = sum_l softmax_l(scale * q . k_l + mask_l) * v_l[d]. Keys and values are rows `stride`
// floats apart; a bool mask keeps the positions where it is true, an additive one is added.
struct HeadArgs {
  const float* q;
  const float* k;
  const float* v;
  const void* mask; // bool or float, as mask_kind says; nullptr for kNone
  float* out;
  int64_t k_stride;
  int64_t v_stride;
  int64_t mask_stride;
  int length;
  int head_dim;
  int value_dim;
  float scale;
  MaskKind mask_kind;
};

// scores holds `length` floats for this call's exclusive use.
void attend_avx2(const HeadArgs& a, float* scores);
void attend_scalar(const HeadArgs& a, float* scores);

} // namespace pensieve::kernels
