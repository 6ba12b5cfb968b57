// Safe file I/O for kiln's runtime: checksums, atomic replacement of a file, whole-file reads and
// read-only memory maps. Everything here throws kiln::Error naming the file and the problem:
//   Status::io_error    the operating system refused (missing file, no permission, disk full)
//   Status::data_error  the bytes are there but wrong (truncated, corrupt, of another kind)
// Nothing here prints or exits. Paths in messages are quoted as given by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/error.hpp"
#include "kiln/export.h"

namespace kiln {

// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected, as iSCSI, ext4 and Btrfs use it).
// Incremental: crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b; start from 0.
// crc32c("123456789") == 0xE3069283. Uses the SSE4.2 crc32 instruction in three streams when the
// CPU has it (about 9 GB/s on cached data on the CI machine, so usually as fast as memory), else a
// table-driven loop (about 0.7 GB/s there); both give the same value.
KILN_API std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;
inline std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
  return crc32c(bytes.data(), bytes.size(), crc);
}

// Writes a file so that readers see either the old file or the complete new one, never a mix, even
// if the process dies or the machine loses power midway:
//   1. writes to a fresh temporary file in the same directory (".<name>.tmp.<unique>"),
//   2. on commit(): flushes, fsyncs the file, renames it over `path`, fsyncs the directory.
// If anything fails before the rename, or the writer is destroyed without commit() (an exception
// unwinding through the caller), the temporary is removed and `path` is untouched. The writer holds
// an flock(2) on its temporary until it is renamed or removed, so that the temporary of a killed
// writer can be told from a live one (remove_stale_temporaries). A failure of
// the final directory fsync is reported (io_error) although the new file is then already in place.
//
//   kiln::AtomicFileWriter w("ckpt/model.bin");
//   w.write(header, sizeof header);
//   w.write(params.data(), params.size() * sizeof(float));
//   w.patch(0, &fixed_header, sizeof fixed_header);   // rewrite bytes already written
//   w.commit();
class KILN_API AtomicFileWriter {
 public:
  // Creates the temporary file. Throws io_error when the directory does not exist or is not
  // writable. `buffer_bytes` of writes are gathered before each system call.
  explicit AtomicFileWriter(std::filesystem::path path, std::size_t buffer_bytes = 1 << 20);
  ~AtomicFileWriter();  // aborts unless committed
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends `size` bytes. Throws io_error (e.g. disk full), after which the writer is aborted.
  void write(const void* data, std::size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // Overwrites `size` bytes at `offset`, which must lie within what was written so far (for headers
  // whose counts and checksums are known only at the end).
  void patch(std::uint64_t offset, const void* data, std::size_t size);
  // Bytes written so far.
  std::uint64_t size() const noexcept { return size_; }
  // Makes the file durable and visible under its final path. Further writes are invalid_argument.
  void commit();
  // Removes the temporary file; `path` is untouched. Safe to call more than once. Never throws.
  void abort() noexcept;

  const std::filesystem::path& path() const noexcept { return path_; }
  // The temporary file's path (empty once committed or aborted); for tests and messages.
  const std::filesystem::path& temp_path() const noexcept { return temp_path_; }

 private:
  void flush();
  void require_open(const char* what) const;

  std::filesystem::path path_, temp_path_;
  int fd_ = -1;
  int lock_fd_ = -1;  // a second descriptor of the temporary holding its lock, kept until it is
                      // renamed (closing fd_ first checks for deferred write errors)
  std::vector<char> buffer_;
  std::size_t buffered_ = 0;
  std::uint64_t size_ = 0;
};

// Removes from `dir` the temporaries that killed writers left behind: files named as
// AtomicFileWriter names them (".<name>.tmp.<pid>.<n>") that no live writer holds locked (a
// killed process's locks are released by the system; a live writer in any process, or in this
// one, keeps its lock). Files of other names, and temporaries on file systems without flock, are
// left alone. Returns how many files were removed. Never throws. Checkpoint saves and loads call
// it on their folder.
KILN_API int remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

// Runs `body` with a writer for `path` and commits it when `body` returns. If `body` throws, the
// temporary file is removed, `path` keeps its old contents (or stays absent) and the exception
// propagates unchanged.
KILN_API void write_file_atomically(const std::filesystem::path& path,
                                    const std::function<void(AtomicFileWriter&)>& body);
KILN_API void write_file_atomically(const std::filesystem::path& path, std::string_view contents);

// The whole file as bytes. Throws io_error ("cannot open 'x': No such file or directory").
KILN_API std::string read_file(const std::filesystem::path& path);

// A whole file mapped read-only into memory. The file must not be modified while it is mapped
// (kiln replaces files by rename, which leaves existing mappings intact). Movable, not copyable.
// An empty file maps to an empty span.
class KILN_API MappedFile {
 public:
  MappedFile() = default;
  // Throws io_error naming `path` when it cannot be opened, is not a regular file, or mmap fails.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const noexcept { return static_cast<const std::byte*>(data_); }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::byte> bytes() const noexcept { return {data(), size_}; }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void release() noexcept;
  std::filesystem::path path_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace kiln
