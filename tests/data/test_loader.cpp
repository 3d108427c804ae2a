// DataLoader: shards whose token at position p is p (mod a prime) make every window identify
// itself, so the tests check the orders, rank splits, wrapping and resume by the values read.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "e2e/cli_run.h"
#include "lmforge/core/error.h"
#include "lmforge/data/loader.h"

using namespace lmf::data;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return lmf::test::work_dir("loader", name); }

// A shard holding first, first+1, ..., first+n-1.
std::string counting_shard(const fs::path& path, int32_t first, int32_t n) {
  std::vector<int32_t> ids(static_cast<std::size_t>(n));
  for (int32_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = first + i;
  write_shard(path.string(), ids, TokenWidth::u32);
  return path.string();
}

std::vector<int32_t> values(const lmf::Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// First token of every row of a batch.
std::vector<int32_t> row_starts(const Batch& batch, int64_t T) {
  auto v = values(batch.inputs);
  std::vector<int32_t> out;
  for (std::size_t i = 0; i < v.size(); i += static_cast<std::size_t>(T)) out.push_back(v[i]);
  return out;
}

}  // namespace

TEST_CASE("sequential order reads B*T+1 consecutive tokens and wraps like llm.c", "[loader]") {
  fs::path dir = temp_dir("loader_seq");
  std::string path = counting_shard(dir / "a.bin", 0, 20);
  LoaderOptions o;
  o.batch_size = 2;
  o.block_size = 4;
  o.order = LoaderOrder::sequential;
  DataLoader loader(path, o);
  Batch b = loader.next();
  CHECK(b.inputs.shape() == lmf::Shape{2, 4});
  CHECK(b.inputs.dtype() == lmf::DType::i32);
  CHECK(values(b.inputs) == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(values(b.targets) == std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(values(loader.next().inputs)[0] == 8);
  // 16 + 8 + 1 > 20 tokens: back to the start, next epoch.
  CHECK(loader.position() == LoaderPosition{1, 0, 0});
  CHECK(values(loader.next().inputs)[0] == 0);
  CHECK(loader.batches_per_epoch() == 2);
}

TEST_CASE("sequential order splits each step across ranks and walks shards", "[loader]") {
  fs::path dir = temp_dir("loader_seq_ranks");
  counting_shard(dir / "s_000.bin", 0, 40);
  counting_shard(dir / "s_001.bin", 1000, 20);
  LoaderOptions o;
  o.batch_size = 1;
  o.block_size = 4;
  o.order = LoaderOrder::sequential;
  o.world_size = 2;
  std::vector<int32_t> seen[2];
  for (int rank = 0; rank < 2; ++rank) {
    o.rank = rank;
    DataLoader loader((dir / "s_*.bin").string(), o);
    for (int step = 0; step < 6; ++step) seen[rank].push_back(values(loader.next().inputs)[0]);
  }
  // Shard 0 (40 tokens): steps at 0, 8, 16, 24 (32 + 9 > 40); shard 1 (20 tokens): 0, 8.
  CHECK(seen[0] == std::vector<int32_t>{0, 8, 16, 24, 1000, 1008});
  CHECK(seen[1] == std::vector<int32_t>{4, 12, 20, 28, 1004, 1012});
}

TEST_CASE("random order visits every window once per epoch, deterministically", "[loader]") {
  fs::path dir = temp_dir("loader_random");
  counting_shard(dir / "r_000.bin", 0, 8 * 37 + 1);      // 37 windows of T=8
  counting_shard(dir / "r_001.bin", 10000, 8 * 26 + 5);  // 26 windows
  LoaderOptions o;
  o.batch_size = 3;
  o.block_size = 8;
  o.seed = 1234;
  auto epoch_order = [&](uint64_t seed, int epochs) {
    o.seed = seed;
    DataLoader loader((dir / "r_*.bin").string(), o);
    REQUIRE(loader.steps_per_epoch() == 63);
    std::vector<int32_t> order;
    while (static_cast<int64_t>(order.size()) < 63 * epochs) {
      Batch b = loader.next();
      auto in = values(b.inputs);
      auto tg = values(b.targets);
      for (std::size_t i = 0; i < in.size(); ++i) REQUIRE(tg[i] == in[i] + 1);
      for (int32_t s : row_starts(b, 8)) order.push_back(s);
    }
    order.resize(static_cast<std::size_t>(63 * epochs));
    return order;
  };
  auto order = epoch_order(1234, 2);
  std::vector<int32_t> expected;
  for (int w = 0; w < 37; ++w) expected.push_back(w * 8);
  for (int w = 0; w < 26; ++w) expected.push_back(10000 + w * 8);
  std::sort(expected.begin(), expected.end());
  std::vector<int32_t> first(order.begin(), order.begin() + 63);
  std::vector<int32_t> second(order.begin() + 63, order.end());
  CHECK(first != second);  // a new permutation each epoch
  std::sort(first.begin(), first.end());
  std::sort(second.begin(), second.end());
  CHECK(first == expected);
  CHECK(second == expected);
  CHECK(epoch_order(1234, 1) == std::vector<int32_t>(order.begin(), order.begin() + 63));
  CHECK(epoch_order(99, 1) != std::vector<int32_t>(order.begin(), order.begin() + 63));
}

TEST_CASE("random order gives ranks disjoint windows that cover the epoch", "[loader]") {
  fs::path dir = temp_dir("loader_random_ranks");
  std::string path = counting_shard(dir / "a.bin", 0, 4 * 64 + 1);  // 64 windows of T=4
  LoaderOptions o;
  o.batch_size = 4;
  o.block_size = 4;
  o.world_size = 4;
  o.seed = 5;
  std::set<int32_t> all;
  std::size_t total = 0;
  for (int rank = 0; rank < 4; ++rank) {
    o.rank = rank;
    DataLoader loader(path, o);
    REQUIRE(loader.batches_per_epoch() == 4);
    for (int step = 0; step < 4; ++step) {
      for (int32_t s : row_starts(loader.next(), 4)) {
        all.insert(s);
        ++total;
      }
    }
  }
  CHECK(total == 64);
  CHECK(all.size() == 64);
}

TEST_CASE("a restored position continues with exactly the same batches", "[loader]") {
  fs::path dir = temp_dir("loader_resume");
  std::string path = counting_shard(dir / "a.bin", 0, 501);
  for (LoaderOrder order : {LoaderOrder::random, LoaderOrder::sequential}) {
    LoaderOptions o;
    o.batch_size = 3;
    o.block_size = 5;
    o.order = order;
    o.seed = 42;
    DataLoader a(path, o);
    for (int i = 0; i < 45; ++i) a.next();  // crosses an epoch boundary in both orders
    LoaderPosition saved = a.position();
    CHECK(saved.epoch >= 1);
    std::vector<std::vector<int32_t>> expected;
    for (int i = 0; i < 10; ++i) expected.push_back(values(a.next().inputs));
    DataLoader b(path, o);
    b.set_position(saved);
    for (int i = 0; i < 10; ++i)
      CHECK(values(b.next().inputs) == expected[static_cast<std::size_t>(i)]);
    CHECK(b.position() == a.position());
    CHECK_THROWS_AS(b.set_position(LoaderPosition{0, 5, 0}), lmf::Error);
  }
}

TEST_CASE("an id outside the vocabulary is an error naming the file and offset", "[loader]") {
  fs::path dir = temp_dir("loader_vocab");
  std::string path = counting_shard(dir / "a.bin", 0, 100);
  LoaderOptions o;
  o.batch_size = 1;
  o.block_size = 99;
  o.order = LoaderOrder::sequential;
  o.vocab_size = 60;
  DataLoader loader(path, o);
  try {
    loader.next();
    FAIL("expected an error");
  } catch (const lmf::Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("a.bin") != std::string::npos);
    CHECK(msg.find("token 60 at token offset 60") != std::string::npos);
  }
}

TEST_CASE("loader options and too-small datasets are rejected clearly", "[loader]") {
  fs::path dir = temp_dir("loader_small");
  std::string path = counting_shard(dir / "a.bin", 0, 10);
  LoaderOptions o;
  o.block_size = 16;
  CHECK_THROWS_WITH(DataLoader(path, o), Catch::Contains("block_size+1"));
  o.order = LoaderOrder::sequential;
  CHECK_THROWS_WITH(DataLoader(path, o), Catch::Contains("world_size*B*T+1"));
  o.block_size = 2;
  o.rank = 2;
  o.world_size = 2;
  CHECK_THROWS_AS(DataLoader(path, o), lmf::Error);
  CHECK(parse_loader_order("sequential") == LoaderOrder::sequential);
  CHECK_THROWS_AS(parse_loader_order("shuffled"), lmf::Error);
}
