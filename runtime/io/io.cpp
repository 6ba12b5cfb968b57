// Checksums, the atomic file writer, whole-file reads and memory maps (POSIX).
#include "kiln/io.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "errors/check.hpp"
#include "runtime/io/io_internal.hpp"

namespace kiln {
namespace {

// ---- CRC-32C ------------------------------------------------------------------------------------

constexpr std::uint32_t kCrc32cPoly = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes, so eight input
// bytes fold into the CRC with eight independent lookups per step.
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i)
      c = (c >> 1) ^ ((c & 1u) ? kCrc32cPoly : 0u);
    t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (std::uint32_t b = 0; b < 256; ++b)
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

std::uint32_t crc32c_table(const unsigned char* p, std::size_t n, std::uint32_t c) noexcept {
  const auto& t = kCrcTables;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
    v ^= c;
    c = t[7][v & 0xFF] ^ t[6][(v >> 8) & 0xFF] ^ t[5][(v >> 16) & 0xFF] ^ t[4][(v >> 24) & 0xFF] ^
        t[3][(v >> 32) & 0xFF] ^ t[2][(v >> 40) & 0xFF] ^ t[1][(v >> 48) & 0xFF] ^ t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--)
    c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)
// The crc32 instruction has a latency of 3 cycles but issues every cycle, so one dependent chain
// runs at a third of its speed. Three chains over three consecutive blocks of kBlock bytes run
// together, and their registers are joined by linearity:
//   reg(init, A B C) = M^2K reg(init, A)  ^  M^K reg(0, B)  ^  reg(0, C)
// where M^K advances a register over K zero bytes. M^K is linear in the 32 register bits, so it is
// applied with four 256-entry tables built from the images of the 32 basis vectors.
constexpr std::size_t kBlock = 4096;

struct ZeroShift {
  std::array<std::array<std::uint32_t, 256>, 4> t{};
  explicit ZeroShift(std::size_t bytes) {
    const std::vector<unsigned char> zeros(bytes, 0);
    std::uint32_t image[32];
    for (int i = 0; i < 32; ++i)
      image[i] = crc32c_table(zeros.data(), bytes, 1u << i);
    for (int j = 0; j < 4; ++j)
      for (std::uint32_t b = 0; b < 256; ++b) {
        std::uint32_t v = 0;
        for (int k = 0; k < 8; ++k)
          if (b & (1u << k)) v ^= image[8 * j + k];
        t[j][b] = v;
      }
  }
  std::uint32_t operator()(std::uint32_t x) const noexcept {
    return t[0][x & 0xFF] ^ t[1][(x >> 8) & 0xFF] ^ t[2][(x >> 16) & 0xFF] ^ t[3][x >> 24];
  }
};

__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const unsigned char* p, std::size_t n,
                                                             std::uint32_t c) noexcept {
  if (n >= 3 * kBlock) {
    static const ZeroShift shift1(kBlock), shift2(2 * kBlock);
    while (n >= 3 * kBlock) {
      std::uint64_t a = c, b = 0, d = 0;
      for (std::size_t i = 0; i < kBlock; i += 8) {
        std::uint64_t va, vb, vd;
        std::memcpy(&va, p + i, 8);
        std::memcpy(&vb, p + kBlock + i, 8);
        std::memcpy(&vd, p + 2 * kBlock + i, 8);
        a = _mm_crc32_u64(a, va);
        b = _mm_crc32_u64(b, vb);
        d = _mm_crc32_u64(d, vd);
      }
      c = shift2(static_cast<std::uint32_t>(a)) ^ shift1(static_cast<std::uint32_t>(b)) ^
          static_cast<std::uint32_t>(d);
      p += 3 * kBlock;
      n -= 3 * kBlock;
    }
  }
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
    p += 8;
    n -= 8;
  }
  c = static_cast<std::uint32_t>(c64);
  while (n--)
    c = _mm_crc32_u8(c, *p++);
  return c;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

// ---- errors -------------------------------------------------------------------------------------

std::string os_error(int err) {
  return std::system_category().message(err);
}

#define KILN_IO_CHECK(cond, ...) KILN_CHECK(cond, ::kiln::Status::io_error, __VA_ARGS__)

std::atomic<std::uint64_t> g_temp_counter{0};

// Writes all of [p, p + n) at the file position (or at `offset` when >= 0), retrying short writes
// and interrupted calls. Returns 0 or the errno of the failure.
int write_all(int fd, const char* p, std::size_t n, std::int64_t offset = -1) {
  while (n > 0) {
    const ssize_t w = offset < 0 ? ::write(fd, p, n) : ::pwrite(fd, p, n, offset);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    p += w;
    n -= static_cast<std::size_t>(w);
    if (offset >= 0) offset += w;
  }
  return 0;
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  const std::uint32_t c = ~crc;
#if defined(__x86_64__)
  if (kHaveSse42) return ~crc32c_sse42(p, size, c);
#endif
  return ~crc32c_table(p, size, c);
}

std::uint32_t impl::crc32c_portable(const void* data, std::size_t size,
                                    std::uint32_t crc) noexcept {
  return ~crc32c_table(static_cast<const unsigned char*>(data), size, ~crc);
}

// ---- AtomicFileWriter ---------------------------------------------------------------------------

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path, std::size_t buffer_bytes)
    : path_(std::move(path)), buffer_(buffer_bytes > 0 ? buffer_bytes : 1) {
  KILN_CHECK_ARG(!path_.empty(), "AtomicFileWriter: empty path");
  KILN_CHECK_ARG(path_.has_filename(), "AtomicFileWriter: '", path_.string(),
                 "' names a directory, not a file");
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : ".";
  // O_EXCL with a per-process counter: two writers of the same file (threads or processes) never
  // share a temporary.
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_path_ = dir / impl::cat('.', path_.filename().string(), ".tmp.", ::getpid(), '.',
                                 g_temp_counter.fetch_add(1));
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      const int err = errno;
      if (err == EEXIST && attempt < 100) continue;
      temp_path_.clear();
      KILN_IO_CHECK(false, "cannot write '", path_.string(),
                    "': cannot create a temporary file in '", dir.string(), "': ", os_error(err));
    }
    // Lock it, then make sure a concurrent remove_stale_temporaries did not take it between the
    // open and the lock (it unlinks only what it holds locked): if so, start again.
    // (Where the lock cannot be had, e.g. a file system without flock, the writer goes on
    // unlocked; remove_stale_temporaries then never removes its temporary.)
    lock_fd_ = ::open(temp_path_.c_str(), O_RDONLY | O_CLOEXEC);
    bool lost = lock_fd_ < 0 && errno == ENOENT;
    if (!lost && lock_fd_ >= 0 && ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      lost = errno == EWOULDBLOCK;
    }
    struct stat st {};
    if (!lost && (::fstat(fd_, &st) != 0 || st.st_nlink == 0)) lost = true;
    if (lost) {
      ::close(std::exchange(fd_, -1));
      if (lock_fd_ >= 0) ::close(std::exchange(lock_fd_, -1));
      KILN_IO_CHECK(attempt < 100, "cannot write '", path_.string(),
                    "': its temporary files keep disappearing from '", dir.string(), "'");
    }
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  abort();
}

void AtomicFileWriter::require_open(const char* what) const {
  KILN_CHECK_ARG(fd_ >= 0, "AtomicFileWriter::", what, ": '", path_.string(),
                 "' was already committed or aborted");
}

void AtomicFileWriter::flush() {
  if (buffered_ == 0) return;
  const int err = write_all(fd_, buffer_.data(), buffered_);
  buffered_ = 0;
  if (err != 0) {
    const std::string temp = temp_path_.string();
    abort();
    KILN_IO_CHECK(false, "cannot write '", path_.string(), "' (temporary '", temp,
                  "'): ", os_error(err));
  }
}

void AtomicFileWriter::write(const void* data, std::size_t size) {
  require_open("write");
  const char* p = static_cast<const char*>(data);
  size_ += size;
  if (buffered_ + size <= buffer_.size()) {
    std::memcpy(buffer_.data() + buffered_, p, size);
    buffered_ += size;
    return;
  }
  flush();
  if (size >= buffer_.size()) {
    const int err = write_all(fd_, p, size);
    if (err != 0) {
      const std::string temp = temp_path_.string();
      abort();
      KILN_IO_CHECK(false, "cannot write '", path_.string(), "' (temporary '", temp,
                    "'): ", os_error(err));
    }
  } else {
    std::memcpy(buffer_.data(), p, size);
    buffered_ = size;
  }
}

void AtomicFileWriter::patch(std::uint64_t offset, const void* data, std::size_t size) {
  require_open("patch");
  KILN_CHECK_ARG(offset <= size_ && size <= size_ - offset, "AtomicFileWriter::patch: bytes [",
                 offset, ", ", offset + size, ") of '", path_.string(),
                 "' are not all written yet (", size_, " bytes so far)");
  flush();
  const int err =
      write_all(fd_, static_cast<const char*>(data), size, static_cast<std::int64_t>(offset));
  if (err != 0) {
    const std::string temp = temp_path_.string();
    abort();
    KILN_IO_CHECK(false, "cannot write '", path_.string(), "' (temporary '", temp,
                  "'): ", os_error(err));
  }
}

void AtomicFileWriter::commit() {
  require_open("commit");
  flush();
  const std::string temp = temp_path_.string();
  auto fail = [&](const char* step, int err) {
    abort();
    KILN_IO_CHECK(false, "cannot write '", path_.string(), "': ", step, " '", temp,
                  "' failed: ", os_error(err));
  };
  if (::fsync(fd_) != 0) fail("fsync of", errno);
  const int fd = std::exchange(fd_, -1);
  // close() can report a deferred write error (NFS); treat it as a failed write.
  if (::close(fd) != 0) fail("close of", errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) fail("rename of", errno);
  temp_path_.clear();
  if (lock_fd_ >= 0) ::close(std::exchange(lock_fd_, -1));
  // The rename is durable only once the directory entry is on disk.
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KILN_IO_CHECK(dfd >= 0, "wrote '", path_.string(),
                "' but cannot open its directory to sync it: ", os_error(errno));
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  KILN_IO_CHECK(rc == 0, "wrote '", path_.string(),
                "' but fsync of its directory failed: ", os_error(err));
}

void AtomicFileWriter::abort() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
  if (lock_fd_ >= 0) ::close(std::exchange(lock_fd_, -1));
  buffered_ = 0;
}

namespace {

// ".<name>.tmp.<digits>.<digits>", AtomicFileWriter's temporaries.
bool is_temporary_name(const std::string& n) {
  const std::size_t tmp = n.rfind(".tmp.");
  if (n.size() < 2 || n[0] != '.' || tmp == std::string::npos || tmp < 2) return false;
  const std::string tail = n.substr(tmp + 5);
  const std::size_t dot = tail.find('.');
  auto digits = [](const std::string& d) {
    return !d.empty() && d.find_first_not_of("0123456789") == std::string::npos;
  };
  return dot != std::string::npos && digits(tail.substr(0, dot)) && digits(tail.substr(dot + 1));
}

}  // namespace

int remove_stale_temporaries(const std::filesystem::path& dir) noexcept {
  int removed = 0;
  try {
    std::error_code ec;
    const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
    for (std::filesystem::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      const std::filesystem::path p = it->path();
      if (!is_temporary_name(p.filename().string())) continue;
      const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
      if (fd < 0) continue;
      struct stat held {
      }, named{};
      // Only a regular file nobody holds locked, and still the file under that name.
      if (::fstat(fd, &held) == 0 && S_ISREG(held.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0 &&
          ::lstat(p.c_str(), &named) == 0 && named.st_dev == held.st_dev &&
          named.st_ino == held.st_ino && ::unlink(p.c_str()) == 0) {
        ++removed;
      }
      ::close(fd);
    }
  } catch (...) {
    // Best effort: a folder that cannot be listed keeps its files.
  }
  return removed;
}

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(AtomicFileWriter&)>& body) {
  AtomicFileWriter writer(path);
  body(writer);  // on an exception the writer's destructor removes the temporary
  writer.commit();
}

void write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  AtomicFileWriter writer(path, 0);
  writer.write(contents);
  writer.commit();
}

// ---- reading ------------------------------------------------------------------------------------

namespace {

// Opens `path` read-only and checks it is a regular file; returns the descriptor and its size.
std::pair<int, std::size_t> open_regular(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_IO_CHECK(fd >= 0, "cannot open '", path.string(), "' for reading: ", os_error(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    KILN_IO_CHECK(false, "cannot stat '", path.string(), "': ", os_error(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    KILN_IO_CHECK(false, "cannot read '", path.string(), "': not a regular file");
  }
  return {fd, static_cast<std::size_t>(st.st_size)};
}

}  // namespace

std::string read_file(const std::filesystem::path& path) {
  auto [fd, size] = open_regular(path);
  std::string out(size, '\0');
  std::size_t got = 0;
  while (true) {
    if (got == out.size()) out.resize(out.size() + 4096);  // the file may have grown
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      KILN_IO_CHECK(false, "cannot read '", path.string(), "': ", os_error(err));
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  auto [fd, size] = open_regular(path);
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    KILN_IO_CHECK(p != MAP_FAILED, "cannot map '", path.string(), "' (", size,
                  " bytes) into memory: ", os_error(err));
    data_ = p;
    size_ = size;
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() {
  release();
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::release() noexcept {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace kiln
