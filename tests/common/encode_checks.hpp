// Checks shared by the tokenizer tests (gpt2_tokenizer_test.cpp, hf_tokenizer_llama3_test.cpp):
// concurrent encoding, and the long single pre-token that catches quadratic merging.
#pragma once

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace kiln::test {

// Two threads encoding `texts` with `encode` (one front to back, one back to front, sharing any
// cache the tokenizer keeps) give what one thread gives.
template <typename Encode>
void check_concurrent_encoding(const std::vector<std::string>& texts, const Encode& encode) {
  std::vector<std::vector<std::int32_t>> serial;
  for (const auto& s : texts)
    serial.push_back(encode(s));
  std::vector<std::vector<std::int32_t>> a(texts.size()), b(texts.size());
  std::thread ta([&] {
    for (std::size_t i = 0; i < texts.size(); ++i)
      a[i] = encode(texts[i]);
  });
  std::thread tb([&] {
    for (std::size_t i = texts.size(); i-- > 0;)
      b[i] = encode(texts[i]);
  });
  ta.join();
  tb.join();
  CHECK(a == serial);
  CHECK(b == serial);
}

// One 40 KB pre-token (no spaces): merging it by rescanning all pairs per merge is quadratic.
inline std::string long_single_piece() {
  std::string s;
  for (int i = 0; i < 2500; ++i)
    s += "thequickbrownfox";
  return s;
}

}  // namespace kiln::test
