// DataParallel: training one model on several processes (dist::Comm ranks), each on its own
// slice of every batch. Without ZeRO the gradient slab is averaged in buckets while the last
// backward pass still runs (lmf::backward's on_leaf_grad_final hook); with ZeRO-1 each rank keeps
// the AdamW moments of its shard of the slab only (reduce-scatter of gradients, all-gather of
// updated parameters). With one rank every call is the plain single-process step. On a GPU the
// collectives are stream-ordered (NCCL on its own stream, waited for by the compute stream), and
// the DeviceStep forms keep the norm and the loss on the device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lmforge/core/tensor.h"
#include "lmforge/dist/comm.h"
#include "lmforge/io/safetensors.h"

namespace lmf::nn {
class Module;
struct ParameterSlab;
}
namespace lmf::optim {
class AdamW;
class DeviceStep;
}

namespace lmf::train {

struct DataParallelOptions {
  int zero = 0;  ///< 0: replicated optimizer state; 1: ZeRO-1 (moments sharded over the ranks)
  /// Gradient bucket size: whole parameters, at least this many elements each but the last.
  int64_t bucket_elements = int64_t(4) << 20;
};

class DataParallel {
 public:
  /// Broadcasts rank 0's weights to every rank and, with ZeRO-1, shards `optimizer`. The model's
  /// slab must be final (LoRA added, on its device) and the optimizer built on it. `comm`,
  /// `model` and `optimizer` must outlive this object.
  DataParallel(dist::Comm& comm, nn::Module& model, optim::AdamW& optimizer, DataParallelOptions options = {});
  ~DataParallel();

  dist::Comm& comm() const { return comm_; }
  int rank() const { return comm_.rank(); }
  int world_size() const { return comm_.world_size(); }
  bool is_root() const { return comm_.rank() == 0; }
  /// ZeRO-1 is on and there is more than one rank.
  bool zero_enabled() const { return shard_size_ > 0 && comm_.world_size() > 1; }

  /// Backward of one micro-batch's (already scaled) loss. On the last micro-batch of a step the
  /// gradients are averaged over the ranks during the pass (unless ZeRO-1 reduces them later).
  void backward(const Tensor& loss, bool last_micro_batch);
  /// After the last backward: the gradient norm over all ranks before clipping, with the
  /// gradients clipped to `max_norm` (0: no clipping). With ZeRO-1 this is where this rank's
  /// shard of the averaged gradients is made.
  double clip_gradients(double max_norm);
  /// The norm (over all ranks, before clipping) and the clip factor, without scaling the
  /// gradients where the optimizer can apply the factor itself (AdamW::step(scale), Muon::step);
  /// `scale` is then the factor, otherwise (ZeRO-1, whose shard is scaled here) 1.
  struct Norm {
    double norm = 0;
    float scale = 1.f;
  };
  Norm gradient_norm(double max_norm);
  /// The same on a GPU without reading anything back: the gradients' sum of squares (all ranks)
  /// into `control`, then control.decide(step, max_norm, ...) makes the clip factor, the verdict
  /// and AdamW's t on the device; optimizer.step(control) applies them. With NCCL, ZeRO-1's
  /// reduce-scatter and the norm's all-reduce are stream-ordered: the host never waits.
  void clip_gradients(optim::DeviceStep& control, int64_t step, double max_norm);
  /// The mean over the ranks of one f32 in device memory, in place and stream-ordered (nothing
  /// with one rank): a GPU step's loss, so that every rank decides alike on the device.
  void mean_on_device(float* value);
  /// After optimizer.step(): with ZeRO-1, every rank's updated shard to every rank.
  void after_step();

  /// The moments by name in the checkpoint layout, whatever the sharding (every rank must call).
  io::NamedTensors optimizer_moments();
  /// Rank 0's parameters to every rank.
  void broadcast_parameters();

  /// True on every rank when `local` is true on any (clocks, signals).
  bool agree_any(bool local);
  /// The mean of `value` over the ranks.
  double mean(double value);
  /// Rank 0's string on every rank.
  std::string broadcast_string(std::string value);

  /// The engine hook: `leaf` has its final gradient of this backward pass. Public so that a loop
  /// driving lmf::backward itself can use it between begin_gradient_average and
  /// finish_gradient_average.
  void on_grad_final(const Tensor& leaf);
  void begin_gradient_average();
  void finish_gradient_average();

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // slab elements, padding included
    int64_t pending = 0;         // parameters whose gradient is not final yet in this backward
  };
  bool overlap_enabled() const { return comm_.world_size() > 1 && !zero_enabled(); }
  void build_buckets();
  void start_buckets(bool all);
  Tensor gather_shards(const Tensor& shard);

  dist::Comm& comm_;
  nn::Module& model_;
  optim::AdamW& optimizer_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;  // in reverse registration order: backward's order
  std::unordered_map<const TensorImpl*, std::size_t> bucket_of_;
  std::shared_ptr<const nn::ParameterSlab> bucketed_slab_;
  std::size_t next_bucket_ = 0;  // buckets start in index order, the same on every rank
  int64_t shard_size_ = 0;       // ZeRO-1: slab elements per rank (the last shard is padded)
  Tensor zero_full_;             // ZeRO-1: (world_size * shard_size)
  Tensor zero_shard_;            // ZeRO-1: (shard_size)
};

}  // namespace lmf::train
