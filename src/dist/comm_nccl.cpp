// The NCCL backend: device buffers on the GPU of this rank (local rank modulo the visible GPUs).
// The unique id travels from rank 0 over MPI. Collectives run on the communicator's own stream:
// each one waits (an event) for the work queued so far on the compute stream and is launched at
// once, so a gradient bucket's all-reduce overlaps the rest of the backward pass; the compute
// stream waits for them (another event) only where their result is used. Host-side waits poll an
// event against a deadline and abort the communicator on timeout, so a dead peer is an error rather
// than a hung kernel. The ranks' host values (flags, counts) go over MPI and never wait for the GPU.
#include "dist/comm_internal.h"

#if defined(LMF_WITH_CUDA) && defined(LMF_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <vector>

#include "dist/mpi_runtime.h"

#define LMF_NCCL_CHECK(call)                                                                   \
  do {                                                                                         \
    const ncclResult_t lmf_nccl_rc_ = (call);                                                  \
    if (lmf_nccl_rc_ != ncclSuccess)                                                           \
      throw ::lmf::Error(::lmf::str("dist: ", #call, " failed (", __FILE__, ":", __LINE__,    \
                                    "): ", ncclGetErrorString(lmf_nccl_rc_)));               \
  } while (0)

#define LMF_DIST_CUDA_CHECK(call)                                                              \
  do {                                                                                         \
    const cudaError_t lmf_cuda_rc_ = (call);                                                   \
    if (lmf_cuda_rc_ != cudaSuccess)                                                           \
      throw ::lmf::Error(::lmf::str("dist: ", #call, " failed (", __FILE__, ":", __LINE__,    \
                                    "): ", cudaGetErrorString(lmf_cuda_rc_)));               \
  } while (0)
#endif

namespace lmf::dist {

#if !(defined(LMF_WITH_CUDA) && defined(LMF_WITH_NCCL))

namespace detail {
std::unique_ptr<Comm> make_nccl_comm(const CommOptions&) {
  throw Error(
      "dist: backend nccl requested but this build has no NCCL support (it needs CUDA and NCCL "
      "at configure time); use distributed.backend: mpi");
}
}  // namespace detail

#else

namespace {

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

// The stream every lmforge kernel runs on (the legacy default stream).
constexpr cudaStream_t kComputeStream = nullptr;

class NcclComm final : public Comm {
 public:
  NcclComm(int rank, int local_rank, int world_size, int gpu, ncclUniqueId id, double timeout_s)
      : Comm(rank, local_rank, world_size), gpu_(gpu), timeout_s_(timeout_s) {
    LMF_DIST_CUDA_CHECK(cudaSetDevice(gpu_));
    LMF_NCCL_CHECK(ncclCommInitRank(&comm_, world_size, id, rank));
    LMF_DIST_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    LMF_DIST_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    LMF_DIST_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclComm() override {
    cudaSetDevice(gpu_);
    if (scratch_) cudaFree(scratch_);
    cudaEventDestroy(ready_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(stream_);
    if (failed_) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
  }

  /// Host values (all_reduce_host, broadcast_host, barrier) go over `host` from now on.
  void set_host_comm(std::unique_ptr<Comm> host) { host_ = std::move(host); }

  std::string backend() const override { return "nccl"; }
  Device device() const override { return Device::cuda(gpu_); }

  void all_reduce(float* data, int64_t count, ReduceOp op) override {
    all_reduce_start(data, count, op);
    wait_all();
  }

  void all_reduce_start(float* data, int64_t count, ReduceOp op) override {
    launch([&] {
      LMF_NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat32, nccl_op(op), comm_, stream_));
    });
    started_ = true;
  }

  void wait_all() override {
    if (!started_) return;
    wait("all_reduce");
  }

  void wait_all_on_device() override {
    if (!started_) return;
    join();
  }

  void synchronize() override {
    if (issued_) wait("collectives");
  }

  void broadcast(void* data, int64_t bytes, int root) override {
    launch([&] {
      LMF_NCCL_CHECK(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclInt8, root, comm_, stream_));
    });
    wait("broadcast");
  }

  void reduce_scatter(const float* send, float* recv, int64_t count, ReduceOp op) override {
    launch([&] {
      LMF_NCCL_CHECK(ncclReduceScatter(send, recv, static_cast<size_t>(count), ncclFloat32, nccl_op(op), comm_,
                                       stream_));
    });
    join();
  }

  void all_gather(const float* send, float* recv, int64_t count) override {
    launch([&] {
      LMF_NCCL_CHECK(ncclAllGather(send, recv, static_cast<size_t>(count), ncclFloat32, comm_, stream_));
    });
    join();
  }

  void barrier() override {
    double token = 0;
    all_reduce_host(&token, 1, ReduceOp::sum);
  }

  void all_reduce_host(double* values, int64_t count, ReduceOp op) override {
    if (host_) return host_->all_reduce_host(values, count, op);
    void* device = scratch(count * sizeof(double));
    LMF_DIST_CUDA_CHECK(cudaMemcpyAsync(device, values, count * sizeof(double), cudaMemcpyHostToDevice, stream_));
    launch([&] {
      LMF_NCCL_CHECK(ncclAllReduce(device, device, static_cast<size_t>(count), ncclFloat64, nccl_op(op), comm_,
                                   stream_));
    });
    LMF_DIST_CUDA_CHECK(cudaMemcpyAsync(values, device, count * sizeof(double), cudaMemcpyDeviceToHost, stream_));
    wait("all_reduce");
  }

  void broadcast_host(void* data, int64_t bytes, int root) override {
    if (host_) return host_->broadcast_host(data, bytes, root);
    void* device = scratch(bytes);
    LMF_DIST_CUDA_CHECK(cudaMemcpyAsync(device, data, bytes, cudaMemcpyHostToDevice, stream_));
    launch([&] {
      LMF_NCCL_CHECK(ncclBroadcast(device, device, static_cast<size_t>(bytes), ncclInt8, root, comm_, stream_));
    });
    LMF_DIST_CUDA_CHECK(cudaMemcpyAsync(data, device, bytes, cudaMemcpyDeviceToHost, stream_));
    wait("broadcast");
  }

 private:
  // Runs `enqueue` (NCCL calls on stream_) after everything queued so far on the compute stream.
  template <class F>
  void launch(F&& enqueue) {
    LMF_CHECK(!failed_, "dist: rank ", rank(), ": the NCCL communicator failed earlier; no more collectives");
    LMF_DIST_CUDA_CHECK(cudaSetDevice(gpu_));
    LMF_DIST_CUDA_CHECK(cudaEventRecord(ready_, kComputeStream));
    LMF_DIST_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    enqueue();
    issued_ = true;
  }

  // Orders the compute stream after every collective issued so far, on the device.
  void join() {
    LMF_DIST_CUDA_CHECK(cudaSetDevice(gpu_));
    LMF_DIST_CUDA_CHECK(cudaEventRecord(done_, stream_));
    LMF_DIST_CUDA_CHECK(cudaStreamWaitEvent(kComputeStream, done_, 0));
    started_ = false;
  }

  // join(), then a wait on the host with a deadline so that a peer that died shows up here
  // (NCCL's async error, or the timeout) as an lmf::Error.
  void wait(const char* what) {
    join();
    issued_ = false;
    ::lmf::detail::count_cuda_host_sync();
    try {
      detail::wait_until(
          [&] {
            const cudaError_t state = cudaEventQuery(done_);
            if (state == cudaSuccess) return true;
            if (state != cudaErrorNotReady) LMF_DIST_CUDA_CHECK(state);
            ncclResult_t async = ncclSuccess;
            LMF_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
            LMF_NCCL_CHECK(async);
            return false;
          },
          timeout_s_, str("NCCL ", what), rank());
    } catch (...) {
      failed_ = true;
#ifdef LMF_WITH_MPI
      detail::mpi_mark_failed();
#endif
      // Aborting frees the kernels stuck waiting on the dead peer; the communicator is unusable.
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw;
    }
  }

  void* scratch(int64_t bytes) {
    if (bytes > scratch_bytes_) {
      LMF_DIST_CUDA_CHECK(cudaSetDevice(gpu_));
      LMF_DIST_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (scratch_) LMF_DIST_CUDA_CHECK(cudaFree(scratch_));
      scratch_bytes_ = std::max<int64_t>(bytes, 4096);
      LMF_DIST_CUDA_CHECK(cudaMalloc(&scratch_, scratch_bytes_));
    }
    return scratch_;
  }

  int gpu_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  void* scratch_ = nullptr;
  int64_t scratch_bytes_ = 0;
  bool failed_ = false;
  bool started_ = false;  // all-reduces started and not yet joined
  bool issued_ = false;   // collectives issued since the last host wait
  std::unique_ptr<Comm> host_;  // MPI, for host values, when there are several ranks
};

}  // namespace

namespace detail {
std::unique_ptr<Comm> make_nccl_comm(const CommOptions& options) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0)
    throw Error("dist: backend nccl needs a CUDA GPU and none is visible (check CUDA_VISIBLE_DEVICES)");
  LaunchInfo info = launch_info();
  ncclUniqueId id;
  if (info.world_size > 1) {
#ifdef LMF_WITH_MPI
    // Rank and node-local rank from MPI itself, the same view the id broadcast uses.
    mpi_initialize();
    LMF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank));
    LMF_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info.world_size));
    MPI_Comm node;
    LMF_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node));
    LMF_MPI_CHECK(MPI_Comm_rank(node, &info.local_rank));
    LMF_MPI_CHECK(MPI_Comm_free(&node));
    if (info.rank == 0) LMF_NCCL_CHECK(ncclGetUniqueId(&id));
    LMF_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
#else
    throw Error(str("dist: backend nccl with ", info.world_size,
                    " processes needs MPI to share the NCCL id, and this build has no MPI"));
#endif
  } else {
    LMF_NCCL_CHECK(ncclGetUniqueId(&id));
  }
  auto comm = std::make_unique<NcclComm>(info.rank, info.local_rank, info.world_size, info.local_rank % gpus, id,
                                         options.timeout_s);
#ifdef LMF_WITH_MPI
  if (info.world_size > 1) comm->set_host_comm(make_mpi_comm(options));
#endif
  return comm;
}
}  // namespace detail

#endif

}  // namespace lmf::dist
