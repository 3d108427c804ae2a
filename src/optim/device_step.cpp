// DeviceStep's layout: one allocation holding the StepControl and the ring of StepRecords, so a
// read is one copy. The decisions themselves are kernels/adamw.cu's step_decide, which also keeps
// the ring's write index; the host keeps the same count to know which slots a read covers.
#include "lmforge/optim/device_step.h"

#include <cstddef>
#include <cstring>

#include "backend/cuda/cuda_backend.h"
#include "lmforge/core/cuda_graph.h"
#include "lmforge/ops.h"

namespace lmf::optim {
namespace {

using kernels::StepControl;
using kernels::StepRecord;

constexpr int64_t kControlBytes = (sizeof(StepControl) + 15) / 16 * 16;

}  // namespace

DeviceStep::DeviceStep(Device device, int64_t capacity) : device_(device), capacity_(capacity) {
  LMF_CHECK(device.is_cuda(), "DeviceStep: keeps a step's values on a GPU, not on ", device.str());
  LMF_CHECK(capacity > 0, "DeviceStep: capacity must be positive, got ", capacity);
  const int64_t bytes = kControlBytes + capacity * int64_t(sizeof(StepRecord));
  memory_ = Tensor::zeros({bytes / 4}, DType::i32, device);
  const StepControl initial{};
  copy_bytes(memory_.raw_data(), device, &initial, Device::cpu(), sizeof initial);
}

void DeviceStep::set_loss(const Tensor& values, float factor) {
  LMF_CHECK(values.device() == device_ && values.dtype() == DType::f32 && values.is_contiguous(),
            "DeviceStep::set_loss: expected contiguous f32 values on ", device_.str());
  cuda::sum_all(device_, loss_data(), values.data<float>(), values.numel(), factor, false);
}

void DeviceStep::set_sum_squares(const Tensor& values) {
  LMF_CHECK(values.device() == device_ && values.dtype() == DType::f32 && values.is_contiguous(),
            "DeviceStep::set_sum_squares: expected contiguous f32 values on ", device_.str());
  cuda::sum_all(device_, sum_squares_data(), values.data<float>(), values.numel(), 1.f, true);
}

float* DeviceStep::loss_data() {
  return &static_cast<StepControl*>(memory_.raw_data())->loss;
}

float* DeviceStep::sum_squares_data() {
  return &static_cast<StepControl*>(memory_.raw_data())->sum_squares;
}

const void* DeviceStep::control() const { return memory_.raw_data(); }

void DeviceStep::count_decided(int64_t step) {
  LMF_CHECK(pending_ < capacity_, "DeviceStep: ", pending_, " steps decided since the last read, the ring "
            "holds ", capacity_, "; read() first");
  if (pending_ == 0) first_pending_ = step;
  LMF_CHECK(step == first_pending_ + pending_, "DeviceStep: step ", step, " decided after step ",
            first_pending_ + pending_ - 1, "; steps must follow one another between reads");
  ++pending_;
  ++decided_;
}

void DeviceStep::decide(int64_t step, double max_norm, float beta1, float beta2) {
  count_decided(step);
  auto* control = static_cast<StepControl*>(memory_.raw_data());
  auto* ring = reinterpret_cast<StepRecord*>(static_cast<char*>(memory_.raw_data()) + kControlBytes);
  cuda::step_decide(device_, control, ring, capacity_, static_cast<float>(max_norm), beta1, beta2);
  // A replay decides again on the device (the counter there picks the slot); the host counts it
  // as the step after the last one decided, before the launch, so a full ring refuses the replay.
  if (CudaGraph* graph = CudaGraph::capturing(device_))
    graph->before_launch([this](bool replay) {
      if (replay) count_decided(first_pending_ + pending_);
    });
}

void DeviceStep::forget_last_decision() {
  LMF_CHECK(pending_ > 0, "DeviceStep::forget_last_decision: no step decided since the last read");
  --pending_;
  --decided_;
}

std::vector<DeviceStep::Record> DeviceStep::read() {
  std::vector<char> host(static_cast<std::size_t>(memory_.nbytes()));
  copy_bytes(host.data(), Device::cpu(), memory_.raw_data(), device_, host.size());
  StepControl control;
  std::memcpy(&control, host.data(), sizeof control);
  LMF_CHECK(control.decided == decided_, "DeviceStep: the device decided ", control.decided, " steps, the host "
            "counted ", decided_, "; a step was launched that the host did not count (a graph replayed "
            "without DeviceStep's hook?)");
  std::vector<Record> out;
  for (int64_t i = 0; i < pending_; ++i) {
    const int64_t slot = (decided_ - pending_ + i) % capacity_;
    StepRecord r;
    std::memcpy(&r, host.data() + kControlBytes + slot * int64_t(sizeof(StepRecord)), sizeof r);
    out.push_back({first_pending_ + i, r.loss, double(r.grad_norm), static_cast<Skip>(r.skip)});
  }
  first_pending_ += pending_;
  pending_ = 0;
  applied_ = control.applied;
  return out;
}

void DeviceStep::set_applied(int64_t applied) {
  auto* control = static_cast<StepControl*>(memory_.raw_data());
  copy_bytes(&control->applied, device_, &applied, Device::cpu(), sizeof applied);
  applied_ = applied;
}

void DeviceStep::set_spike_reference(double mean, double sd, float zscore) {
  StepControl head{};
  head.spike_mean = mean;
  head.spike_sd = sd;
  head.spike_zscore = zscore;
  // The three fields lead the struct: one small copy.
  static_assert(offsetof(StepControl, spike_zscore) + sizeof(float) <= offsetof(StepControl, loss));
  copy_bytes(memory_.raw_data(), device_, &head, Device::cpu(), offsetof(StepControl, loss));
}

}  // namespace lmf::optim
