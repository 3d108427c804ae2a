// The MPI backend: host buffers, any MPI-3 library (Open MPI from the distribution in CI). Every
// collective is the non-blocking form polled against a deadline, on a duplicate of MPI_COMM_WORLD
// whose error handler returns codes, so a dead or hung peer becomes an lmf::Error, never a hang.
#include <climits>
#include <cstdlib>
#include <vector>

#include "dist/comm_internal.h"
#include "dist/mpi_runtime.h"

namespace lmf::dist {

#ifndef LMF_WITH_MPI

namespace detail {
std::unique_ptr<Comm> make_mpi_comm(const CommOptions&) {
  throw Error(
      "dist: backend mpi requested but this build has no MPI support; rebuild with -DLMF_MPI=ON "
      "(Open MPI or MPICH development files installed) or use distributed.backend: none");
}
}  // namespace detail

#else

namespace detail {
namespace {
bool g_initialized_here = false;
bool g_failed = false;

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && !g_failed) MPI_Finalize();
}
}  // namespace

void mpi_initialize() {
  int initialized = 0;
  LMF_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized) return;
  int provided = 0;
  // FUNNELED: only the thread that calls the trainer talks to MPI; OpenMP threads never do.
  LMF_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  g_initialized_here = true;
  std::atexit(finalize_at_exit);
  LMF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

void mpi_mark_failed() { g_failed = true; }

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

void mpi_throw(int code, const char* call, const char* file, int line) {
  mpi_mark_failed();
  char message[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, message, &length);
  throw Error(str("dist: ", call, " failed (", file, ":", line, "): ", std::string(message, length)));
}
}  // namespace detail

namespace {

// MPI counts are int; larger buffers go in pieces of this many elements.
constexpr int64_t kMaxChunk = int64_t(1) << 30;

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;  // avg divides by the world size afterwards
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, int rank, int local_rank, int world_size, double timeout_s)
      : Comm(rank, local_rank, world_size), comm_(comm), timeout_s_(timeout_s) {}
  ~MpiComm() override {
    if (!detail::mpi_finalized() && !failed_) MPI_Comm_free(&comm_);
  }

  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }

  void all_reduce(float* data, int64_t count, ReduceOp op) override {
    all_reduce_start(data, count, op);
    wait_all();
  }

  void all_reduce_start(float* data, int64_t count, ReduceOp op) override {
    for (int64_t begin = 0; begin < count; begin += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, count - begin));
      MPI_Request request;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + begin, n, MPI_FLOAT, mpi_op(op), comm_, &request),
            "MPI_Iallreduce(MPI_IN_PLACE, data, n, MPI_FLOAT, op, comm, &request)", __LINE__);
      requests_.push_back(request);
    }
    if (op == ReduceOp::avg) averages_.push_back({data, count});
  }

  void wait_all() override {
    wait("all_reduce");
    const float scale = 1.f / static_cast<float>(world_size());
    for (const auto& [data, count] : averages_)
      for (int64_t i = 0; i < count; ++i) data[i] *= scale;
    averages_.clear();
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    char* bytes_ptr = static_cast<char*>(data);
    for (int64_t begin = 0; begin < bytes; begin += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, bytes - begin));
      MPI_Request request;
      check(MPI_Ibcast(bytes_ptr + begin, n, MPI_BYTE, root, comm_, &request),
            "MPI_Ibcast(data, n, MPI_BYTE, root, comm, &request)", __LINE__);
      requests_.push_back(request);
    }
    wait("broadcast");
  }

  void reduce_scatter(const float* send, float* recv, int64_t count, ReduceOp op) override {
    LMF_CHECK(count <= kMaxChunk, "dist::mpi: reduce_scatter of ", count, " elements per rank is too large");
    MPI_Request request;
    check(MPI_Ireduce_scatter_block(send, recv, static_cast<int>(count), MPI_FLOAT, mpi_op(op), comm_, &request),
          "MPI_Ireduce_scatter_block(send, recv, count, MPI_FLOAT, op, comm, &request)", __LINE__);
    requests_.push_back(request);
    wait("reduce_scatter");
    if (op == ReduceOp::avg)
      for (int64_t i = 0; i < count; ++i) recv[i] /= static_cast<float>(world_size());
  }

  void all_gather(const float* send, float* recv, int64_t count) override {
    LMF_CHECK(count <= kMaxChunk, "dist::mpi: all_gather of ", count, " elements per rank is too large");
    const void* source = send == recv + rank() * count ? MPI_IN_PLACE : send;
    MPI_Request request;
    check(MPI_Iallgather(source, static_cast<int>(count), MPI_FLOAT, recv, static_cast<int>(count), MPI_FLOAT,
                         comm_, &request),
          "MPI_Iallgather(send, count, MPI_FLOAT, recv, count, MPI_FLOAT, comm, &request)", __LINE__);
    requests_.push_back(request);
    wait("all_gather");
  }

  void barrier() override {
    MPI_Request request;
    check(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier(comm, &request)", __LINE__);
    requests_.push_back(request);
    wait("barrier");
  }

  void all_reduce_host(double* values, int64_t count, ReduceOp op) override {
    LMF_CHECK(count <= kMaxChunk, "dist::mpi: all_reduce_host of ", count, " values is too large");
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_DOUBLE, mpi_op(op), comm_, &request),
          "MPI_Iallreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, op, comm, &request)", __LINE__);
    requests_.push_back(request);
    wait("all_reduce");
    if (op == ReduceOp::avg)
      for (int64_t i = 0; i < count; ++i) values[i] /= world_size();
  }

  void broadcast_host(void* data, int64_t bytes, int root) override { broadcast(data, bytes, root); }

 private:
  // LMF_MPI_CHECK with the failure also remembered here, so the destructor leaves comm_ alone.
  void check(int code, const char* call, int line) {
    if (code == MPI_SUCCESS) return;
    failed_ = true;
    detail::mpi_throw(code, call, __FILE__, line);
  }

  void wait(const char* what) {
    if (requests_.empty()) return;
    LMF_CHECK(!failed_, "dist: rank ", rank(), ": the communicator failed earlier; no more collectives");
    try {
      detail::wait_until(
          [&] {
            int done = 0;
            check(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE),
                  "MPI_Testall(n, requests, &done, MPI_STATUSES_IGNORE)", __LINE__);
            return done != 0;
          },
          timeout_s_, str("MPI ", what), rank());
    } catch (...) {
      // The requests may still be in flight; they are abandoned with the communicator.
      failed_ = true;
      detail::mpi_mark_failed();
      requests_.clear();
      averages_.clear();
      throw;
    }
    requests_.clear();
  }

  MPI_Comm comm_;
  double timeout_s_;
  bool failed_ = false;
  std::vector<MPI_Request> requests_;
  std::vector<std::pair<float*, int64_t>> averages_;
};

}  // namespace

namespace detail {
std::unique_ptr<Comm> make_mpi_comm(const CommOptions& options) {
  mpi_initialize();
  MPI_Comm comm;
  // A private duplicate: the trainer's collectives never match a caller's own MPI traffic.
  LMF_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  LMF_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  int rank = 0, size = 1, local_rank = 0;
  LMF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  LMF_MPI_CHECK(MPI_Comm_size(comm, &size));
  // The node-local rank from MPI itself (ranks sharing memory), which holds for every launcher.
  MPI_Comm node;
  LMF_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  LMF_MPI_CHECK(MPI_Comm_rank(node, &local_rank));
  LMF_MPI_CHECK(MPI_Comm_free(&node));
  return std::make_unique<MpiComm>(comm, rank, local_rank, size, options.timeout_s);
}
}  // namespace detail

#endif  // LMF_WITH_MPI

}  // namespace lmf::dist
