// The TCP communicator: host memory, one process per rank, a star of connections to rank 0.
//
// Each collective: every other rank sends rank 0 a header (the collective, its sequence number and
// sizes) and its data; rank 0 checks that the headers match its own call, reduces in rank order
// with the element type's arithmetic (the in-process communicator's order, so both give the same
// bits), and sends each rank its result. When rank 0 fails (a rank missed the deadline, headers
// disagree) it sends every rank still connected an error frame carrying the reason, so that every
// rank reports the real cause rather than "rank 0 went silent".
#include <cstring>
#include <sstream>

#include "kiln/launch.hpp"
#include "runtime/comm/comm_common.hpp"
#include "runtime/comm/launch_internal.hpp"
#include "runtime/comm/socket.hpp"

namespace kiln {
namespace impl {
namespace {

constexpr const char* kWho = "tcp communicator";
constexpr uint32_t kFrameMagic = 0x4b4c4e43u;  // "KLNC"
constexpr uint32_t kErrorFrame = 0xffffu;

struct Header {
  uint32_t magic = kFrameMagic;
  uint32_t kind = 0;  // CollectiveKind, or kErrorFrame
  int64_t seq = 0;
  int64_t count = 0;  // elements (reduce_scatter: of the whole region)
  int64_t first = 0;  // reduce_scatter: bounds[0]
  uint32_t dtype = 0;
  uint32_t op = 0;
  int32_t root = 0;
  int32_t reserved = 0;
  double value = 0;    // all_reduce_value
  uint64_t bytes = 0;  // payload bytes that follow (error frames: the message)
  uint64_t bounds_hash = 0;
};
static_assert(sizeof(Header) == 72);

uint64_t hash_bounds(std::span<const int64_t> bounds) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t b : bounds) {
    h ^= static_cast<uint64_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(TcpStar star, const CommOptions& options)
      : star_(std::move(star)), options_(options) {}

  int rank() const override { return star_.rank(); }
  int world_size() const override { return star_.world_size(); }
  std::string description() const override {
    return cat("tcp (rank ", rank(), " of ", world_size(), ", host memory)");
  }

  void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op, void*) override {
    check_count(kWho, "all_reduce", count);
    check_reduce_dtype(kWho, dtype, false);
    Header h = header(CollectiveKind::all_reduce, count, dtype, op);
    run(h, [&](Ctx& c) {
      if (rank() != 0) {
        c.send_to_root(data, bytes_of(count, dtype));
        c.recv_from_root(data, bytes_of(count, dtype));
        return;
      }
      reduce_at_root(c, data, count, dtype, op);
      for (int q = 1; q < world_size(); ++q)
        c.send_to(q, data, bytes_of(count, dtype));
    });
  }

  void reduce_scatter(void* data, std::span<const int64_t> bounds, DType dtype, ReduceOp op,
                      void*) override {
    check_bounds(kWho, bounds, world_size());
    check_reduce_dtype(kWho, dtype, false);
    const int64_t first = bounds.front(), count = bounds.back() - bounds.front();
    Header h = header(CollectiveKind::reduce_scatter, count, dtype, op);
    h.first = first;
    h.bounds_hash = hash_bounds(bounds);
    char* region = byte_ptr(data, first, dtype);
    run(h, [&](Ctx& c) {
      const std::size_t r = static_cast<std::size_t>(rank());
      if (rank() != 0) {
        c.send_to_root(region, bytes_of(count, dtype));
        c.recv_from_root(byte_ptr(data, bounds[r], dtype),
                         bytes_of(bounds[r + 1] - bounds[r], dtype));
        return;
      }
      reduce_at_root(c, region, count, dtype, op);
      for (int q = 1; q < world_size(); ++q) {
        const std::size_t k = static_cast<std::size_t>(q);
        c.send_to(q, byte_ptr(data, bounds[k], dtype), bytes_of(bounds[k + 1] - bounds[k], dtype));
      }
    });
  }

  void all_gather(void* data, int64_t count, DType dtype, void*) override {
    check_count(kWho, "all_gather", count);
    Header h = header(CollectiveKind::all_gather, count, dtype, ReduceOp::sum);
    const std::size_t block = bytes_of(count, dtype), all = block * world_size();
    run(h, [&](Ctx& c) {
      if (rank() != 0) {
        c.send_to_root(byte_ptr(data, rank() * count, dtype), block);
        c.recv_from_root(data, all);
        return;
      }
      for (int q = 1; q < world_size(); ++q)
        c.recv_from(q, byte_ptr(data, q * count, dtype), block);
      for (int q = 1; q < world_size(); ++q)
        c.send_to(q, data, all);
    });
  }

  void broadcast(void* data, int64_t count, DType dtype, int root, void*) override {
    check_count(kWho, "broadcast", count);
    check_root(kWho, root, world_size());
    Header h = header(CollectiveKind::broadcast, count, dtype, ReduceOp::sum);
    h.root = root;
    const std::size_t bytes = bytes_of(count, dtype);
    run(h, [&](Ctx& c) {
      if (rank() != 0) {
        if (rank() == root) {
          c.send_to_root(data, bytes);
        } else {
          c.send_to_root(nullptr, 0);
        }
        c.recv_from_root(data, bytes);
        return;
      }
      for (int q = 1; q < world_size(); ++q)
        c.recv_from(q, q == root ? data : nullptr, q == root ? bytes : 0);
      for (int q = 1; q < world_size(); ++q)
        c.send_to(q, data, bytes);
    });
  }

  void barrier() override {
    Header h = header(CollectiveKind::barrier, 0, DType::f64, ReduceOp::sum);
    run(h, [&](Ctx& c) {
      if (rank() != 0) {
        c.send_to_root(nullptr, 0);
        c.recv_from_root(nullptr, 0);
        return;
      }
      for (int q = 1; q < world_size(); ++q)
        c.recv_from(q, nullptr, 0);
      for (int q = 1; q < world_size(); ++q)
        c.send_to(q, nullptr, 0);
    });
  }

  double all_reduce_value(double value, ReduceOp op) override {
    Header h = header(CollectiveKind::all_reduce_value, 1, DType::f64, op);
    double result = value;
    run(h, [&](Ctx& c) {
      if (rank() != 0) {
        c.out.value = value;
        c.send_to_root(nullptr, 0);
        result = c.recv_from_root(nullptr, 0).value;
        return;
      }
      double acc = value;
      for (int q = 1; q < world_size(); ++q)
        acc = scalar_accumulate(acc, c.recv_from(q, nullptr, 0).value, op);
      result = scalar_finish(acc, op, world_size());
      c.out.value = result;
      for (int q = 1; q < world_size(); ++q)
        c.send_to(q, nullptr, 0);
    });
    return result;
  }

  void check() override {
    if (failed_) throw_error(failure_status_, failure_, nullptr, nullptr, 0);
  }

  void abort(const std::string& reason) override {
    if (failed_) return;
    record(Status::internal_error, cat(kWho, ": rank ", rank(), " aborted: ", reason));
    broadcast_error();
    for (int q = 0; q < (rank() == 0 ? world_size() : 1); ++q)
      star_.peer(q).close();
  }

 private:
  // One collective's exchange: its header, deadline and the messages of each step.
  struct Ctx {
    TcpCommunicator& self;
    Header out;  // what this rank sends with each message
    Clock::time_point deadline;
    std::string what;

    void send_to_root(const void* data, std::size_t bytes) { send_to(0, data, bytes); }
    Header recv_from_root(void* data, std::size_t bytes) { return recv_from(0, data, bytes); }
    void send_to(int q, const void* data, std::size_t bytes) {
      Header h = out;
      h.bytes = bytes;
      Socket& s = self.star_.peer(q);
      // While this rank sends, the peer may have given up and sent an error frame instead of
      // reading: read it and report its reason.
      const auto on_readable = [&] {
        recv_from(q, nullptr, 0);
        KILN_CHECK(false, Status::io_error, what, ": ", rank_name(q),
                   " sent data while it should have been receiving");
      };
      send_all(s, &h, sizeof h, deadline, rank_name(q), what, on_readable);
      if (bytes) send_all(s, data, bytes, deadline, rank_name(q), what, on_readable);
    }
    Header recv_from(int q, void* data, std::size_t bytes) {
      Socket& s = self.star_.peer(q);
      Header h;
      recv_all(s, &h, sizeof h, deadline, rank_name(q), what);
      KILN_CHECK(h.magic == kFrameMagic, Status::io_error, what, ": garbage from ", rank_name(q),
                 " (not a kiln tcp communicator frame)");
      if (h.kind == kErrorFrame) {
        std::string message(static_cast<std::size_t>(std::min<uint64_t>(h.bytes, 1 << 20)), '\0');
        recv_all(s, message.data(), message.size(), deadline, rank_name(q), what);
        self.failed_by_peer_ = true;
        throw_error(static_cast<Status>(h.root), message, nullptr, nullptr, 0);
      }
      if (h.kind != out.kind || h.seq != out.seq) {
        KILN_CHECK_ARG(false, what, ": ", rank_name(q), " called ",
                       collective_name(static_cast<CollectiveKind>(h.kind)), " #", h.seq,
                       " where rank ", self.rank(), " called ",
                       collective_name(static_cast<CollectiveKind>(out.kind)), " #", out.seq);
      }
      KILN_CHECK_ARG(h.count == out.count && h.dtype == out.dtype && h.op == out.op &&
                         h.root == out.root && h.first == out.first &&
                         h.bounds_hash == out.bounds_hash,
                     what, ": ", rank_name(q),
                     " passed other sizes, type, reduction or root than rank ", self.rank());
      KILN_CHECK(h.bytes == bytes, Status::internal_error, what, ": ", rank_name(q), " sent ",
                 h.bytes, " bytes where ", bytes, " were expected");
      if (bytes) recv_all(s, data, bytes, deadline, rank_name(q), what);
      return h;
    }
    static std::string rank_name(int q) { return "rank " + std::to_string(q); }
  };

  Header header(CollectiveKind kind, int64_t count, DType dtype, ReduceOp op) {
    Header h;
    h.kind = static_cast<uint32_t>(kind);
    h.seq = ++seq_;
    h.count = count;
    h.dtype = static_cast<uint32_t>(dtype);
    h.op = static_cast<uint32_t>(op);
    return h;
  }

  template <typename F>
  void run(const Header& h, F&& body) {
    check();
    Ctx c{*this, h, Clock::now() + options_.timeout,
          cat(kWho, ": ", collective_name(static_cast<CollectiveKind>(h.kind)), " #", h.seq,
              " on rank ", rank())};
    if (world_size() == 1) return;
    try {
      body(c);
    } catch (const Error& e) {
      record(e.status(), e.message());
      // Rank 0 tells every rank; another rank tells rank 0, unless rank 0 told it.
      if (rank() == 0 || !failed_by_peer_) broadcast_error();
      throw;
    }
  }

  // Rank 0: region (count elements, the same range of every rank's buffer) := the rank-order
  // reduction; rank 0's own buffer holds the result.
  void reduce_at_root(Ctx& c, void* region, int64_t count, DType dtype, ReduceOp op) {
    const std::size_t bytes = bytes_of(count, dtype);
    incoming_.resize(bytes);
    for (int q = 1; q < world_size(); ++q) {
      c.recv_from(q, incoming_.data(), bytes);
      host_accumulate(region, incoming_.data(), count, dtype, op);
    }
    host_finish(region, count, dtype, op, world_size());
  }

  void record(Status status, const std::string& message) {
    if (failed_) return;
    failed_ = true;
    failure_status_ = status;
    failure_ = message;
  }

  // Best effort: tells the peers why this rank stops, so that they report the cause.
  void broadcast_error() {
    Header h;
    h.kind = kErrorFrame;
    h.root = static_cast<int32_t>(failure_status_);
    h.bytes = failure_.size();
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    for (int q = 0; q < (rank() == 0 ? world_size() : 1); ++q) {
      if (rank() == 0 && q == 0) continue;
      Socket& s = star_.peer(q);
      if (!s.valid()) continue;
      try {
        send_all(s, &h, sizeof h, deadline, "", "");
        send_all(s, failure_.data(), failure_.size(), deadline, "", "");
      } catch (const Error&) {
        // The peer is gone already; nothing more to tell it.
      }
    }
  }

  TcpStar star_;
  CommOptions options_;
  int64_t seq_ = 0;
  std::vector<char> incoming_;
  bool failed_ = false;
  bool failed_by_peer_ = false;
  Status failure_status_ = Status::ok;
  std::string failure_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_communicator_from(TcpStar star, const CommOptions& options) {
  return std::make_unique<TcpCommunicator>(std::move(star), options);
}

}  // namespace impl

std::unique_ptr<Communicator> make_tcp_communicator(const LaunchInfo& launch,
                                                    const CommOptions& options) {
  if (launch.world_size == 1) return std::make_unique<SingleRankCommunicator>();
  return impl::make_tcp_communicator_from(
      impl::make_star(launch, impl::kPurposeCommunicator, options), options);
}

}  // namespace kiln
