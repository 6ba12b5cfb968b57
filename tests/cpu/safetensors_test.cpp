// safetensors: round trips in every float dtype, a file assembled by hand from the format's
// description, and each kind of damage rejected with an error naming the file.
#include <catch2/catch.hpp>

#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/safetensors.hpp"
#include "tests/common/files.hpp"
#include "tests/common/support.hpp"

using kiln::SafeDtype;
using kiln::SafetensorsEntry;
using kiln::SafetensorsReader;
using kiln::Status;
using kiln::test::TempDir;

namespace {

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A file from a header text and a data section, as the format describes it.
std::string assemble(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

// "{" + body + "}", built by appending (GCC 12 warns falsely about "literal" + std::string).
std::string braces(const std::string& body) {
  std::string s(1, '{');
  s += body;
  s += '}';
  return s;
}

kiln::Error open_error(const std::filesystem::path& path) {
  try {
    SafetensorsReader r(path);
  } catch (const kiln::Error& e) {
    return e;
  }
  FAIL("the file opened");
  return kiln::Error(Status::ok, "");
}

}  // namespace

TEST_CASE("safetensors round-trips F32, F16, BF16, F64 and raw tensors with metadata",
          "[safetensors]") {
  TempDir dir;
  auto rng = kiln::test::make_rng(41);
  const auto a = kiln::test::random_normal(6 * 5, 0.f, 3.f, rng);
  auto b = kiln::test::random_normal(7, 0.f, 1.f, rng);
  b[0] = 65504.f;  // F16's largest
  b[1] = 1e-7f;    // F16 subnormal
  b[2] = -0.f;
  b[3] = INFINITY;
  const auto c = kiln::test::random_normal(9, 0.f, 1e3f, rng);
  const auto d = kiln::test::random_normal(4, 0.f, 1.f, rng);
  const std::vector<std::int64_t> ints = {1, -2, 1LL << 40};
  const std::vector<float> scalar = {42.5f};
  const std::vector<SafetensorsEntry> out = {
      {.name = "h.0.attn.c_attn.weight", .dtype = SafeDtype::F32, .shape = {6, 5}, .data = a},
      {.name = "half", .dtype = SafeDtype::F16, .shape = {7}, .data = b},
      {.name = "brain", .dtype = SafeDtype::BF16, .shape = {3, 3}, .data = c},
      {.name = "double", .dtype = SafeDtype::F64, .shape = {2, 1, 2}, .data = d},
      {.name = "ids", .dtype = SafeDtype::I64, .shape = {3}, .raw = std::as_bytes(std::span(ints))},
      {.name = "scalar", .dtype = SafeDtype::F32, .shape = {}, .data = scalar},
      {.name = "empty", .dtype = SafeDtype::F32, .shape = {0, 4}},
  };
  const auto path = dir / "model.safetensors";
  kiln::write_safetensors(path, out, {{"format", "pt"}, {"step", "100"}});
  CHECK(dir.list() == std::vector<std::string>{"model.safetensors"});

  const SafetensorsReader r(path);
  CHECK(r.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"step", "100"}});
  REQUIRE(r.tensors().size() == 7);
  // Larger elements first, so each tensor is aligned to its element size in the file.
  std::size_t prev = 8;
  for (const auto& t : r.tensors()) {
    CHECK(kiln::safe_dtype_size(t.dtype) <= prev);
    prev = kiln::safe_dtype_size(t.dtype);
    CHECK(t.begin % kiln::safe_dtype_size(t.dtype) == 0);
  }
  const std::string bytes = kiln::test::read_bytes(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK((8 + header_len) % 8 == 0);

  CHECK(r.info("h.0.attn.c_attn.weight").shape == std::vector<std::int64_t>{6, 5});
  CHECK(r.read_float("h.0.attn.c_attn.weight") == a);
  const auto hb = r.read_float("half");
  for (std::size_t i = 0; i < b.size(); ++i)
    CHECK(hb[i] == __half2float(__float2half_rn(b[i])));
  CHECK(hb[0] == 65504.f);
  CHECK(std::signbit(hb[2]));
  CHECK(std::isinf(hb[3]));
  CHECK(r.read_float("brain") == kiln::test::round_to_bf16(c));
  CHECK(r.read_float("double") == d);
  CHECK(r.read_float("scalar") == scalar);
  CHECK(r.info("scalar").numel() == 1);
  CHECK(r.read_float("empty").empty());
  const auto raw = r.raw("ids");
  REQUIRE(raw.size() == 24);
  std::vector<std::int64_t> back(3);
  std::memcpy(back.data(), raw.data(), 24);
  CHECK(back == ints);

  CHECK(r.contains("half"));
  CHECK(!r.contains("nope"));
  CHECK_THROWS_WITH(r.info("nope"), Catch::Contains("has no tensor named 'nope'") &&
                                        Catch::Contains(path.string()));
  try {
    r.read_float("ids");
    FAIL("read I64 as float");
  } catch (const kiln::Error& e) {
    CHECK(e.status() == Status::not_supported);
  }
  std::vector<float> wrong(5);
  CHECK_THROWS_WITH(r.read_float("half", wrong), Catch::Contains("has 7 elements"));
}

TEST_CASE("safetensors reads a file assembled from the format's description", "[safetensors]") {
  TempDir dir;
  // Keys in any order, whitespace in the JSON, trailing space padding, tensors out of order.
  const std::string header = R"({"b": {"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
                             R"( "__metadata__": {"format": "pt"},)"
                             R"( "a": {"shape":[2], "data_offsets":[0,8], "dtype":"F32"}}   )";
  // bf16 0x3F80 = 1.0, 0xC000 = -2.0
  const std::string data = floats({1.5f, -0.25f}) + std::string("\x80\x3f\x00\xc0", 4);
  kiln::test::write_bytes(dir / "x.safetensors", assemble(header, data));
  const SafetensorsReader r(dir / "x.safetensors");
  REQUIRE(r.tensors().size() == 2);
  CHECK(r.tensors()[0].name == "a");  // data order
  CHECK(r.read_float("a") == std::vector<float>{1.5f, -0.25f});
  CHECK(r.read_float("b") == std::vector<float>{1.0f, -2.0f});
  CHECK(r.metadata().at("format") == "pt");
}

TEST_CASE("damaged safetensors files are rejected with errors naming the file", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "bad.safetensors";
  const std::string name = kiln::test::quoted(path);
  const std::string ok_data = floats({1.f, 2.f});
  auto expect = [&](const std::string& file_bytes, const std::string& text) {
    kiln::test::write_bytes(path, file_bytes);
    const kiln::Error e = open_error(path);
    CHECK(e.status() == Status::data_error);
    CHECK_THAT(e.message(), Catch::Contains(name) && Catch::Contains(text));
  };
  auto tensor = [](const char* n, const char* dtype, const char* shape, const char* offsets) {
    std::string s(1, '"');
    for (const char* part : {n, "\": {\"dtype\": \"", dtype, "\", \"shape\": ", shape,
                             ", \"data_offsets\": ", offsets, "}"})
      s += part;
    return s;
  };
  const std::string good = braces(tensor("w", "F32", "[2]", "[0, 8]"));
  {
    kiln::test::write_bytes(path, assemble(good, ok_data));
    CHECK(SafetensorsReader(path).read_float("w") == std::vector<float>{1.f, 2.f});
  }
  expect("abc", "shorter than the 8-byte header length");
  expect(le64(1ull << 40) + "{}", "more than the format's limit");
  expect(le64(500) + good + ok_data, "does not fit");
  expect(assemble("[1, 2]", ""), "does not start with '{'");
  expect(assemble("{\"w\": {\"dtype\": ", ok_data), "not valid JSON");
  expect(assemble(braces(tensor("w", "F32", "[1]", "[0, 4]") + ", " +
                         tensor("w", "F32", "[1]", "[4, 8]")),
                  ok_data),
         "names 'w' twice");
  expect(assemble(braces(tensor("w", "Q4", "[2]", "[0, 8]")), ok_data), "unknown dtype 'Q4'");
  expect(assemble(braces(tensor("w", "F32", "[-2]", "[0, 8]")), ok_data),
         "not a list of non-negative integers");
  expect(assemble(braces(tensor("w", "F32", "2", "[0, 8]")), ok_data), "shape is not a list");
  expect(assemble(braces(tensor("w", "F32", "[2]", "[0]")), ok_data), "is not [begin, end]");
  expect(assemble(braces(tensor("w", "F32", "[4]", "[0, 16]")), ok_data),
         "lie outside the 8-byte data section (truncated file?)");
  expect(assemble(braces(tensor("w", "F32", "[2]", "[8, 0]")), ok_data), "lie outside");
  expect(assemble(braces(tensor("w", "F32", "[3]", "[0, 8]")), ok_data),
         "shape [3] of F32 needs 12 bytes but data_offsets span 8");
  expect(assemble(braces(tensor("w", "BF16", "[2]", "[0, 8]")), ok_data),
         "needs 4 bytes but data_offsets span 8");
  expect(assemble(braces(tensor("a", "F32", "[2]", "[0, 8]") + ", " +
                         tensor("b", "F32", "[1]", "[4, 8]")),
                  ok_data),
         "overlaps tensor");
  expect(assemble(braces(tensor("a", "F32", "[1]", "[4, 8]")), ok_data),
         "bytes [0, 4) of the data section belong to no tensor");
  expect(assemble(good, ok_data + "junk"),
         "the last 4 bytes of the data section belong to no tensor");
  expect(assemble(good, ok_data).substr(0, 8 + good.size() + 5), "truncated file?");
  expect(assemble(R"({"__metadata__": {"step": 3}})", ""), "is not a string");
  expect(assemble(R"({"w": [1, 2]})", ""), "its entry is not an object");
  expect(assemble(R"({"w": {"dtype": "F32", "shape": [0]}})", ""),
         "needs dtype, shape and data_offsets");
}

TEST_CASE("write_safetensors rejects bad entries before writing anything", "[safetensors]") {
  TempDir dir;
  const std::vector<float> two = {1.f, 2.f};
  const auto path = dir / "w.safetensors";
  auto expect = [&](const std::vector<SafetensorsEntry>& t, const std::string& text) {
    try {
      kiln::write_safetensors(path, t);
      FAIL("wrote a bad entry");
    } catch (const kiln::Error& e) {
      CHECK(e.status() == Status::invalid_argument);
      CHECK_THAT(e.message(), Catch::Contains(text));
    }
    CHECK(dir.list().empty());
  };
  expect({{.name = "a", .shape = {2}, .data = two}, {.name = "a", .shape = {2}, .data = two}},
         "given twice");
  expect({{.name = "__metadata__", .shape = {2}, .data = two}}, "reserved or empty name");
  expect({{.name = "a", .shape = {3}, .data = two}}, "data holds 2 floats; shape [3] has 3");
  expect({{.name = "a", .shape = {-1}, .data = two}}, "negative dimension");
  expect({{.name = "a", .dtype = SafeDtype::I32, .shape = {2}, .data = two}}, "raw holds 0 bytes");
  const std::vector<std::byte> three(3);
  expect({{.name = "a", .dtype = SafeDtype::F16, .shape = {2}, .raw = three}},
         "raw holds 3 bytes; shape [2] of F16 needs 4");
}
