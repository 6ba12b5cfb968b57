// Loading a Hugging Face tokenizer.json: every key kiln reads is checked, and what kiln does not
// implement is refused naming the key, so a file is either encoded as Hugging Face encodes it or
// not loaded at all.
#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/io.hpp"
#include "runtime/tokenizer/hf_tokenizer_impl.hpp"

namespace kiln {
namespace {

using nlohmann::json;

#define KILN_HF_DATA(cond, ...) KILN_CHECK(cond, ::kiln::Status::data_error, __VA_ARGS__)
#define KILN_HF_UNSUPPORTED(cond, ...) KILN_CHECK(cond, ::kiln::Status::not_supported, __VA_ARGS__)

// The split patterns kiln matches by hand, exactly as they appear in the files that ship them.
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A short rendering of a JSON value for messages.
std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

// The file's name in quotes, as kiln's messages name files; every message below starts with it.
struct Where {
  std::string file;
};

// `obj[key]` when present and not null, else nullptr.
const json* get(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const Where& w, const json& obj, const char* key, const std::string& path,
              bool fallback) {
  const json* v = get(obj, key);
  if (!v) return fallback;
  KILN_HF_DATA(v->is_boolean(), w.file, ": ", path, ".", key, " must be true or false, not ",
               show(*v));
  return v->get<bool>();
}

// Adds the steps of one pre-tokenizer (`path` names it in messages) to `steps`.
void parse_pre_tokenizer(const Where& w, const json& p, const std::string& path,
                         std::vector<HfPreStep>& steps, int* byte_level) {
  KILN_HF_DATA(p.is_object() && p.contains("type") && p["type"].is_string(), w.file, ": ", path,
               " must be an object with a \"type\", not ", show(p));
  KILN_HF_UNSUPPORTED(*byte_level == 0, w.file, ": ", path,
                      " comes after the ByteLevel pre-tokenizer, which must be the last step");
  const std::string type = p["type"];
  if (type == "Sequence") {
    const json* list = get(p, "pretokenizers");
    KILN_HF_DATA(list && list->is_array(), w.file, ": ", path, ".pretokenizers must be an array");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_pre_tokenizer(w, (*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]", steps,
                          byte_level);
  } else if (type == "ByteLevel") {
    KILN_HF_UNSUPPORTED(!get_bool(w, p, "add_prefix_space", path, false), w.file, ": ", path,
                        ".add_prefix_space is true: kiln does not add a space before the text "
                        "(decode would not give the text back)");
    if (get_bool(w, p, "use_regex", path, true)) steps.push_back(HfPreStep::split_gpt2);
    ++*byte_level;
  } else if (type == "Split") {
    const json* pattern = get(p, "pattern");
    KILN_HF_DATA(pattern && pattern->is_object(), w.file, ": ", path, ".pattern must be an object");
    const json* regex = get(*pattern, "Regex");
    KILN_HF_UNSUPPORTED(regex && regex->is_string(), w.file, ": ", path, ".pattern ",
                        show(*pattern),
                        " is not a regex kiln implements (it implements Llama 3's, "
                        "Qwen2's and GPT-2's split patterns)");
    const std::string re = *regex;
    if (re == kLlama3Pattern) {
      steps.push_back(HfPreStep::split_llama3);
    } else if (re == kQwen2Pattern) {
      steps.push_back(HfPreStep::split_qwen2);
    } else if (re == kGpt2Pattern) {
      steps.push_back(HfPreStep::split_gpt2);
    } else {
      KILN_HF_UNSUPPORTED(false, w.file, ": ", path, ".pattern.Regex ", show(*regex),
                          " is not a pattern kiln implements (it implements Llama 3's, Qwen2's "
                          "and GPT-2's split patterns)");
    }
    const json* behavior = get(p, "behavior");
    KILN_HF_UNSUPPORTED(behavior && *behavior == "Isolated", w.file, ": ", path, ".behavior ",
                        behavior ? show(*behavior) : "(missing)",
                        " is not implemented (only \"Isolated\")");
    KILN_HF_UNSUPPORTED(!get_bool(w, p, "invert", path, false), w.file, ": ", path,
                        ".invert is true: not implemented");
  } else if (type == "Digits") {
    steps.push_back(get_bool(w, p, "individual_digits", path, false) ? HfPreStep::digits_individual
                                                                     : HfPreStep::digits);
  } else {
    KILN_HF_UNSUPPORTED(false, w.file, ": ", path, ".type \"", type,
                        "\" is not a pre-tokenizer kiln implements (Sequence, Split, ByteLevel, "
                        "Digits)");
  }
}

// The BOS content of a post_processor (`path` names it in messages), or "" when it adds none.
void parse_post_processor(const Where& w, const json& p, const std::string& path,
                          std::string* bos) {
  KILN_HF_DATA(p.is_object() && p.contains("type") && p["type"].is_string(), w.file, ": ", path,
               " must be an object with a \"type\", not ", show(p));
  const std::string type = p["type"];
  if (type == "ByteLevel") return;  // only offsets change, never ids
  if (type == "Sequence") {
    const json* list = get(p, "processors");
    KILN_HF_DATA(list && list->is_array(), w.file, ": ", path, ".processors must be an array");
    for (std::size_t i = 0; i < list->size(); ++i)
      parse_post_processor(w, (*list)[i], path + ".processors[" + std::to_string(i) + "]", bos);
    return;
  }
  KILN_HF_UNSUPPORTED(type == "TemplateProcessing", w.file, ": ", path, ".type \"", type,
                      "\" is not a post-processor kiln implements (ByteLevel, TemplateProcessing, "
                      "Sequence)");
  const json* single = get(p, "single");
  KILN_HF_DATA(single && single->is_array(), w.file, ": ", path, ".single must be an array");
  // Accepted: [A] and [SpecialToken, A]; anything else (an EOS after the text, a second
  // sequence) is refused, since kiln would encode it differently.
  auto is_seq_a = [](const json& e) {
    return e.is_object() && e.contains("Sequence") && e["Sequence"].is_object() &&
           e["Sequence"].value("id", "") == "A";
  };
  const bool plain = single->size() == 1 && is_seq_a((*single)[0]);
  const bool with_bos =
      single->size() == 2 && is_seq_a((*single)[1]) && (*single)[0].is_object() &&
      (*single)[0].contains("SpecialToken") && (*single)[0]["SpecialToken"].is_object() &&
      (*single)[0]["SpecialToken"].contains("id") && (*single)[0]["SpecialToken"]["id"].is_string();
  KILN_HF_UNSUPPORTED(plain || with_bos, w.file, ": ", path, ".single ", show(*single),
                      " is not implemented (only [A] and [SpecialToken, A], i.e. a BOS)");
  if (with_bos) *bos = (*single)[0]["SpecialToken"]["id"].get<std::string>();
}

}  // namespace

void HfTokenizer::Impl::add_to_trie(std::string_view content, std::int32_t id) {
  std::int32_t node = -1;
  for (const char ch : content) {
    const auto b = static_cast<unsigned char>(ch);
    std::int32_t next = -1;
    if (node < 0) {
      next = root[b];
    } else {
      for (const auto& [kb, kn] : trie[static_cast<std::size_t>(node)].kids)
        if (kb == b) next = kn;
    }
    if (next < 0) {
      next = static_cast<std::int32_t>(trie.size());
      trie.emplace_back();
      if (node < 0)
        root[b] = next;
      else
        trie[static_cast<std::size_t>(node)].kids.emplace_back(b, next);
    }
    node = next;
  }
  trie[static_cast<std::size_t>(node)].token = id;
}

// A function-try-block: nlohmann's own exceptions (a number too large for any C++ type, a key of
// the wrong JSON type read by value()) become a data error naming the file, never an exception
// the caller does not know (found by fuzz_hf_tokenizer).
HfTokenizer::HfTokenizer(const std::filesystem::path& tokenizer_json,
                         const HfTokenizerOptions& options) try
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  // Built by appending: GCC 12 warns (-Wrestrict, a false positive) on "'" + std::string&&.
  Where w;
  w.file.append("'").append(tokenizer_json.string()).append("'");
  std::error_code ec;
  const std::uintmax_t bytes = std::filesystem::file_size(tokenizer_json, ec);
  KILN_CHECK(!ec, Status::io_error, w.file, ": cannot read: ", ec.message());
  KILN_HF_DATA(bytes <= kHfMaxFileBytes, w.file, " holds ", bytes,
               " bytes, more than a tokenizer.json may (", kHfMaxFileBytes, ")");
  json j;
  try {
    j = json::parse(read_file(tokenizer_json));
  } catch (const json::exception& e) {
    KILN_HF_DATA(false, w.file, " is not valid JSON (truncated or damaged): ", e.what());
  }
  KILN_HF_DATA(j.is_object(), w.file, " is not a tokenizer.json: expected an object");

  // ---- what kiln does not implement ----
  if (const json* v = get(j, "normalizer")) {
    KILN_HF_UNSUPPORTED(v->is_object() && v->value("type", "") == "NFC", w.file, ": normalizer ",
                        show(*v), " is not implemented (only NFC)");
    m.nfc = true;
  }
  if (const json* v = get(j, "truncation"))
    KILN_HF_UNSUPPORTED(false, w.file, ": truncation ", show(*v), " is not implemented");
  if (const json* v = get(j, "padding"))
    KILN_HF_UNSUPPORTED(false, w.file, ": padding ", show(*v), " is not implemented");
  const json* model = get(j, "model");
  KILN_HF_DATA(model && model->is_object(), w.file, ": model must be an object");
  if (const json* t = get(*model, "type"))
    KILN_HF_UNSUPPORTED(*t == "BPE", w.file, ": model.type ", show(*t),
                        " is not implemented (only \"BPE\")");
  if (const json* v = get(*model, "dropout"))
    KILN_HF_UNSUPPORTED(false, w.file, ": model.dropout ", show(*v),
                        " is not implemented (kiln's BPE is deterministic)");
  KILN_HF_UNSUPPORTED(!get_bool(w, *model, "byte_fallback", "model", false), w.file,
                      ": model.byte_fallback is true: not a byte-level BPE");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* v = get(*model, key);
    KILN_HF_UNSUPPORTED(!v || *v == "", w.file, ": model.", key, " ", v ? show(*v) : "",
                        " is not implemented");
  }
  m.ignore_merges = get_bool(w, *model, "ignore_merges", "model", false);

  // ---- added tokens ----
  struct Added {
    std::string content;
    std::int32_t id;
    bool special;
  };
  std::vector<Added> added;
  std::unordered_map<std::string, std::int32_t> added_id;  // content -> id
  if (const json* list = get(j, "added_tokens")) {
    KILN_HF_DATA(list->is_array(), w.file, ": added_tokens must be an array");
    for (std::size_t i = 0; i < list->size(); ++i) {
      const json& a = (*list)[i];
      const std::string path = "added_tokens[" + std::to_string(i) + "]";
      KILN_HF_DATA(a.is_object(), w.file, ": ", path, " must be an object");
      const json* id = get(a, "id");
      const json* content = get(a, "content");
      KILN_HF_DATA(id && id->is_number_integer() && id->get<std::int64_t>() >= 0 &&
                       id->get<std::int64_t>() < kHfMaxVocab,
                   w.file, ": ", path, ".id must be an integer in [0, ", kHfMaxVocab, ")");
      KILN_HF_DATA(content && content->is_string() && !content->get<std::string>().empty() &&
                       content->get<std::string>().size() <= kHfMaxTokenBytes,
                   w.file, ": ", path, ".content must be a string of 1 to ", kHfMaxTokenBytes,
                   " bytes");
      for (const char* key : {"lstrip", "rstrip", "single_word"})
        KILN_HF_UNSUPPORTED(!get_bool(w, a, key, path, false), w.file, ": ", path, ".", key,
                            " is true: not implemented");
      Added t{content->get<std::string>(), static_cast<std::int32_t>(id->get<std::int64_t>()),
              get_bool(w, a, "special", path, false)};
      KILN_HF_DATA(added_id.emplace(t.content, t.id).second, w.file, ": ", path, ".content ",
                   show(*content), " is also the content of an earlier added token");
      added.push_back(std::move(t));
    }
  }

  // ---- model.vocab: byte-level token -> id ----
  const json* vocab = get(*model, "vocab");
  KILN_HF_DATA(vocab && vocab->is_object() && !vocab->empty(), w.file,
               ": model.vocab must be a non-empty object of token -> id");
  KILN_HF_DATA(static_cast<std::int64_t>(vocab->size()) <= kHfMaxVocab, w.file,
               ": model.vocab has ", vocab->size(), " tokens, more than kiln allows (", kHfMaxVocab,
               ")");
  std::int64_t n = 0;
  for (const auto& [key, value] : vocab->items()) {
    KILN_HF_DATA(value.is_number_integer() && value.get<std::int64_t>() >= 0 &&
                     value.get<std::int64_t>() < kHfMaxVocab,
                 w.file, ": model.vocab[", show(json(key)), "] must be an integer id in [0, ",
                 kHfMaxVocab, "), not ", show(value));
    n = std::max(n, value.get<std::int64_t>() + 1);
  }
  for (const Added& a : added)
    n = std::max<std::int64_t>(n, a.id + 1);
  m.tokens.assign(static_cast<std::size_t>(n), {});
  m.kind.assign(static_cast<std::size_t>(n), HfTokenKind::ordinary);
  std::vector<bool> seen(static_cast<std::size_t>(n), false);
  m.bpe.byte_id.fill(-1);
  m.vocab.reserve(vocab->size());
  std::string token;
  for (const auto& [key, value] : vocab->items()) {
    const auto id = static_cast<std::int32_t>(value.get<std::int64_t>());
    const auto slot = static_cast<std::size_t>(id);
    KILN_HF_DATA(!seen[slot], w.file, ": model.vocab gives id ", id, " to two tokens (",
                 show(json(key)), " is the second)");
    seen[slot] = true;
    KILN_HF_DATA(key.size() <= 2 * kHfMaxTokenBytes, w.file, ": model.vocab token ",
                 show(json(key)), " is longer than kiln allows");
    if (const auto a = added_id.find(key); a != added_id.end() && a->second == id)
      continue;  // an added token also listed in the vocabulary (SmolLM2): set below
    KILN_HF_DATA(impl::unicode_to_bytes(key, token) && !token.empty(), w.file,
                 ": model.vocab token ", show(json(key)), " (id ", id,
                 ") has a character outside the byte-level alphabet: not a byte-level BPE");
    KILN_HF_DATA(m.vocab.emplace(token, id).second, w.file, ": model.vocab token ", show(json(key)),
                 " (id ", id, ") spells the same bytes as id ", m.vocab[token]);
    if (token.size() == 1) m.bpe.byte_id[static_cast<unsigned char>(token[0])] = id;
    m.tokens[slot] = token;
  }
  for (const Added& a : added) {
    const auto slot = static_cast<std::size_t>(a.id);
    const bool in_vocab = seen[slot] && m.tokens[slot].empty();  // skipped above: same content
    KILN_HF_DATA(!seen[slot] || in_vocab, w.file, ": added token ", show(json(a.content)),
                 " has id ", a.id,
                 ", which model.vocab or an earlier added token gives to another token");
    seen[slot] = true;
    m.tokens[slot] = a.content;
    m.kind[slot] = a.special ? HfTokenKind::special : HfTokenKind::added;
    m.any_added_ordinary = m.any_added_ordinary || !a.special;
  }
  for (std::int64_t id = 0; id < n; ++id)
    KILN_HF_DATA(seen[static_cast<std::size_t>(id)], w.file, ": no token has id ", id,
                 " (model.vocab and added_tokens must cover the ids from 0 without gaps)");
  for (int b = 0; b < 256; ++b)
    KILN_HF_DATA(m.bpe.byte_id[static_cast<std::size_t>(b)] >= 0, w.file,
                 ": model.vocab has no token for byte ", b, ": not a byte-level BPE");
  m.root.fill(-1);
  for (const Added& a : added)
    m.add_to_trie(a.content, a.id);

  // ---- model.merges: by rank, "left right" or [left, right] ----
  const json* merges = get(*model, "merges");
  KILN_HF_DATA(merges && merges->is_array(), w.file, ": model.merges must be an array");
  KILN_HF_DATA(static_cast<std::int64_t>(merges->size()) <= kHfMaxVocab, w.file,
               ": model.merges has ", merges->size(), " merges, more than kiln allows");
  m.bpe.merges.reserve(merges->size());
  std::string left, right;
  for (std::size_t rank = 0; rank < merges->size(); ++rank) {
    const json& e = (*merges)[rank];
    std::string_view l, r;
    std::string joined;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const std::size_t space = s.find(' ');
      KILN_HF_DATA(space != std::string::npos && space > 0 && space + 1 < s.size() &&
                       s.find(' ', space + 1) == std::string::npos,
                   w.file, ": model.merges[", rank, "] ", show(e),
                   " is not two tokens separated by one space");
      l = std::string_view(s).substr(0, space);
      r = std::string_view(s).substr(space + 1);
    } else {
      KILN_HF_DATA(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(), w.file,
                   ": model.merges[", rank, "] ", show(e),
                   " is neither \"left right\" nor [left, right]");
      l = e[0].get_ref<const std::string&>();
      r = e[1].get_ref<const std::string&>();
    }
    const bool ok = impl::unicode_to_bytes(l, left) && impl::unicode_to_bytes(r, right);
    const auto li = m.vocab.find(left), ri = m.vocab.find(right);
    const auto mi = ok ? m.vocab.find(left + right) : m.vocab.end();
    KILN_HF_DATA(ok && li != m.vocab.end() && ri != m.vocab.end() && mi != m.vocab.end(), w.file,
                 ": model.merges[", rank, "] ", show(e),
                 " uses or makes a token that model.vocab does not have");
    KILN_HF_DATA(m.bpe.merges
                     .emplace(impl::pair_key(li->second, ri->second),
                              impl::BpeMerges::Merge{static_cast<std::int32_t>(rank), mi->second})
                     .second,
                 w.file, ": model.merges[", rank, "] ", show(e), " repeats an earlier merge");
  }

  // ---- pre-tokenizer, decoder, post-processor ----
  const json* pre = get(j, "pre_tokenizer");
  KILN_HF_UNSUPPORTED(pre, w.file,
                      ": pre_tokenizer is null: a byte-level BPE needs a ByteLevel pre-tokenizer");
  int byte_level = 0;
  parse_pre_tokenizer(w, *pre, "pre_tokenizer", m.steps, &byte_level);
  KILN_HF_UNSUPPORTED(byte_level == 1, w.file,
                      ": pre_tokenizer has no ByteLevel step: not a byte-level BPE");
  const json* decoder = get(j, "decoder");
  KILN_HF_UNSUPPORTED(decoder && decoder->is_object() && decoder->value("type", "") == "ByteLevel",
                      w.file, ": decoder ", decoder ? show(*decoder) : "null",
                      " is not implemented (only ByteLevel)");
  std::string template_bos;
  if (const json* post = get(j, "post_processor"))
    parse_post_processor(w, *post, "post_processor", &template_bos);

  // ---- options ----
  if (!template_bos.empty()) {
    m.bos = added_token(template_bos);
    KILN_HF_DATA(m.bos >= 0, w.file, ": post_processor adds ", show(json(template_bos)),
                 ", which is not an added token");
  }
  if (!options.bos.empty()) {
    m.bos = added_token(options.bos);
    KILN_CHECK_ARG(m.bos >= 0, "HfTokenizer: the BOS option names ", show(json(options.bos)),
                   ", which is not an added token of ", w.file);
  }
  KILN_CHECK_ARG(!options.add_bos || m.bos >= 0, "HfTokenizer: add_bos asks for a BOS token, but ",
                 w.file, "'s post_processor adds none: name it with the bos option");
  m.add_bos = options.add_bos;
  if (!options.eot.empty()) {
    m.eot = added_token(options.eot);
    KILN_CHECK_ARG(m.eot >= 0, "HfTokenizer: the eot option names ", show(json(options.eot)),
                   ", which is not an added token of ", w.file);
  } else {
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>"})
      if (m.eot < 0) m.eot = added_token(name);
    KILN_CHECK_ARG(m.eot >= 0, "HfTokenizer: ", w.file,
                   " has neither <|endoftext|> nor <|end_of_text|>: name the end-of-text token "
                   "with the eot option");
  }
} catch (const nlohmann::json::exception& e) {
  KILN_HF_DATA(false, "'", tokenizer_json.string(),
               "' is not a tokenizer.json kiln can read: ", e.what());
}

}  // namespace kiln
