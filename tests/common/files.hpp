// Test helpers for file-based tests: a scratch directory removed at the end, whole-file helpers,
// and a way to report a test as skipped.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::test {

// A fresh directory under the system's temporary directory, removed with its contents on
// destruction. KILN_TEST_KEEP_FILES=1 keeps it for inspection.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }
  // Names of the entries in the directory, sorted (hidden ones included).
  std::vector<std::string> list() const;

 private:
  std::filesystem::path path_;
};

void write_bytes(const std::filesystem::path& path, std::string_view bytes);
std::string read_bytes(const std::filesystem::path& path);
// The path in single quotes, as kiln's messages name files.
std::string quoted(const std::filesystem::path& path);

// What a command run through the shell did: its exit status (-1 when it did not exit, e.g. it was
// killed) and its stdout and stderr together.
struct CommandResult {
  int status;
  std::string output;
};
// Runs `command` (already quoted for the shell), its output captured in a file in `dir` that is
// removed afterwards. The demo tests run kiln's programs through this.
CommandResult run_command(const TempDir& dir, const std::string& command);

// Prints "[kiln-skip] <why>", which ctest's SKIP_REGULAR_EXPRESSION for the CPU tests turns into
// "Skipped". Return from the test case right after it (KILN_SKIP does).
void report_skip(const std::string& why);

}  // namespace kiln::test

#define KILN_SKIP(why)              \
  do {                              \
    ::kiln::test::report_skip(why); \
    return;                         \
  } while (0)
