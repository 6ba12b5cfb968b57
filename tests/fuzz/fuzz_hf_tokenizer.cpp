// A Hugging Face tokenizer.json and a text, as two parts of one input: a file that loads must
// encode the text (with and without special tokens) into ids of its vocabulary, and decode them.
#include <string>
#include <vector>

#include "kiln/tokenizer.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = kiln_fuzz::split(data, size, 2);
  const auto path = kiln_fuzz::put("tokenizer.json", parts[0]);
  try {
    const kiln::HfTokenizer tok(path);
    const std::string_view text = parts[1];
    std::vector<std::int32_t> ids;
    for (auto mode : {kiln::HfTokenizer::SpecialTokens::ordinary_text,
                      kiln::HfTokenizer::SpecialTokens::allow}) {
      ids.clear();
      tok.encode(text, ids, mode);
      for (const std::int32_t id : ids)
        if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
      (void)tok.decode(ids);
    }
  } catch (const kiln::Error&) {
  }
  return 0;
}
