// GPT-2's byte-level BPE: vocabulary loading, the pre-tokenizer, and rank-ordered merges.
#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/io.hpp"
#include "kiln/tokenizer.hpp"
#include "runtime/tokenizer/byte_level.hpp"
#include "runtime/tokenizer/pretokenize.hpp"
#include "runtime/tokenizer/unicode.hpp"

namespace kiln {
#define KILN_DATA_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)

struct Gpt2Tokenizer::Impl {
  std::vector<std::string> tokens;  // id -> bytes (specials: their name)
  std::vector<bool> special;        // id -> is a special token
  impl::BpeMerges bpe;
  std::int32_t eot = -1;
  impl::PieceCache cache;
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::filesystem::path& vocab_dir)
    : Gpt2Tokenizer(vocab_dir / "encoder.json", vocab_dir / "vocab.bpe") {}

Gpt2Tokenizer::Gpt2Tokenizer(const std::filesystem::path& encoder_json,
                             const std::filesystem::path& vocab_bpe)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string enc_name = encoder_json.string(), bpe_name = vocab_bpe.string();

  // ---- encoder.json: {"token": id, ...}, ids dense from 0 ----
  nlohmann::json j;
  {
    const std::string text = read_file(encoder_json);
    j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  }
  KILN_DATA_CHECK(!j.is_discarded(), "'", enc_name, "' is not valid JSON");
  KILN_DATA_CHECK(j.is_object() && !j.empty(), "'", enc_name,
                  "' is not a GPT-2 encoder.json: expected a non-empty object of token -> id");
  const std::size_t n = j.size();
  KILN_DATA_CHECK(n <= (std::size_t{1} << 30), "'", enc_name, "' has too many tokens (", n, ")");
  m.tokens.assign(n, {});
  m.special.assign(n, false);
  std::vector<bool> seen(n, false);
  std::unordered_map<std::string, std::int32_t> id_of;  // bytes -> id (ordinary tokens only)
  id_of.reserve(n);
  m.bpe.byte_id.fill(-1);
  std::string bytes;
  for (const auto& [key, value] : j.items()) {
    KILN_DATA_CHECK(value.is_number_integer(), "'", enc_name, "': the id of token '", key,
                    "' is not an integer");
    const auto id = value.get<std::int64_t>();
    KILN_DATA_CHECK(id >= 0 && static_cast<std::size_t>(id) < n, "'", enc_name, "': token '", key,
                    "' has id ", id, ", outside [0, ", n, "): ids must be dense from 0");
    KILN_DATA_CHECK(!seen[static_cast<std::size_t>(id)], "'", enc_name, "': id ", id,
                    " is given to two tokens");
    seen[static_cast<std::size_t>(id)] = true;
    const auto i = static_cast<std::int32_t>(id);
    if (key == "<|endoftext|>" || !impl::unicode_to_bytes(key, bytes)) {
      m.tokens[static_cast<std::size_t>(i)] = key;
      m.special[static_cast<std::size_t>(i)] = true;
      if (key == "<|endoftext|>") m.eot = i;
      continue;
    }
    KILN_DATA_CHECK(!bytes.empty(), "'", enc_name, "': token id ", id, " is empty");
    KILN_DATA_CHECK(id_of.emplace(bytes, i).second, "'", enc_name, "': token '", key, "' (id ", id,
                    ") spells the same bytes as id ", id_of[bytes]);
    if (bytes.size() == 1) m.bpe.byte_id[static_cast<unsigned char>(bytes[0])] = i;
    m.tokens[static_cast<std::size_t>(i)] = bytes;
  }
  KILN_DATA_CHECK(m.eot >= 0, "'", enc_name, "' has no <|endoftext|> token");
  for (int b = 0; b < 256; ++b)
    KILN_DATA_CHECK(m.bpe.byte_id[static_cast<std::size_t>(b)] >= 0, "'", enc_name,
                    "' has no token for byte ", b, ": not a byte-level vocabulary");

  // ---- vocab.bpe: "#version" line, then one merge "left right" per line, by rank ----
  const std::string text = read_file(vocab_bpe);
  std::size_t pos = 0, line_no = 0;
  std::int32_t rank = 0;
  std::string left, right;
  m.bpe.merges.reserve(n);
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::size_t space = line.find(' ');
    KILN_DATA_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                        line.find(' ', space + 1) == std::string_view::npos,
                    "'", bpe_name, "' line ", line_no,
                    ": expected two tokens separated by one "
                    "space, got '",
                    line, "'");
    const bool ok = impl::unicode_to_bytes(line.substr(0, space), left) &&
                    impl::unicode_to_bytes(line.substr(space + 1), right);
    KILN_DATA_CHECK(ok, "'", bpe_name, "' line ", line_no, ": '", line,
                    "' has a character that stands for no byte");
    const auto l = id_of.find(left), r = id_of.find(right), merged = id_of.find(left + right);
    KILN_DATA_CHECK(l != id_of.end() && r != id_of.end() && merged != id_of.end(), "'", bpe_name,
                    "' line ", line_no, ": merge '", line, "' uses or makes a token that '",
                    enc_name, "' does not have");
    // A repeated merge keeps its first (best) rank, as a rank lookup table built in order would.
    m.bpe.merges.emplace(impl::pair_key(l->second, r->second),
                         impl::BpeMerges::Merge{rank++, merged->second});
  }
  KILN_DATA_CHECK(rank > 0, "'", bpe_name, "' holds no merges");
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::int32_t Gpt2Tokenizer::vocab_size() const {
  return static_cast<std::int32_t>(impl_->tokens.size());
}

std::int32_t Gpt2Tokenizer::eot_token() const {
  return impl_->eot;
}

bool Gpt2Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[static_cast<std::size_t>(id)];
}

std::string_view Gpt2Tokenizer::token_bytes(std::int32_t id) const {
  KILN_CHECK_ARG(id >= 0 && id < vocab_size(), "Gpt2Tokenizer: token id ", id,
                 " is outside the vocabulary [0, ", vocab_size(), ")");
  return impl_->tokens[static_cast<std::size_t>(id)];
}

// ---- pre-tokenizer ------------------------------------------------------------------------------

std::vector<std::string_view> Gpt2Tokenizer::split(std::string_view text) {
  std::vector<std::string_view> pieces;
  impl::split_gpt2(text, pieces);
  return pieces;
}

// ---- BPE ----------------------------------------------------------------------------------------

void Gpt2Tokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out) const {
  const Impl& m = *impl_;
  std::vector<std::string_view> pieces;
  std::vector<std::int32_t> ids;
  impl::split_gpt2(text, pieces);
  for (const std::string_view piece : pieces) {
    if (piece.size() == 1) {  // no merge applies to one byte: skip the cache
      out.push_back(m.bpe.byte_id[static_cast<unsigned char>(piece[0])]);
      continue;
    }
    if (m.cache.find(piece, out)) continue;
    ids.clear();
    m.bpe.bpe(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    m.cache.insert(piece, ids);
  }
}

}  // namespace kiln
