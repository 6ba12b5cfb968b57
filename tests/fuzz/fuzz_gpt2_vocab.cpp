// The GPT-2 tokenizer's files: encoder.json and vocab.bpe as two parts of one input; a
// vocabulary that loads must then encode and round-trip a text.
#include <string>

#include "kiln/tokenizer.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto parts = kiln_fuzz::split(data, size, 2);
  const auto enc = kiln_fuzz::put("encoder.json", parts[0]);
  const auto bpe = kiln_fuzz::put("vocab.bpe", parts[1]);
  try {
    const kiln::Gpt2Tokenizer tok(enc, bpe);
    const std::string text = "the and thing\xC3\xA9 <|endoftext|> 123 \xFF";
    if (tok.decode(tok.encode(text)) != text) __builtin_trap();
  } catch (const kiln::Error&) {
  }
  return 0;
}
