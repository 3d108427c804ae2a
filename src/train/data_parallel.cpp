// Data parallelism over dist::Comm: gradient buckets all-reduced while backward runs, ZeRO-1's
// reduce-scatter / all-gather, and the agreement helpers that keep every rank deciding alike.
#include "lmforge/train/data_parallel.h"

#include <algorithm>
#include <cmath>

#include "lmforge/autograd.h"
#include "lmforge/nn/module.h"
#include "lmforge/ops.h"
#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "lmforge/optim/device_step.h"

namespace lmf::train {
namespace {

// n floats from src's storage at element src_at to dst's at dst_at (both f32, same device or not).
void copy_floats(const Tensor& dst, int64_t dst_at, const Tensor& src, int64_t src_at, int64_t n) {
  if (n <= 0) return;
  copy_bytes(dst.data<float>() + dst_at, dst.device(), src.data<float>() + src_at, src.device(),
             static_cast<std::size_t>(n) * sizeof(float));
}

}  // namespace

DataParallel::DataParallel(dist::Comm& comm, nn::Module& model, optim::AdamW& optimizer, DataParallelOptions options)
    : comm_(comm), model_(model), optimizer_(optimizer), options_(options) {
  LMF_CHECK(options_.zero == 0 || options_.zero == 1, "distributed.zero: must be 0 or 1, got ", options_.zero);
  if (comm_.world_size() == 1) return;
  // Rank 0's weights everywhere: a scratch model is seeded alike on every rank, but a model.init
  // read while another rank rewrites it, or a caller-built model, need not be.
  broadcast_parameters();
  if (options_.zero == 1) {
    const Device device = model_.slab()->device();
    const int64_t n = model_.slab()->numel(), world = comm_.world_size();
    shard_size_ = (n + world - 1) / world;
    const int64_t begin = std::min(n, comm_.rank() * shard_size_);
    optimizer_.shard(begin, std::min(n, begin + shard_size_));
    zero_full_ = Tensor::zeros({shard_size_ * world}, DType::f32, device);
    zero_shard_ = Tensor::zeros({shard_size_}, DType::f32, device);
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast_parameters() {
  if (comm_.world_size() == 1) return;
  Tensor params = model_.param_slab();
  comm_.broadcast(params, 0);
}

bool DataParallel::agree_any(bool local) {
  return comm_.world_size() == 1 ? local : comm_.all_reduce_scalar(local ? 1.0 : 0.0, dist::ReduceOp::max) > 0;
}

double DataParallel::mean(double value) {
  return comm_.world_size() == 1 ? value : comm_.all_reduce_scalar(value, dist::ReduceOp::avg);
}

std::string DataParallel::broadcast_string(std::string value) {
  if (comm_.world_size() > 1) comm_.broadcast_string(value, 0);
  return value;
}

void DataParallel::backward(const Tensor& loss, bool last_micro_batch) {
  if (overlap_enabled() && last_micro_batch) {
    begin_gradient_average();
    lmf::backward(loss, Tensor(), [this](const Tensor& leaf) { on_grad_final(leaf); });
    finish_gradient_average();
  } else {
    loss.backward();
  }
}

// Buckets of whole slab entries, from the last registered (whose gradients backward produces
// first) to the first; together they cover the slab.
void DataParallel::build_buckets() {
  const nn::ParameterSlab& slab = *model_.slab();
  buckets_.clear();
  bucket_of_.clear();
  for (std::size_t i = slab.entries.size(); i-- > 0;) {
    if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= options_.bucket_elements) {
      const int64_t top = buckets_.empty() ? slab.numel() : buckets_.back().begin;
      buckets_.push_back({top, top, 0});
    }
    buckets_.back().begin = slab.entries[i].offset;
    bucket_of_[slab.entries[i].param.impl().get()] = buckets_.size() - 1;
  }
  if (!buckets_.empty()) buckets_.back().begin = 0;
  bucketed_slab_ = model_.slab();
}

// Before the backward pass whose gradients are averaged: every trainable parameter pending.
void DataParallel::begin_gradient_average() {
  if (bucketed_slab_ != model_.slab()) build_buckets();
  for (Bucket& b : buckets_) b.pending = 0;
  for (const auto& e : model_.slab()->entries)
    if (e.param.requires_grad()) ++buckets_[bucket_of_.at(e.param.impl().get())].pending;
  next_bucket_ = 0;
}

// A bucket's all-reduce is queued once all of its parameters are final and every bucket before
// it has been queued, so that every rank queues them in the same order whatever the graph.
void DataParallel::on_grad_final(const Tensor& leaf) {
  const auto it = bucket_of_.find(leaf.impl().get());
  if (it == bucket_of_.end()) return;  // not a parameter of the slab
  --buckets_[it->second].pending;
  start_buckets(false);
}

void DataParallel::start_buckets(bool all) {
  float* g = model_.slab()->grads_as_is().data<float>();
  for (; next_bucket_ < buckets_.size() && (all || buckets_[next_bucket_].pending <= 0); ++next_bucket_) {
    const Bucket& b = buckets_[next_bucket_];
    if (b.end > b.begin) comm_.all_reduce_start(g + b.begin, b.end - b.begin, dist::ReduceOp::avg);
  }
}

// Buckets holding parameters no gradient reached (or only frozen ones) are queued now, then
// everything is waited for (on a GPU by the compute stream, not the host).
void DataParallel::finish_gradient_average() {
  start_buckets(true);
  comm_.wait_all_on_device();
}

DataParallel::Norm DataParallel::gradient_norm(double max_norm) {
  if (zero_enabled()) return {clip_gradients(max_norm), 1.f};
  comm_.synchronize();  // as clip_gradients: the averaged gradients are complete
  const double norm = optim::grad_norm(*model_.slab());
  return {norm, optim::clip_factor(norm, max_norm)};
}

double DataParallel::clip_gradients(double max_norm) {
  const nn::ParameterSlab& slab = *model_.slab();
  if (!zero_enabled()) {
    // The gradients were averaged over the ranks during the last backward pass (stream-ordered:
    // the deadline-bound wait comes before the norm is read).
    comm_.synchronize();
    return max_norm > 0 ? optim::clip_grad_norm(slab, max_norm) : optim::grad_norm(slab);
  }
  // ZeRO-1: this rank's shard of the averaged gradients lands in the grad slab (the rest of the
  // slab is left stale: the sharded optimizer never reads it), clipped by the global norm.
  const Tensor& g = slab.grads();
  const int64_t n = slab.numel(), begin = optimizer_.shard_begin(), end = optimizer_.shard_end();
  copy_floats(zero_full_, 0, g, 0, n);  // the padding past n stays zero
  comm_.reduce_scatter(zero_full_.data<float>(), zero_shard_.data<float>(), shard_size_, dist::ReduceOp::avg);
  copy_floats(g, begin, zero_shard_, 0, end - begin);
  Tensor mine = Tensor::view_of(g.storage(), {end - begin}, DType::f32, begin);
  comm_.synchronize();
  const double squares = optim::sum_of_squares(mine);
  const double norm = std::sqrt(comm_.all_reduce_scalar(squares, dist::ReduceOp::sum));
  const double coef = max_norm / (norm + 1e-6);  // torch's clip_grad_norm_ rule, as optim::clip
  if (max_norm > 0 && coef < 1.0 && end > begin) scale_(mine, static_cast<float>(coef));
  return norm;
}

void DataParallel::clip_gradients(optim::DeviceStep& control, int64_t step, double max_norm) {
  const nn::ParameterSlab& slab = *model_.slab();
  const Tensor& g = slab.grads();
  if (!zero_enabled()) {
    control.set_sum_squares(g);
  } else {
    // As the host form: this rank's shard of the averaged gradients, its squares summed over ranks.
    const int64_t n = slab.numel(), begin = optimizer_.shard_begin(), end = optimizer_.shard_end();
    copy_floats(zero_full_, 0, g, 0, n);
    comm_.reduce_scatter(zero_full_.data<float>(), zero_shard_.data<float>(), shard_size_, dist::ReduceOp::avg);
    copy_floats(g, begin, zero_shard_, 0, end - begin);
    control.set_sum_squares(Tensor::view_of(g.storage(), {end - begin}, DType::f32, begin));
    comm_.all_reduce_start(control.sum_squares_data(), 1, dist::ReduceOp::sum);
    comm_.wait_all_on_device();
  }
  control.decide(step, max_norm, optimizer_.config().beta1, optimizer_.config().beta2);
}

void DataParallel::mean_on_device(float* value) {
  if (comm_.world_size() == 1) return;
  comm_.all_reduce_start(value, 1, dist::ReduceOp::avg);
  comm_.wait_all_on_device();
}

void DataParallel::after_step() {
  if (!zero_enabled()) return;
  const Tensor& p = model_.slab()->params;
  const int64_t n = model_.slab()->numel(), begin = optimizer_.shard_begin(), end = optimizer_.shard_end();
  zero_shard_.zero_();
  copy_floats(zero_shard_, 0, p, begin, end - begin);
  comm_.all_gather(zero_shard_.data<float>(), zero_full_.data<float>(), shard_size_);
  copy_floats(p, 0, zero_full_, 0, n);
}

// A sharded moment slab from every rank, as one (world_size * shard_size) tensor in slab layout.
Tensor DataParallel::gather_shards(const Tensor& shard) {
  const int64_t count = optimizer_.shard_end() - optimizer_.shard_begin();
  zero_shard_.zero_();
  copy_floats(zero_shard_, 0, shard, 0, count);
  Tensor full = Tensor::empty({shard_size_ * comm_.world_size()}, DType::f32, zero_shard_.device());
  comm_.all_gather(zero_shard_.data<float>(), full.data<float>(), shard_size_);
  return full;
}

io::NamedTensors DataParallel::optimizer_moments() {
  io::NamedTensors moments;
  if (!optimizer_.sharded()) {
    const auto state = optimizer_.state();
    for (const auto& [name, t] : state.exp_avg) moments.emplace_back("exp_avg." + name, t);
    for (const auto& [name, t] : state.exp_avg_sq) moments.emplace_back("exp_avg_sq." + name, t);
    return moments;
  }
  const Tensor m = gather_shards(optimizer_.exp_avg_slab()), v = gather_shards(optimizer_.exp_avg_sq_slab());
  comm_.synchronize();  // the gathers are stream-ordered; the caller reads them on the host
  for (const auto& e : model_.slab()->entries)
    moments.emplace_back("exp_avg." + e.name, Tensor::view_of(m.storage(), e.param.shape(), DType::f32, e.offset));
  for (const auto& e : model_.slab()->entries)
    moments.emplace_back("exp_avg_sq." + e.name, Tensor::view_of(v.storage(), e.param.shape(), DType::f32, e.offset));
  return moments;
}

}  // namespace lmf::train
