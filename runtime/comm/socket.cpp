#include "runtime/comm/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

namespace kiln::impl {
namespace {

constexpr uint64_t kHelloMagic = 0x4b494c4e53544152ull;  // "KILNSTAR"
constexpr uint32_t kHelloVersion = 1;

struct Hello {
  uint64_t magic;
  uint32_t version;
  uint32_t purpose;
  int32_t rank;
  int32_t world;
};
static_assert(sizeof(Hello) == 24);

std::string errno_text(int e) {
  return std::strerror(e);
}

[[noreturn]] void io_fail(const std::string& message) {
  throw_error(Status::io_error, message, nullptr, nullptr, 0);
}
[[noreturn]] void timeout_fail(const std::string& message) {
  throw_error(Status::timeout, message, nullptr, nullptr, 0);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

void set_options(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    io_fail("tcp: cannot make a socket non-blocking: " + errno_text(errno));
  }
  const int one = 1;
  // Collectives send small headers and wait for answers: no Nagle delay.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Waits until `fd` is ready for `events`; false at the deadline.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) io_fail("tcp: poll failed: " + errno_text(errno));
  }
}

std::string endpoint(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

}  // namespace

Socket::~Socket() {
  close();
}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Socket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Socket listen_on(int port) {
  KILN_CHECK_ARG(port >= 0 && port <= 65535, "tcp: port ", port, " is outside 0..65535");
  // Dual-stack IPv6 where the host has it, else IPv4: either way every local address.
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  bool v6 = fd >= 0;
  if (!v6) fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) io_fail("tcp: cannot create a socket: " + errno_text(errno));
  Socket s(fd);
  const int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0) {
    const int e = errno;
    io_fail("tcp: cannot listen on port " + std::to_string(port) + ": " + errno_text(e) +
            (e == EADDRINUSE ? " (another process holds it: choose another port, e.g. with "
                               "KILN_RENDEZVOUS_PORT or MASTER_PORT)"
                             : ""));
  }
  if (listen(fd, 128) != 0) io_fail("tcp: listen failed: " + errno_text(errno));
  set_options(fd);
  return s;
}

int local_port(const Socket& socket) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    io_fail("tcp: getsockname failed: " + errno_text(errno));
  }
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) io_fail("gethostname failed: " + errno_text(errno));
  return buf;
}

void send_all(Socket& s, const void* data, std::size_t bytes, Clock::time_point deadline,
              const std::string& peer, const std::string& what,
              const std::function<void()>& on_readable) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = send(s.fd(), p, bytes, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      bytes -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      for (;;) {
        pollfd pfd{s.fd(), static_cast<short>(POLLOUT | (on_readable ? POLLIN : 0)), 0};
        const int r = poll(&pfd, 1, remaining_ms(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) io_fail("tcp: poll failed: " + errno_text(errno));
        if (r == 0) {
          timeout_fail(what + ": " + peer + " accepted no data before the deadline (is it stuck?)");
        }
        if ((pfd.revents & POLLIN) && on_readable) on_readable();
        if (pfd.revents & (POLLOUT | POLLERR | POLLHUP)) break;
      }
      continue;
    }
    io_fail(what + ": the connection to " + peer + " broke (" + errno_text(errno) +
            "; did it exit?)");
  }
}

void recv_all(Socket& s, void* data, std::size_t bytes, Clock::time_point deadline,
              const std::string& peer, const std::string& what) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = recv(s.fd(), p, bytes, 0);
    if (n > 0) {
      p += n;
      bytes -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) io_fail(what + ": " + peer + " closed its connection (did it exit or fail?)");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(s.fd(), POLLIN, deadline)) {
        timeout_fail(what + ": " + peer + " sent nothing before the deadline");
      }
      continue;
    }
    io_fail(what + ": the connection to " + peer + " broke (" + errno_text(errno) + ")");
  }
}

TcpStar TcpStar::serve(Socket listener, int world_size, uint32_t purpose,
                       Clock::time_point deadline, const std::string& endpoint_name) {
  TcpStar star;
  star.rank_ = 0;
  star.world_ = world_size;
  star.peers_.resize(static_cast<std::size_t>(world_size));
  int joined = 0;
  while (joined < world_size - 1) {
    if (!wait_fd(listener.fd(), POLLIN, deadline)) {
      std::ostringstream missing;
      int n = 0;
      for (int q = 1; q < world_size; ++q) {
        if (!star.peers_[static_cast<std::size_t>(q)].valid()) missing << (n++ ? ", " : "") << q;
      }
      timeout_fail("rendezvous at " + endpoint_name + ": rank(s) " + missing.str() + " of " +
                   std::to_string(world_size) +
                   " did not connect before the deadline (not started, or they look for rank 0 "
                   "at another address or port?)");
    }
    const int fd = accept(listener.fd(), nullptr, nullptr);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) {
        continue;
      }
      io_fail("rendezvous at " + endpoint_name + ": accept failed: " + errno_text(errno));
    }
    Socket c(fd);
    set_options(fd);
    Hello h{};
    try {
      // A stray connection (a port scanner, a client of something else) must not hold up the job.
      const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
      recv_all(c, &h, sizeof h, hello_deadline, "a connecting process", "rendezvous");
    } catch (const Error&) {
      continue;
    }
    if (h.magic != kHelloMagic || h.version != kHelloVersion) continue;
    KILN_CHECK_ARG(h.purpose == purpose, "rendezvous at ", endpoint_name, ": rank ", h.rank,
                   " connected for another purpose (", h.purpose, " where rank 0 serves ", purpose,
                   "): two jobs or two kinds of communicator share this endpoint");
    KILN_CHECK_ARG(h.world == world_size, "rendezvous at ", endpoint_name, ": rank ", h.rank,
                   " says the world size is ", h.world, " where rank 0 says ", world_size);
    KILN_CHECK_ARG(h.rank >= 1 && h.rank < world_size, "rendezvous at ", endpoint_name,
                   ": a process connected as rank ", h.rank, ", outside 1..", world_size - 1);
    KILN_CHECK_ARG(!star.peers_[static_cast<std::size_t>(h.rank)].valid(), "rendezvous at ",
                   endpoint_name, ": two processes connected as rank ", h.rank);
    star.peers_[static_cast<std::size_t>(h.rank)] = std::move(c);
    ++joined;
  }
  const uint32_t ok = 1;
  for (int q = 1; q < world_size; ++q) {
    send_all(star.peers_[static_cast<std::size_t>(q)], &ok, sizeof ok, deadline,
             "rank " + std::to_string(q), "rendezvous at " + endpoint_name);
  }
  return star;
}

TcpStar TcpStar::join(const std::string& host, int port, int rank, int world_size, uint32_t purpose,
                      Clock::time_point deadline) {
  const std::string where = endpoint(host, port);
  TcpStar star;
  star.rank_ = rank;
  star.world_ = world_size;
  star.peers_.resize(1);
  std::string last_error = "no attempt";
  for (;;) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    const int g = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
    if (g != 0) {
      last_error = std::string("cannot resolve '") + host + "': " + gai_strerror(g);
    } else {
      for (addrinfo* a = list; a && !star.peers_[0].valid(); a = a->ai_next) {
        const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        Socket c(fd);
        set_options(fd);
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
          const auto attempt = std::min(deadline, Clock::now() + std::chrono::seconds(2));
          if (wait_fd(fd, POLLOUT, attempt)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            rc = err == 0 ? 0 : -1;
            errno = err;
          } else {
            errno = ETIMEDOUT;
          }
        }
        if (rc == 0) {
          star.peers_[0] = std::move(c);
        } else {
          last_error = errno_text(errno);
        }
      }
      freeaddrinfo(list);
    }
    if (star.peers_[0].valid()) break;
    if (Clock::now() >= deadline) {
      timeout_fail("rank " + std::to_string(rank) + ": could not reach rank 0's rendezvous at " +
                   where + " before the deadline (last error: " + last_error + ")");
    }
    // Rank 0 may not be listening yet: try again shortly.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const Hello h{kHelloMagic, kHelloVersion, purpose, rank, world_size};
  const std::string what = "rank " + std::to_string(rank) + " joining the rendezvous at " + where;
  send_all(star.peers_[0], &h, sizeof h, deadline, "rank 0", what);
  uint32_t ok = 0;
  recv_all(star.peers_[0], &ok, sizeof ok, deadline, "rank 0 (waiting for every rank to join)",
           what);
  KILN_CHECK(ok == 1, Status::io_error, what, ": unexpected answer from rank 0");
  return star;
}

}  // namespace kiln::impl
