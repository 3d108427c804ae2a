// train_tiny: a complete GPT training loop written only against lmforge's public API, the file to
// copy when starting one's own research code. It builds a small GPT-2, reads (B, T) batches from a
// token shard, runs AdamW with gradient clipping and a warmup+cosine schedule, and prints the loss.
//
//   train_tiny [SHARD.bin] [STEPS]
//
// With no shard it trains on a synthetic repeating sequence (written to a temporary shard), which a
// GPT learns quickly, so the falling loss is visible in seconds.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <lmforge/lmforge.h>

int main(int argc, char** argv) {
  try {
    std::string shard = argc > 1 ? argv[1] : "";
    const int64_t steps = argc > 2 ? std::stoll(argv[2]) : 200;
    int64_t vocab_size = 64;
    if (shard.empty()) {
      // A repeating pattern of 64 symbols: predictable from context, so the loss must fall.
      std::vector<int32_t> ids(20000);
      for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7 + i / 64) % 64);
      shard = (std::filesystem::temp_directory_path() / "lmforge_train_tiny.bin").string();
      lmf::data::write_shard(shard, ids, lmf::data::TokenWidth::u16);
    } else {
      // The vocabulary must cover every id in the shard.
      const std::vector<int32_t> ids = lmf::data::Shard(shard).read_all();
      vocab_size = 1 + *std::max_element(ids.begin(), ids.end());
    }

    // The model: GPT-2 architecture, tiny.
    lmf::nn::GPTConfig config;
    config.n_layer = 2;
    config.n_head = 4;
    config.n_embd = 64;
    config.block_size = 32;
    config.vocab_size = vocab_size;
    lmf::nn::GPT model(config, /*seed=*/42);
    std::printf("GPT with %lld parameters\n", static_cast<long long>(model.num_parameters()));

    // Batches of (B, T) windows in a seeded random order.
    lmf::data::LoaderOptions options;
    options.batch_size = 8;
    options.block_size = config.block_size;
    options.seed = 42;
    options.vocab_size = vocab_size;
    lmf::data::DataLoader loader(shard, options);

    // AdamW over the parameter slab; warmup then cosine decay.
    lmf::optim::AdamWConfig adamw;
    adamw.lr = 3e-3f;
    adamw.beta2 = 0.99f;
    adamw.weight_decay = 0.1f;
    lmf::optim::AdamW optimizer(model, adamw);
    lmf::optim::LrSchedule schedule;
    schedule.kind = lmf::optim::ScheduleKind::cosine;
    schedule.lr = adamw.lr;
    schedule.min_lr = adamw.lr / 10;
    schedule.warmup_iters = steps / 10;
    schedule.decay_iters = steps;

    for (int64_t step = 0; step < steps; ++step) {
      const lmf::data::Batch batch = loader.next();             // inputs, targets: (B, T) i32
      model.zero_grad();
      lmf::Tensor loss = model.forward(batch.inputs, batch.targets).loss;  // scalar
      loss.backward();
      const double norm = lmf::optim::clip_grad_norm(*model.slab(), 1.0);
      optimizer.set_lr(static_cast<float>(schedule.lr_at(step)));
      optimizer.step();
      if (step % 20 == 0 || step == steps - 1)
        std::printf("step %4lld | loss %.4f | grad norm %.3f | lr %.2e\n", static_cast<long long>(step),
                    loss.item(), norm, optimizer.lr());
    }
    return 0;
  } catch (const lmf::Error& e) {
    std::fprintf(stderr, "train_tiny: error: %s\n", e.what());
    return 1;
  }
}
