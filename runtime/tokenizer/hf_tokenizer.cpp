// HfTokenizer's encoder: added tokens first, then the normalizer (NFC or none) and the
// pre-tokenizer's steps on the text between them, then for each piece
// the whole-piece lookup (ignore_merges) or the rank-ordered merges. The order of these stages,
// and the longest-first rule for added tokens, are those of Hugging Face's tokenizers
// (AddedVocabulary::split_with_indices, then PreTokenizer, then Model::tokenize).
#include <string>
#include <string_view>
#include <vector>

#include "errors/check.hpp"
#include "runtime/tokenizer/hf_tokenizer_impl.hpp"
#include "runtime/tokenizer/nfc.hpp"
#include "runtime/tokenizer/pretokenize.hpp"

namespace kiln {

HfTokenizer::~HfTokenizer() = default;

std::int32_t HfTokenizer::vocab_size() const {
  return static_cast<std::int32_t>(impl_->tokens.size());
}

std::int32_t HfTokenizer::eot_token() const {
  return impl_->eot;
}

std::int32_t HfTokenizer::bos_token() const {
  return impl_->bos;
}

bool HfTokenizer::is_special(std::int32_t id) const {
  return id >= 0 && id < vocab_size() &&
         impl_->kind[static_cast<std::size_t>(id)] == HfTokenKind::special;
}

std::string_view HfTokenizer::token_bytes(std::int32_t id) const {
  KILN_CHECK_ARG(id >= 0 && id < vocab_size(), "HfTokenizer: token id ", id,
                 " is outside the vocabulary [0, ", vocab_size(), ")");
  return impl_->tokens[static_cast<std::size_t>(id)];
}

std::int32_t HfTokenizer::added_token(std::string_view content) const {
  std::int32_t id = -1;
  const std::size_t len = impl_->match_added(content, 0, /*allow_special=*/true, &id);
  return len == content.size() && !content.empty() ? id : -1;
}

// ---- added tokens -------------------------------------------------------------------------------

std::size_t HfTokenizer::Impl::match_added(std::string_view text, std::size_t i, bool allow_special,
                                           std::int32_t* id) const {
  std::size_t best = 0;
  std::int32_t node = root[static_cast<unsigned char>(text[i])];
  for (std::size_t k = i + 1; node >= 0; ++k) {
    const Node& nd = trie[static_cast<std::size_t>(node)];
    if (nd.token >= 0 &&
        (allow_special || kind[static_cast<std::size_t>(nd.token)] != HfTokenKind::special)) {
      best = k - i;
      *id = nd.token;
    }
    if (k >= text.size()) break;
    const auto b = static_cast<unsigned char>(text[k]);
    node = -1;
    for (const auto& [kb, kn] : nd.kids)
      if (kb == b) {
        node = kn;
        break;
      }
  }
  return best;
}

// ---- pre-tokenizer and BPE ----------------------------------------------------------------------

namespace {

void apply_step(HfPreStep step, std::string_view text, std::vector<std::string_view>& out) {
  switch (step) {
    case HfPreStep::split_gpt2:
      impl::split_gpt2(text, out);
      break;
    case HfPreStep::split_llama3:
      impl::split_llama3(text, 3, out);
      break;
    case HfPreStep::split_qwen2:
      impl::split_llama3(text, 1, out);
      break;
    case HfPreStep::digits:
      impl::split_digits(text, false, out);
      break;
    case HfPreStep::digits_individual:
      impl::split_digits(text, true, out);
      break;
  }
}

}  // namespace

void HfTokenizer::Impl::pre_tokenize(std::string_view text,
                                     std::vector<std::string_view>& pieces) const {
  pieces.clear();
  if (steps.empty()) {  // ByteLevel without its regex: the whole text is one piece
    pieces.push_back(text);
    return;
  }
  apply_step(steps[0], text, pieces);
  std::vector<std::string_view> next;
  for (std::size_t s = 1; s < steps.size(); ++s) {
    next.clear();
    for (const std::string_view p : pieces)
      apply_step(steps[s], p, next);
    pieces.swap(next);
  }
}

void HfTokenizer::Impl::encode_plain(std::string_view text, std::vector<std::int32_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  if (nfc && !impl::nfc_quick_check(text)) {
    impl::nfc(text, normalized);
    text = normalized;
  }
  std::vector<std::string_view> pieces;
  std::vector<std::int32_t> ids;
  pre_tokenize(text, pieces);
  for (const std::string_view piece : pieces) {
    if (piece.size() == 1) {  // no merge applies to one byte
      out.push_back(bpe.byte_id[static_cast<unsigned char>(piece[0])]);
      continue;
    }
    if (ignore_merges) {
      if (const auto it = vocab.find(piece); it != vocab.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    if (cache.find(piece, out)) continue;
    ids.clear();
    bpe.bpe(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    cache.insert(piece, ids);
  }
}

void HfTokenizer::encode(std::string_view text, std::vector<std::int32_t>& out,
                         SpecialTokens specials) const {
  const Impl& m = *impl_;
  if (m.add_bos) out.push_back(m.bos);
  const bool allow = specials == SpecialTokens::allow;
  if (!allow && !m.any_added_ordinary) {  // nothing to look for
    m.encode_plain(text, out);
    return;
  }
  std::size_t start = 0;  // of the text not yet encoded
  for (std::size_t i = 0; i < text.size();) {
    std::int32_t id = -1;
    const std::size_t len =
        m.root[static_cast<unsigned char>(text[i])] < 0 ? 0 : m.match_added(text, i, allow, &id);
    if (len == 0) {
      ++i;
      continue;
    }
    m.encode_plain(text.substr(start, i - start), out);
    out.push_back(id);
    i += len;
    start = i;
  }
  m.encode_plain(text.substr(start), out);
}

void HfTokenizer::encode_into(std::string_view text, std::vector<std::int32_t>& out) const {
  encode(text, out, SpecialTokens::ordinary_text);
}

std::vector<std::string_view> HfTokenizer::split(std::string_view text) const {
  std::vector<std::string_view> pieces;
  if (!text.empty()) impl_->pre_tokenize(text, pieces);
  return pieces;
}

}  // namespace kiln
