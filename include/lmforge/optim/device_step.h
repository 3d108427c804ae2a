// DeviceStep: the values of a GPU training step that decide its update (the loss, the gradient norm,
// the clip factor, whether to skip, AdamW's step count) kept in device memory, with a ring of
// per-step records the host reads only when it needs them (a log line, an evaluation, a checkpoint).
// So a step queues its kernels without ever waiting for the GPU, and stays capturable as a graph.
#pragma once
#include <cstdint>
#include <vector>

#include "lmforge/core/tensor.h"

namespace lmf::optim {

class DeviceStep {
 public:
  /// Why a step's update was skipped on the device, in the order the tests are made.
  enum class Skip : int32_t { none = 0, non_finite_loss = 1, spike = 2, non_finite_norm = 3 };
  /// One decided step as read back.
  struct Record {
    int64_t step = 0;      ///< the index passed to decide()
    float loss = 0;        ///< the step's loss (all ranks)
    double grad_norm = 0;  ///< before clipping
    Skip skip = Skip::none;
  };

  /// State and a ring of `capacity` records on `device` (a GPU; this is an lmf::Error elsewhere).
  /// At most `capacity` steps may be decided between two reads.
  DeviceStep(Device device, int64_t capacity);

  Device device() const { return device_; }
  int64_t capacity() const { return capacity_; }
  /// The step's loss = factor · sum of `values` (f32, contiguous, on device()), on the device.
  void set_loss(const Tensor& values, float factor);
  /// The gradients' sum of squares = that of `values` (f32, contiguous, on device()), on the device.
  void set_sum_squares(const Tensor& values);
  /// Device addresses of the step's loss and of the gradients' sum of squares (all ranks), for a
  /// collective or a reduction to write in place.
  float* loss_data();
  float* sum_squares_data();
  /// On the device, from the loss and the sum of squares: the norm, the clip factor (torch's rule;
  /// max_norm <= 0: none), the verdict (non-finite loss, spike against the reference set last,
  /// non-finite norm) and, for an applied step, AdamW's t and bias corrections; the record of
  /// `step` goes into the ring slot a counter on the device names, and the counter advances.
  /// Queued, never waited for. Inside a CUDA graph capture (lmforge/core/cuda_graph.h) it also
  /// registers a hook with the graph, so each replay counts as the decision of the step after the
  /// last one decided (and throws, before the launch, when the ring is full: read() first).
  void decide(int64_t step, double max_norm, float beta1, float beta2);
  /// The state AdamW::step(const DeviceStep&) reads (a kernels::StepControl in device memory).
  const void* control() const;

  /// The records of every step decided since the last read, oldest first, and applied() brought
  /// up to date: one device-to-host copy, which waits for the GPU. Throws lmf::Error when the
  /// device's count of decided steps differs from the host's (a launch the host did not count).
  std::vector<Record> read();
  /// Forgets, on the host, the last decide() of a CUDA graph capture that was abandoned (its
  /// kernels never ran, so the device did not count it). Throws when nothing is pending.
  void forget_last_decision();
  /// Steps decided and not yet read.
  int64_t pending() const { return pending_; }
  /// Updates applied in total (AdamW's step count), as of the last read or set_applied().
  int64_t applied() const { return applied_; }
  /// Sets the device's count of applied updates (after a checkpoint restored the optimizer).
  void set_applied(int64_t applied);
  /// The loss guard's statistics the spike test compares with (zscore <= 0: no spike test).
  void set_spike_reference(double mean, double sd, float zscore);

 private:
  Device device_;
  int64_t capacity_;
  Tensor memory_;  // one StepControl, then capacity StepRecords
  // Counted on the host as on the device (StepControl::decided): the ring slot of each record.
  void count_decided(int64_t step);
  int64_t first_pending_ = 0, pending_ = 0;
  int64_t decided_ = 0;
  int64_t applied_ = 0;
};

}  // namespace lmf::optim
