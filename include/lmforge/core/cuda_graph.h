// A training step recorded once as a CUDA graph and replayed: one launch instead of hundreds of
// kernel launches and the host work that builds them (autograd graph, shape checks, dispatch).
// Replays run the recorded kernels on the recorded addresses, which sets the rules below.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "lmforge/core/device.h"

namespace lmf {

/// A CUDA graph of the work one callable queues on a GPU.
///
/// `capture(device, step)` calls `step()` once while the device's stream is being captured, then
/// launches the graph once, so a capture behaves like one eager call of `step` (its host side
/// effects, such as the optimizer's step count, happen once and match that one execution).
/// `replay()` launches the same kernels again, on the same addresses, with no host work.
///
/// Rules for the step (static buffers):
/// - Inputs live in device tensors made before the capture and kept alive while the graph lives;
///   for each new batch the caller copies the data into those same tensors (`copy_`, or a queued
///   upload) before `replay()`. Outputs (the loss tensor the step returned) are likewise static:
///   each replay overwrites them; keep the tensor to read it.
/// - Parameters, gradients and optimizer state must not be reallocated while the graph lives (no
///   `to()`, no re-flattening, no new optimizer); their slabs are what the kernels update.
/// - Nothing in the step may read device values on the host (`item()`, `to_vector()`, a norm
///   returned as a double), copy host data up, free device memory to the system or synchronise:
///   such a call throws lmf::Error naming it and the capture is abandoned. Values that change per
///   step must be read by the kernels from device memory: AdamW does so for its learning rate and
///   bias corrections (it registers a `before_launch` hook; set the new lr with `set_lr` before
///   `replay()`). Dropout draws its mask from a counter fixed at capture: replays repeat the mask.
/// - Memory: while capturing, the device's allocations come from a private pool of the caching
///   allocator that belongs to this graph; blocks freed during the capture stay in it, so replays
///   find their scratch memory untouched by other work. The pool is released with the graph.
/// - The ids the step embeds are not checked against the vocabulary inside a capture (that check
///   reads back); check them when filling the input (the data loader does).
/// - One capture at a time per device, from one host thread; the graph and the objects whose
///   hooks it holds (the optimizer) must outlive the replays.
///
/// Without CUDA (a CPU build, a machine with no GPU, a CPU device) `capture` throws lmf::Error.
/// Not yet run on a GPU: this code compiles in CI; its test runs through scripts/gpu_check.sh.
class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  /// Records `step` on `device`'s stream, instantiates the graph and launches it once. A second
  /// capture replaces the first graph and reuses its private pool (so the same addresses). If
  /// `step` throws or something in it breaks the capture, the capture is abandoned, the graph is
  /// left empty (`captured()` false) and lmf::Error says what happened.
  void capture(Device device, const std::function<void()>& step);
  /// Launches the captured graph again (after running the `before_launch` hooks). Asynchronous,
  /// like the kernels it replays; throws if nothing is captured.
  void replay();
  /// Whether a graph is captured and can be replayed.
  bool captured() const;
  /// The device of the capture.
  Device device() const;
  /// Host work needed before every launch of this graph, such as writing a per-step scalar into
  /// device memory the kernels read. The hook gets `replay` = false for the launch that ends
  /// `capture` and true for each `replay()`. Hooks are kept until the next capture.
  void before_launch(std::function<void(bool replay)> hook);
  /// The graph capturing on `device` right now, or nullptr.
  static CudaGraph* capturing(Device device);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lmf
