// dist::Comm: the collectives data-parallel training needs (all-reduce, broadcast, reduce-scatter,
// all-gather, barrier) behind one small interface with three implementations: single (one process),
// mpi (host buffers) and nccl (device buffers). Every wait has a deadline, so a peer that died turns
// into an lmf::Error on the survivors instead of a hang.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "lmforge/core/tensor.h"

namespace lmf::dist {

enum class ReduceOp { sum, avg, max, min };

/// Where this process sits in a launch, read from the launcher's environment: Open MPI
/// (OMPI_COMM_WORLD_*), MPICH/Hydra and PMI (PMI_*, MPI_LOCALRANKID) or SLURM (SLURM_PROCID,
/// SLURM_LOCALID, SLURM_NTASKS). Without a launcher: rank 0 of 1, launcher "none".
struct LaunchInfo {
  int rank = 0;
  int local_rank = 0;  ///< rank among the processes of this node; picks the GPU
  int world_size = 1;
  int local_size = 1;  ///< processes on this node (0 when the launcher does not say)
  std::string launcher = "none";  ///< "none", "openmpi", "pmi" or "slurm"
};
LaunchInfo launch_info();

/// Whether this build has the MPI (LMF_WITH_MPI) and NCCL (LMF_WITH_CUDA + LMF_WITH_NCCL) backends.
bool mpi_built();
bool nccl_built();

struct CommOptions {
  /// Longest wait for any one collective. A peer that died or hangs makes the survivors throw
  /// lmf::Error after this many seconds (sooner when the transport reports the failure itself).
  double timeout_s = 300;
};

/// A communicator over every process of the launch. Buffers are f32 elements on device() unless
/// stated otherwise. Collectives must be called in the same order on every rank.
class Comm {
 public:
  virtual ~Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  /// "single", "mpi" or "nccl".
  virtual std::string backend() const = 0;
  int rank() const { return rank_; }
  int local_rank() const { return local_rank_; }
  int world_size() const { return world_size_; }
  /// The device whose memory the buffer collectives take: cpu for single and mpi, the GPU of
  /// this rank (cuda:local_rank modulo the visible GPUs) for nccl.
  virtual Device device() const = 0;

  /// In place, blocking.
  virtual void all_reduce(float* data, int64_t count, ReduceOp op) = 0;
  /// Starts an in-place all-reduce that completes by wait_all() or wait_all_on_device(); the
  /// buffer must not be touched until then. NCCL launches it at once on the communicator's stream,
  /// after the work queued so far on the compute stream, so it overlaps whatever is queued next
  /// (the rest of a backward pass); MPI starts a request.
  virtual void all_reduce_start(float* data, int64_t count, ReduceOp op) = 0;
  /// Waits on the host for every started all-reduce (within the deadline).
  virtual void wait_all() = 0;
  /// Orders the device work queued after this call behind every started all-reduce, without the
  /// host waiting: NCCL makes the compute stream wait for the communicator's stream. The host
  /// backends complete their collectives on the host, so there this is wait_all().
  virtual void wait_all_on_device() { wait_all(); }
  /// Waits on the host, within the deadline, for every collective issued so far, so that a peer
  /// that died during stream-ordered collectives surfaces as an lmf::Error rather than a hang of
  /// the next read. A no-op for backends whose collectives complete before they return.
  virtual void synchronize() {}
  /// `bytes` bytes of device() memory from `root` to every rank.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  /// send: world_size·count elements; rank r receives block r of the reduction in recv (count).
  /// reduce_scatter and all_gather are stream-ordered on NCCL: device work queued after them sees
  /// their result, and the host does not wait (synchronize() does); elsewhere they block.
  virtual void reduce_scatter(const float* send, float* recv, int64_t count, ReduceOp op) = 0;
  /// send: count elements; recv: world_size·count, block r from rank r. send may be
  /// recv + rank·count (in place).
  virtual void all_gather(const float* send, float* recv, int64_t count) = 0;
  virtual void barrier() = 0;

  /// In-place reduction of a few host doubles (losses, flags, norms) on every backend: the way
  /// ranks agree on decisions. NCCL with several ranks sends these over MPI, so they never wait
  /// for the GPU.
  virtual void all_reduce_host(double* values, int64_t count, ReduceOp op) = 0;
  /// Host bytes from `root` to every rank (paths, small metadata).
  virtual void broadcast_host(void* data, int64_t bytes, int root) = 0;

  double all_reduce_scalar(double value, ReduceOp op);
  void broadcast_string(std::string& value, int root);
  /// Whole-tensor forms: `t` must be contiguous f32 on device().
  void all_reduce(Tensor& t, ReduceOp op);
  void broadcast(Tensor& t, int root);

 protected:
  Comm(int rank, int local_rank, int world_size)
      : rank_(rank), local_rank_(local_rank), world_size_(world_size) {}

 private:
  int rank_, local_rank_, world_size_;
};

/// "single" (or "none"), "mpi", "nccl", or "auto": mpi when a launcher started more than one
/// process and the build has MPI, else single. A backend this build lacks, or mpi/nccl asked for
/// without a launcher that can bootstrap them, is an lmf::Error saying so. MPI is initialised on
/// first use and finalised at process exit (skipped after a communication failure, so that a
/// dead peer cannot hang the exit).
std::unique_ptr<Comm> make_comm(const std::string& backend, const CommOptions& options = {});

}  // namespace lmf::dist
