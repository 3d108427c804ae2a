// What the three Comm implementations share inside src/dist: the constructors behind make_comm, the
// process-wide MPI runtime (initialised once, finalised at exit unless a failure made that unsafe)
// and the deadline loop that every wait goes through.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "lmforge/dist/comm.h"

namespace lmf::dist::detail {

std::unique_ptr<Comm> make_single_comm();
std::unique_ptr<Comm> make_mpi_comm(const CommOptions& options);
std::unique_ptr<Comm> make_nccl_comm(const CommOptions& options);

/// Calls `done()` until it returns true, spinning briefly and then sleeping in growing steps (a
/// rank waiting on a slow peer should not take a core from it). Throws lmf::Error naming `what`
/// after `timeout_s` seconds.
template <class Done>
void wait_until(Done&& done, double timeout_s, const std::string& what, int rank) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  auto pause = std::chrono::microseconds(0);
  for (int polls = 0;; ++polls) {
    if (done()) return;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(str("dist: rank ", rank, ": ", what, " did not complete within ", timeout_s,
                      " s (distributed.timeout); a peer rank has probably died or hung"));
    if (polls > 2000) {
      pause = std::min(std::chrono::microseconds(2000), pause + std::chrono::microseconds(20));
      std::this_thread::sleep_for(pause);
    }
  }
}

}  // namespace lmf::dist::detail
