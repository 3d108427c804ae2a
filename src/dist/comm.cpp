// The launcher environment, the single-process communicator, the helpers every backend shares and
// make_comm. The single backend is real code rather than a special case in the trainer, so the
// data-parallel path is the only path and one process is simply world size one.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dist/comm_internal.h"

namespace lmf::dist {
namespace {

// The first of `names` that is set, parsed as a non-negative int; -1 when none is set.
int env_int(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (!value || !*value) continue;
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    LMF_CHECK(end && *end == '\0' && v >= 0 && v < (1L << 30), "environment variable ", name, "='",
              value, "' is not a rank or a process count");
    return static_cast<int>(v);
  }
  return -1;
}

class SingleComm final : public Comm {
 public:
  SingleComm() : Comm(0, 0, 1) {}
  std::string backend() const override { return "single"; }
  Device device() const override { return Device::cpu(); }
  // With one rank every reduction, including avg, is the identity.
  void all_reduce(float*, int64_t, ReduceOp) override {}
  void all_reduce_start(float*, int64_t, ReduceOp) override {}
  void wait_all() override {}
  void broadcast(void*, int64_t, int) override {}
  void reduce_scatter(const float* send, float* recv, int64_t count, ReduceOp) override {
    if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * sizeof(float));
  }
  void all_gather(const float* send, float* recv, int64_t count) override {
    if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * sizeof(float));
  }
  void barrier() override {}
  void all_reduce_host(double*, int64_t, ReduceOp) override {}
  void broadcast_host(void*, int64_t, int) override {}
};

}  // namespace

LaunchInfo launch_info() {
  LaunchInfo info;
  // Open MPI first: under `srun --mpi=pmix` or mpirun inside an allocation both sets may exist,
  // and the MPI runtime's own view is the one the communicator will use.
  if (env_int({"OMPI_COMM_WORLD_SIZE"}) > 0) {
    info.launcher = "openmpi";
    info.world_size = env_int({"OMPI_COMM_WORLD_SIZE"});
    info.rank = std::max(0, env_int({"OMPI_COMM_WORLD_RANK"}));
    info.local_rank = std::max(0, env_int({"OMPI_COMM_WORLD_LOCAL_RANK"}));
    info.local_size = std::max(0, env_int({"OMPI_COMM_WORLD_LOCAL_SIZE"}));
  } else if (env_int({"PMI_SIZE", "PMIX_SIZE"}) > 0) {
    info.launcher = "pmi";
    info.world_size = env_int({"PMI_SIZE", "PMIX_SIZE"});
    info.rank = std::max(0, env_int({"PMI_RANK", "PMIX_RANK"}));
    info.local_rank = std::max(0, env_int({"MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID"}));
    info.local_size = std::max(0, env_int({"MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"}));
  } else if (env_int({"SLURM_NTASKS"}) > 0 && env_int({"SLURM_PROCID"}) >= 0) {
    info.launcher = "slurm";
    info.world_size = env_int({"SLURM_NTASKS"});
    info.rank = env_int({"SLURM_PROCID"});
    info.local_rank = std::max(0, env_int({"SLURM_LOCALID"}));
    // SLURM_NTASKS_PER_NODE is set only when the job asked for it.
    info.local_size = std::max(0, env_int({"SLURM_NTASKS_PER_NODE"}));
  }
  LMF_CHECK(info.rank < info.world_size, "launcher environment (", info.launcher, "): rank ",
            info.rank, " is not below the world size ", info.world_size);
  return info;
}

bool mpi_built() {
#ifdef LMF_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#if defined(LMF_WITH_CUDA) && defined(LMF_WITH_NCCL)
  return true;
#else
  return false;
#endif
}

double Comm::all_reduce_scalar(double value, ReduceOp op) {
  all_reduce_host(&value, 1, op);
  return value;
}

void Comm::broadcast_string(std::string& value, int root) {
  double size = static_cast<double>(value.size());
  broadcast_host(&size, sizeof size, root);
  value.resize(static_cast<std::size_t>(size));
  if (!value.empty()) broadcast_host(value.data(), static_cast<int64_t>(value.size()), root);
}

void Comm::all_reduce(Tensor& t, ReduceOp op) {
  LMF_CHECK(t.dtype() == DType::f32 && t.is_contiguous() && t.device() == device(), "dist::",
            backend(), ": all_reduce needs a contiguous f32 tensor on ", device().str());
  all_reduce(t.data<float>(), t.numel(), op);
}

void Comm::broadcast(Tensor& t, int root) {
  LMF_CHECK(t.is_contiguous() && t.device() == device(), "dist::", backend(),
            ": broadcast needs a contiguous tensor on ", device().str());
  broadcast(t.raw_data(), static_cast<int64_t>(t.nbytes()), root);
}

std::unique_ptr<Comm> make_comm(const std::string& backend, const CommOptions& options) {
  LMF_CHECK(options.timeout_s > 0, "dist: timeout must be positive, got ", options.timeout_s);
  if (backend == "single" || backend == "none") return detail::make_single_comm();
  if (backend == "auto") {
    const LaunchInfo info = launch_info();
    if (info.world_size <= 1) return detail::make_single_comm();
    LMF_CHECK(mpi_built(), "dist: launched as ", info.world_size, " processes (", info.launcher,
              ") but this build has no MPI support; rebuild with -DLMF_MPI=ON or run one process");
    return detail::make_mpi_comm(options);
  }
  if (backend == "mpi") return detail::make_mpi_comm(options);
  if (backend == "nccl") return detail::make_nccl_comm(options);
  throw Error(str("dist: unknown backend '", backend, "' (auto, none, single, mpi, nccl)"));
}

namespace detail {
std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }
}  // namespace detail

}  // namespace lmf::dist
