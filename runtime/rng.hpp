// Counter-based random numbers for the runtime: the value at (seed, stream, index) is a pure
// function of the three, so initialisation, masking and sampling are reproducible on every
// platform and a resumed run needs only the seed and the step to continue the same sequence.
#pragma once

#include <cmath>
#include <cstdint>

namespace kiln::impl {

// splitmix64's finaliser: a bijective 64-bit mix with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ stream) ^ index);
}

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// The standard normals at indices 2 * pair and 2 * pair + 1 of (seed, stream): Box-Muller on two
// independent uniforms, both of its outputs used.
inline void normal_pair_at(uint64_t seed, uint64_t stream, uint64_t pair, double* even,
                           double* odd) {
  const double u1 = 1.0 - uniform01(hash3(seed, stream, 2 * pair));  // (0, 1]: log is finite
  const double u2 = uniform01(hash3(seed, stream, 2 * pair + 1));
  const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
  *even = r * std::cos(a);
  *odd = r * std::sin(a);
}

// The standard normal at (seed, stream, index), as normal_pair_at gives it.
inline double normal_at(uint64_t seed, uint64_t stream, uint64_t index) {
  double even, odd;
  normal_pair_at(seed, stream, index / 2, &even, &odd);
  return index % 2 ? odd : even;
}

// A sequential view of the counter-based stream: draws advance `counter`, which together with
// the seed is the whole state (what a checkpoint saves).
struct CounterRng {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t counter = 0;
  double uniform() { return uniform01(hash3(seed, stream, counter++)); }
};

}  // namespace kiln::impl
