// Internal: TCP for the rendezvous and the TCP communicator. Every blocking step (accept, connect,
// send, receive) has a deadline and fails with a kiln::Error that names the peer and the step:
// Status::timeout when the deadline passes, io_error when the connection breaks or cannot be made.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/comm/comm_common.hpp"

namespace kiln::impl {

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket();
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void close();

 private:
  int fd_ = -1;
};

// A listening socket on every local address at `port` (0: a free port the system picks).
// Throws io_error naming the port when it cannot be bound (e.g. in use).
Socket listen_on(int port);
// The port a socket is bound to.
int local_port(const Socket& socket);
// This host's name (gethostname).
std::string host_name();

// Sends / receives exactly `bytes`, waiting at most until `deadline`. `peer` and `what` name the
// other side and the step in messages ("rank 3", "all_reduce #12"). While a send waits for room,
// `on_readable` (when set) is called if the peer has sent something meanwhile (an error frame);
// it throws to stop the send, or returns to go on.
void send_all(Socket& s, const void* data, std::size_t bytes, Clock::time_point deadline,
              const std::string& peer, const std::string& what,
              const std::function<void()>& on_readable = {});
void recv_all(Socket& s, void* data, std::size_t bytes, Clock::time_point deadline,
              const std::string& peer, const std::string& what);

// A star of connections between rank 0 and every other rank, made through a rendezvous endpoint.
// Each rank introduces itself (rank, world size, purpose); rank 0 refuses duplicates, ranks out of
// range and other purposes, and every rank waits until rank 0 has seen them all.
class TcpStar {
 public:
  // Rank 0: accepts the other world_size - 1 ranks on `listener`. `endpoint` names it in messages.
  static TcpStar serve(Socket listener, int world_size, uint32_t purpose,
                       Clock::time_point deadline, const std::string& endpoint);
  // Rank > 0: connects to host:port (retrying while rank 0 is not yet listening).
  static TcpStar join(const std::string& host, int port, int rank, int world_size, uint32_t purpose,
                      Clock::time_point deadline);

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  // Rank 0: the connection to rank q >= 1. Others: peer(0), the connection to rank 0.
  Socket& peer(int q) { return peers_[static_cast<std::size_t>(q)]; }

 private:
  int rank_ = 0, world_ = 1;
  std::vector<Socket> peers_;
};

inline constexpr uint32_t kPurposeRendezvous = 1;
inline constexpr uint32_t kPurposeCommunicator = 2;

}  // namespace kiln::impl
