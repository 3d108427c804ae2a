// dist::Comm collectives with whatever launch ran this executable: alone it checks the single
// backend, under `mpirun -np 2` (the _np2 test) the MPI backend. Every expected value is computed
// from the rank and world size, so the same checks hold for any number of ranks.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <numeric>
#include <vector>

#include "lmforge/dist/comm.h"

using lmf::dist::ReduceOp;

namespace {

lmf::dist::Comm& comm() {
  static const std::unique_ptr<lmf::dist::Comm> c = lmf::dist::make_comm("auto", {30.0});
  return *c;
}

}  // namespace

TEST_CASE("the communicator agrees with the launcher's environment", "[dist]") {
  const auto info = lmf::dist::launch_info();
  CHECK(comm().world_size() == info.world_size);
  CHECK(comm().rank() == info.rank);
  CHECK(comm().backend() == (info.world_size > 1 ? "mpi" : "single"));
  CHECK(comm().local_rank() >= 0);
}

TEST_CASE("all_reduce sums, averages and takes extremes over ranks", "[dist]") {
  const int r = comm().rank(), w = comm().world_size();
  std::vector<float> sum = {float(r), 1.f, float(r * r)};
  comm().all_reduce(sum.data(), 3, ReduceOp::sum);
  CHECK(sum[0] == float(w * (w - 1) / 2));
  CHECK(sum[1] == float(w));
  std::vector<float> avg = {float(2 * r), 4.f};
  comm().all_reduce(avg.data(), 2, ReduceOp::avg);
  CHECK(avg[0] == Approx(float(w - 1)));
  CHECK(avg[1] == Approx(4.f));
  float hi = float(r), lo = float(r);
  comm().all_reduce(&hi, 1, ReduceOp::max);
  comm().all_reduce(&lo, 1, ReduceOp::min);
  CHECK(hi == float(w - 1));
  CHECK(lo == 0.f);
  CHECK(comm().all_reduce_scalar(r + 0.5, ReduceOp::sum) == Approx(w * (w - 1) / 2.0 + 0.5 * w));
}

TEST_CASE("queued all_reduces over many buckets all complete by wait_all", "[dist]") {
  const int r = comm().rank(), w = comm().world_size();
  const int64_t n = 100003, bucket = 4096;  // a ragged last bucket
  std::vector<float> data(n);
  for (int64_t i = 0; i < n; ++i) data[i] = float(i % 97) + float(r);
  for (int64_t begin = 0; begin < n; begin += bucket)
    comm().all_reduce_start(data.data() + begin, std::min(bucket, n - begin), ReduceOp::avg);
  comm().wait_all();
  const float rank_mean = float(w - 1) / 2.f;
  for (int64_t i = 0; i < n; i += 997) CHECK(data[i] == Approx(float(i % 97) + rank_mean));
  CHECK(data[n - 1] == Approx(float((n - 1) % 97) + rank_mean));
}

TEST_CASE("broadcast copies the root's bytes, tensors and strings to every rank", "[dist]") {
  const int r = comm().rank();
  const int root = comm().world_size() - 1;
  std::vector<int> values = {r, r + 1, r + 2};
  comm().broadcast_host(values.data(), sizeof(int) * 3, root);
  CHECK(values == std::vector<int>{root, root + 1, root + 2});
  lmf::Tensor t = lmf::Tensor::full({5}, float(r) + 0.25f);
  comm().broadcast(t, 0);
  CHECK(t.data<float>()[4] == 0.25f);
  std::string s = r == 0 ? "runs/x/checkpoints/step_00000042" : "";
  comm().broadcast_string(s, 0);
  CHECK(s == "runs/x/checkpoints/step_00000042");
}

TEST_CASE("reduce_scatter then all_gather equals an all-reduce", "[dist]") {
  const int r = comm().rank(), w = comm().world_size();
  const int64_t count = 7;
  std::vector<float> send(count * w), shard(count), gathered(count * w);
  for (int64_t i = 0; i < count * w; ++i) send[i] = float(i) * float(r + 1);
  comm().reduce_scatter(send.data(), shard.data(), count, ReduceOp::sum);
  const float rank_factor = float(w * (w + 1) / 2);
  for (int64_t i = 0; i < count; ++i) CHECK(shard[i] == Approx(float(r * count + i) * rank_factor));
  comm().all_gather(shard.data(), gathered.data(), count);
  for (int64_t i = 0; i < count * w; ++i) CHECK(gathered[i] == Approx(float(i) * rank_factor));
  // In place: each rank's block already sits at its offset of the output.
  std::vector<float> in_place(count * w, -1.f);
  for (int64_t i = 0; i < count; ++i) in_place[r * count + i] = float(r);
  comm().all_gather(in_place.data() + r * count, in_place.data(), count);
  for (int64_t i = 0; i < count * w; ++i) CHECK(in_place[i] == float(i / count));
  comm().barrier();
}

TEST_CASE("a backend the build or the launch cannot provide is a clear error", "[dist]") {
  CHECK_THROWS_WITH(lmf::dist::make_comm("gloo"), Catch::Contains("unknown backend 'gloo'"));
  CHECK_THROWS_WITH(lmf::dist::make_comm("mpi", {-1.0}), Catch::Contains("timeout must be positive"));
  if (!lmf::dist::mpi_built())
    CHECK_THROWS_WITH(lmf::dist::make_comm("mpi"), Catch::Contains("no MPI support"));
  if (!lmf::dist::nccl_built())
    CHECK_THROWS_WITH(lmf::dist::make_comm("nccl"), Catch::Contains("no NCCL support"));
}

TEST_CASE("the launcher environment is parsed from SLURM variables", "[dist]") {
  if (lmf::dist::launch_info().launcher != "none" && lmf::dist::launch_info().launcher != "slurm") {
    SUCCEED("launched by another launcher; its variables take precedence");
    return;
  }
  const char* saved[3] = {std::getenv("SLURM_NTASKS"), std::getenv("SLURM_PROCID"), std::getenv("SLURM_LOCALID")};
  const std::string keep[3] = {saved[0] ? saved[0] : "", saved[1] ? saved[1] : "", saved[2] ? saved[2] : ""};
  setenv("SLURM_NTASKS", "8", 1);
  setenv("SLURM_PROCID", "5", 1);
  setenv("SLURM_LOCALID", "1", 1);
  const auto info = lmf::dist::launch_info();
  CHECK(info.launcher == "slurm");
  CHECK(info.world_size == 8);
  CHECK(info.rank == 5);
  CHECK(info.local_rank == 1);
  setenv("SLURM_PROCID", "9", 1);
  CHECK_THROWS_WITH(lmf::dist::launch_info(), Catch::Contains("not below the world size"));
  setenv("SLURM_PROCID", "x", 1);
  CHECK_THROWS_WITH(lmf::dist::launch_info(), Catch::Contains("SLURM_PROCID='x'"));
  const char* names[3] = {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"};
  for (int i = 0; i < 3; ++i) {
    if (saved[i])
      setenv(names[i], keep[i].c_str(), 1);
    else
      unsetenv(names[i]);
  }
}
