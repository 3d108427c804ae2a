// CudaGraph and the per-device capture state the backends consult (core/cuda_capture.h). Eager
// work runs on the legacy default stream; capture is impossible there, so a capture moves the
// device's work to the graph's own stream. That stream is a blocking one, so replays stay
// ordered with eager kernels and cudaMemcpy (which wait for it and it for them) without events.
#include "lmforge/core/cuda_graph.h"

#include <array>
#include <atomic>
#include <vector>

#include "core/cuda_capture.h"
#include "core/private_pool.h"
#include "lmforge/core/error.h"

namespace lmf {
namespace {

constexpr int kMaxGpus = 64;

struct CaptureSlot {
  std::atomic<void*> stream{nullptr};  // the capturing graph's cudaStream_t, null when none
  std::atomic<CudaGraph*> graph{nullptr};
};

CaptureSlot* slot_of(Device device) {
  static std::array<CaptureSlot, kMaxGpus> slots;
  if (!device.is_cuda() || device.index < 0 || device.index >= kMaxGpus) return nullptr;
  return &slots[device.index];
}

}  // namespace

namespace detail {

bool cuda_capturing(Device device) {
#ifdef LMF_WITH_CUDA
  CaptureSlot* slot = slot_of(device);
  if (!slot) return false;
  auto stream = static_cast<cudaStream_t>(slot->stream.load());
  if (!stream) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;  // the slot says a capture is open; an unreadable status is still inside it
  }
  return status != cudaStreamCaptureStatusNone;
#else
  (void)device;
  return false;
#endif
}

void check_not_capturing(Device device, const char* what) {
  LMF_CHECK(!cuda_capturing(device), what, " on ", device.str(),
            " cannot run inside a CUDA graph capture: a captured step keeps its values on the "
            "device and its inputs in static device tensors (see lmforge/core/cuda_graph.h)");
}

#ifdef LMF_WITH_CUDA
cudaStream_t cuda_stream(int index) {
  CaptureSlot* slot = slot_of(Device::cuda(index));
  return slot ? static_cast<cudaStream_t>(slot->stream.load(std::memory_order_relaxed)) : nullptr;
}

cudaStream_t current_cuda_stream() {
  int index = 0;
  cudaGetDevice(&index);
  return cuda_stream(index);
}
#endif

}  // namespace detail

struct CudaGraph::Impl {
  Device device = Device::cpu();
  uint64_t pool = 0;
  std::vector<std::function<void(bool)>> hooks;
#ifdef LMF_WITH_CUDA
  cudaStream_t stream = nullptr;
  cudaGraphExec_t exec = nullptr;
#endif
};

CudaGraph::CudaGraph() : impl_(std::make_unique<Impl>()) {}

CudaGraph::~CudaGraph() {
#ifdef LMF_WITH_CUDA
  // An executable graph still running is freed when it completes; the pool's blocks then serve
  // legacy-stream work, which the blocking capture stream's replays are ordered before.
  if (impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_->stream) cudaStreamDestroy(impl_->stream);
#endif
  if (impl_->pool != 0) {
    try {
      detail::release_private_pool(impl_->device, impl_->pool);
    } catch (...) {  // a destructor does not throw; the blocks stay reserved
    }
  }
}

bool CudaGraph::captured() const {
#ifdef LMF_WITH_CUDA
  return impl_->exec != nullptr;
#else
  return false;
#endif
}

Device CudaGraph::device() const { return impl_->device; }

void CudaGraph::before_launch(std::function<void(bool replay)> hook) { impl_->hooks.push_back(std::move(hook)); }

CudaGraph* CudaGraph::capturing(Device device) {
  CaptureSlot* slot = slot_of(device);
  return slot ? slot->graph.load() : nullptr;
}

#ifdef LMF_WITH_CUDA

namespace {

class DeviceScope {
 public:
  explicit DeviceScope(Device device) {
    cudaGetDevice(&previous_);
    if (previous_ != device.index) cudaSetDevice(device.index);
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

void check_cuda(cudaError_t status, const char* call, Device device) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw Error(str("CudaGraph: ", call, " on ", device.str(), " failed: ", cudaGetErrorName(status), " (",
                  cudaGetErrorString(status), ")"));
}

}  // namespace

void CudaGraph::capture(Device device, const std::function<void()>& step) {
  LMF_CHECK(device.is_cuda(), "CudaGraph::capture: ", device.str(),
            " is not a GPU; CUDA graphs record GPU work only");
  LMF_CHECK(cuda_available(), "CudaGraph::capture on ", device.str(), ": no CUDA GPU is visible on this machine");
  LMF_CHECK(device.index >= 0 && device.index < cuda_device_count() && device.index < kMaxGpus,
            "CudaGraph::capture: ", device.str(), " does not exist (", cuda_device_count(), " GPUs visible)");
  Impl& g = *impl_;
  LMF_CHECK(g.pool == 0 || g.device == device, "CudaGraph::capture: this graph was captured on ", g.device.str(),
            "; capture on ", device.str(), " with another CudaGraph");
  CaptureSlot& slot = *slot_of(device);
  LMF_CHECK(slot.graph.load() == nullptr, "CudaGraph::capture: another capture is active on ", device.str());
  DeviceScope scope(device);
  if (g.exec) {
    check_cuda(cudaGraphExecDestroy(g.exec), "cudaGraphExecDestroy", device);
    g.exec = nullptr;
  }
  g.hooks.clear();
  if (!g.stream) check_cuda(cudaStreamCreateWithFlags(&g.stream, cudaStreamDefault), "cudaStreamCreate", device);
  if (g.pool == 0) g.pool = detail::create_private_pool(device);
  g.device = device;

  detail::begin_private_pool(device, g.pool);
  slot.graph.store(this);
  slot.stream.store(g.stream);
  auto close = [&] {
    slot.stream.store(nullptr);
    slot.graph.store(nullptr);
    detail::end_private_pool(device);
  };
  const cudaError_t begun = cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeGlobal);
  if (begun != cudaSuccess) {
    close();
    check_cuda(begun, "cudaStreamBeginCapture", device);
  }
  cudaGraph_t graph = nullptr;
  try {
    step();
  } catch (...) {
    cudaStreamEndCapture(g.stream, &graph);  // abandon what was recorded
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    close();
    g.hooks.clear();
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(g.stream, &graph);
  close();
  if (ended != cudaSuccess || graph == nullptr) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    g.hooks.clear();
    throw Error(str("CudaGraph::capture on ", device.str(), ": the capture was invalidated (",
                    cudaGetErrorName(ended), ": ", cudaGetErrorString(ended),
                    "); something in the step synchronised with the GPU or queued work on the legacy "
                    "default stream (a cudaMemcpy, a kernel on stream 0) while it was recorded"));
  }
  const cudaError_t instantiated = cudaGraphInstantiate(&g.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) {
    g.exec = nullptr;
    g.hooks.clear();
    check_cuda(instantiated, "cudaGraphInstantiate", device);
  }
  for (auto& hook : g.hooks) hook(false);
  check_cuda(cudaGraphLaunch(g.exec, g.stream), "cudaGraphLaunch", device);
}

void CudaGraph::replay() {
  Impl& g = *impl_;
  LMF_CHECK(g.exec != nullptr, "CudaGraph::replay: nothing captured (call capture first; a failed capture "
            "leaves the graph empty)");
  DeviceScope scope(g.device);
  for (auto& hook : g.hooks) hook(true);
  check_cuda(cudaGraphLaunch(g.exec, g.stream), "cudaGraphLaunch", g.device);
}

#else

void CudaGraph::capture(Device device, const std::function<void()>&) {
  throw Error(str("CudaGraph::capture on ", device.str(),
                  ": this build of lmforge has no CUDA support (configure with -DLMF_CUDA=ON)"));
}

void CudaGraph::replay() {
  throw Error("CudaGraph::replay: this build of lmforge has no CUDA support (configure with -DLMF_CUDA=ON)");
}

#endif

}  // namespace lmf
