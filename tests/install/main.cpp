// Uses kiln through its installed headers and library only. Exits non-zero on any surprise.
#include <cstdio>
#include <string>

#include <kiln/kiln.hpp>

#define EXPECT(cond)                                                                \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "downstream: expected %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

int main() {
  EXPECT(std::string(kiln_version_string()) == KILN_VERSION_STRING);

  // The C ABI reports a bad argument with a status and a message.
  EXPECT(kiln_get_library_versions(nullptr) == KILN_STATUS_INVALID_ARGUMENT);
  EXPECT(std::string(kiln_last_error()).find("out is null") != std::string::npos);

  // The C++ layer throws kiln::Error, whose type crosses the shared library's boundary.
  try {
    kiln::check(kiln_get_library_versions(nullptr));
    return 1;
  } catch (const kiln::Error& e) {
    EXPECT(e.status() == kiln::Status::invalid_argument);
  }

  int count = 0;
  if (kiln_device_count(&count) == KILN_STATUS_OK) {
    kiln::Device device(0);
    std::printf("downstream: kiln %s on %s\n", kiln_version_string(), device.info().name);
  } else {
    std::printf("downstream: kiln %s, %s\n", kiln_version_string(), kiln_last_error());
  }
  return 0;
}
