// The datasheet peaks MFU is measured against (kiln/device.hpp, datasheet_bf16_flops).
//
// Every figure is the vendor's dense bf16 tensor-core rate with fp32 accumulation (what kiln's
// GEMMs and attention run), i.e. half the "with sparsity" figure the datasheets headline:
//   H100 SXM5 989.4, H100 PCIe 756.5 TFLOP/s: NVIDIA H100 Tensor Core GPU Architecture
//     whitepaper (2022), table "NVIDIA H100 compared to A100", peak BF16 tensor TFLOPS with FP32
//     accumulate 989.4 / 1978.9 and 756.5 / 1513.
//   H100 NVL 835.5: NVIDIA H100 datasheet (2024), BF16 tensor core 1,671 TFLOPS with sparsity.
//   H200 (SXM) 989.4, H200 NVL 835.5: NVIDIA H200 datasheet (2024), BF16 tensor core 1,979 and
//     1,671 TFLOPS with sparsity (the H100 SXM5's GH100 compute; only the memory differs).
//   GH200 989.4: NVIDIA GH200 Grace Hopper Superchip datasheet, the H100 SXM5's 1,979 with
//     sparsity.
//   A100 (SXM4 and PCIe, 40 and 80 GB) 312, A30 165, A10 125: the NVIDIA A100, A30 and A10
//     datasheets, BF16 tensor core 312 / 624, 165 / 330, 125 / 250 TFLOPS.
//   L40S 362.05, L40 181.05, L4 121: the NVIDIA L40S, L40 and L4 datasheets, BF16 tensor core
//     733 / 362.1 / 242 TFLOPS with sparsity.
//   GeForce RTX 4090 165.2: NVIDIA Ada GPU Architecture whitepaper, appendix table, peak BF16
//     tensor TFLOPS with FP32 accumulate 165.2 / 330.4 (GeForce runs FP32 accumulation at half
//     the FP16-accumulate rate).
//   GeForce RTX 3090 71: NVIDIA Ampere GA102 GPU Architecture whitepaper, peak BF16 tensor
//     TFLOPS with FP32 accumulate 71 / 142.
// Variants with other silicon or clocks (RTX 4090 D, RTX 3090 Ti, A10G, H800, ...) are not
// listed and so get no figure rather than their relative's.
#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "kiln/device.hpp"

namespace kiln {

namespace {

struct Peak {
  // Words the name must hold, all of them (case-insensitive; the name splits at spaces, '-'
  // and '_'); the first row whose words all match decides, so variants come before the plain
  // model name.
  const char* words[2];
  int major, minor;
  double flops;  // 0: known to differ from the row after it, and not listed
};

constexpr Peak kPeaks[] = {
    {{"H100", "PCIe"}, 9, 0, 756.5e12},
    {{"H100", "NVL"}, 9, 0, 835.5e12},
    // The SXM5 part names itself "NVIDIA H100 80GB HBM3" (or with SXM5 in it).
    {{"H100", "HBM3"}, 9, 0, 989.4e12},
    {{"H100", "SXM5"}, 9, 0, 989.4e12},
    {{"H200", "NVL"}, 9, 0, 835.5e12},
    {{"H200", nullptr}, 9, 0, 989.4e12},
    {{"GH200", nullptr}, 9, 0, 989.4e12},
    {{"A100", nullptr}, 8, 0, 312e12},
    {{"A30", nullptr}, 8, 0, 165e12},
    {{"A10", nullptr}, 8, 6, 125e12},
    {{"L40S", nullptr}, 8, 9, 362.05e12},
    {{"L40", nullptr}, 8, 9, 181.05e12},
    {{"L4", nullptr}, 8, 9, 121e12},
    {{"4090", "D"}, 8, 9, 0},
    {{"4090", nullptr}, 8, 9, 165.2e12},
    {{"3090", "Ti"}, 8, 6, 0},
    {{"3090", nullptr}, 8, 6, 71e12},
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string> words_of(std::string_view name) {
  std::vector<std::string> words;
  std::string word;
  for (const char c : name) {
    if (c == ' ' || c == '-' || c == '_') {
      if (!word.empty()) words.push_back(lower(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(lower(word));
  return words;
}

}  // namespace

double datasheet_bf16_flops(std::string_view name, int compute_major, int compute_minor) {
  const std::vector<std::string> words = words_of(name);
  auto has = [&](const char* w) {
    return w == nullptr || std::find(words.begin(), words.end(), lower(w)) != words.end();
  };
  for (const Peak& p : kPeaks) {
    if (has(p.words[0]) && has(p.words[1])) {
      // A name that matches but a compute capability that does not is no device we know.
      return p.major == compute_major && p.minor == compute_minor ? p.flops : 0.0;
    }
  }
  return 0.0;
}

double datasheet_bf16_flops(const kiln_device_info_t& info) {
  return datasheet_bf16_flops(info.name, info.compute_major, info.compute_minor);
}

}  // namespace kiln
