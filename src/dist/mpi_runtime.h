// The one MPI runtime of the process, shared by the mpi backend and the NCCL bootstrap: initialised
// on first use (MPI allows that only once per process), finalised at exit unless a communication
// failure happened, since MPI_Finalize with a dead peer can block forever.
#pragma once
#ifdef LMF_WITH_MPI
// The C API only: the deprecated C++ bindings add nothing here and warn under -Wextra.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <string>

#include "lmforge/core/error.h"

namespace lmf::dist::detail {

/// MPI_Init_thread(FUNNELED) unless MPI is already initialised (by us or by the caller's program).
void mpi_initialize();
/// Records that a collective failed: the exit handler then skips MPI_Finalize.
void mpi_mark_failed();
bool mpi_finalized();
[[noreturn]] void mpi_throw(int code, const char* call, const char* file, int line);

}  // namespace lmf::dist::detail

/// Every MPI call goes through this: a failure marks the runtime failed and throws lmf::Error
/// naming the call, the source line and MPI's own message.
#define LMF_MPI_CHECK(call)                                                                  \
  do {                                                                                       \
    const int lmf_mpi_rc_ = (call);                                                          \
    if (lmf_mpi_rc_ != MPI_SUCCESS)                                                          \
      ::lmf::dist::detail::mpi_throw(lmf_mpi_rc_, #call, __FILE__, __LINE__);                \
  } while (0)

#endif  // LMF_WITH_MPI
