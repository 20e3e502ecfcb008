// Vectorised CPU generation of the Philox noise streams (DESIGN.md §4).
//
// Streams are cut into fixed chunks of kNoiseChunk elements aligned on the
// element index, so every caller (fill ops, fused sampler kernels, the thermo
// simulator) gets the same value for the same index however it splits the
// work between threads.
#pragma once

#include <stdint.h>

#include "philox.h"

namespace pybayes {

constexpr int64_t kNoiseChunk = 256;  // elements per chunk = 64 Philox blocks

// N(0,1) floats of elements [c*kNoiseChunk, (c+1)*kNoiseChunk) of stream s.
void normal_chunk(const PhiloxStream& s, uint64_t c, float* out);

// Raw uint32 words of the same elements.
void uint32_chunk(const PhiloxStream& s, uint64_t c, uint32_t* out);

// Elements [begin, end) of a stream, any alignment; chunk-sized staging on
// the stack. Used by callers that do not work chunk by chunk.
void normal_range(const PhiloxStream& s, uint64_t begin, uint64_t end, float* out);
void uint32_range(const PhiloxStream& s, uint64_t begin, uint64_t end, uint32_t* out);

// Which instruction set the vectorised chunk functions run with here.
const char* noise_isa();

}  // namespace pybayes
