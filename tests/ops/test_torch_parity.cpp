// Compares lmforge's CPU ops with PyTorch: the fixtures in tests/reference/fixtures/ops_*.json
// (written by tests/reference/make_op_fixtures.py in float64) hold inputs, outputs and the
// gradients of sum(out * W). Tolerances and their reasoning are in tests/reference/README.md.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using namespace lmf::test;
using nlohmann::json;

namespace {

// |actual - expected| <= atol + rtol * |expected| per element; see tests/reference/README.md.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-6;

json load_fixture(const std::string& op) {
  const std::string path = std::string(LMF_SOURCE_DIR) + "/tests/reference/fixtures/ops_" + op + ".json";
  std::ifstream in(path);
  REQUIRE(in.good());
  return json::parse(in);
}

Shape shape_of(const json& t) { return t.at("shape").get<Shape>(); }

std::vector<double> values_of(const json& t) { return t.at("data").get<std::vector<double>>(); }

// Float inputs become f32 leaves requiring grad; integer inputs (ids, targets) become i32.
std::map<std::string, Tensor> make_inputs(const json& c) {
  std::map<std::string, Tensor> inputs;
  for (const auto& [name, t] : c.at("inputs").items()) {
    const bool integral = name == "ids" || name == "targets" || name == "index";
    if (integral) {
      inputs[name] = Tensor::from_vector(t.at("data").get<std::vector<int32_t>>(), shape_of(t));
    } else {
      const auto d = values_of(t);
      inputs[name] = Tensor::from_vector(std::vector<float>(d.begin(), d.end()), shape_of(t));
      inputs[name].set_requires_grad(true);
    }
  }
  return inputs;
}

Tensor run_op(const std::string& op, const json& params, std::map<std::string, Tensor>& in) {
  if (op == "layer_norm") return layer_norm(in["x"], in["w"], in.count("b") ? in["b"] : Tensor(), params.at("eps").get<float>());
  if (op == "gelu") return gelu(in["x"]);
  if (op == "softmax") return softmax(in["x"]);
  if (op == "attention" || op == "attention_gqa") return attention(in["q"], in["k"], in["v"]);
  if (op == "cross_entropy") return cross_entropy(in["logits"], in["targets"], params.at("ignore_index").get<int32_t>());
  if (op == "linear") return linear(in["x"], in["w"], in.count("b") ? in["b"] : Tensor());
  if (op == "embedding") return embedding(in["weight"], in["ids"]);
  if (op == "matmul") return matmul(in["a"], in["b"], params.at("trans_a").get<bool>(), params.at("trans_b").get<bool>());
  // Primitive ops.
  if (op == "add") return add(in["a"], in["b"]);
  if (op == "sub") return sub(in["a"], in["b"]);
  if (op == "mul") return mul(in["a"], in["b"]);
  if (op == "div") return div(in["a"], in["b"]);
  if (op == "neg") return neg(in["x"]);
  if (op == "exp") return lmf::exp(in["x"]);
  if (op == "log") return lmf::log(in["x"]);
  if (op == "sqrt") return lmf::sqrt(in["x"]);
  if (op == "rsqrt") return rsqrt(in["x"]);
  if (op == "tanh") return lmf::tanh(in["x"]);
  if (op == "sigmoid") return sigmoid(in["x"]);
  if (op == "silu") return silu(in["x"]);
  if (op == "relu") return relu(in["x"]);
  if (op == "pow") return lmf::pow(in["x"], params.at("exponent").get<float>());
  if (op == "sum_dim") return sum(in["x"], params.at("dim").get<int>(), params.at("keepdim").get<bool>());
  if (op == "mean_dim") return mean(in["x"], params.at("dim").get<int>(), params.at("keepdim").get<bool>());
  if (op == "max") return lmf::max(in["x"], params.at("dim").get<int>(), params.at("keepdim").get<bool>());
  if (op == "cat") {
    std::vector<Tensor> xs;
    for (int i = 0; in.count("x" + std::to_string(i)); ++i) xs.push_back(in["x" + std::to_string(i)]);
    return cat(xs, params.at("dim").get<int>());
  }
  if (op == "split" || op == "chunk") {  // the pieces joined back, piece i scaled by i + 1
    const int dim = params.at("dim").get<int>();
    const std::vector<Tensor> parts = op == "split"
        ? split(in["x"], params.at("sizes").get<std::vector<int64_t>>(), dim)
        : chunk(in["x"], params.at("chunks").get<int64_t>(), dim);
    std::vector<Tensor> scaled;
    for (std::size_t i = 0; i < parts.size(); ++i) scaled.push_back(scale(parts[i], float(i + 1)));
    return cat(scaled, dim);
  }
  if (op == "where") return where(in["cond"], in["a"], in["b"]);
  if (op == "gather") return gather(in["x"], in["index"]);
  if (op == "expand") return scale(expand(in["x"], params.at("shape").get<Shape>()), 1.f);
  if (op == "rms_norm") return rms_norm(in["x"], in["w"], params.at("eps").get<float>());
  if (op == "rotary_embedding") {
    const Tensor x = params.at("time_first").get<bool>() ? transpose(in["x"], 1, 2) : in["x"];
    return rotary_embedding(x, in["cos"], in["sin"], params.at("offset").get<int64_t>());
  }
  if (op == "swiglu") return swiglu(in["gate"], in["up"]);
  FAIL("no runner for op " << op);
  return Tensor();
}

void check_op(const std::string& op) {
  const json fixture = load_fixture(op);
  for (const json& c : fixture.at("cases")) {
    INFO(op << " case " << c.at("name").get<std::string>());
    auto inputs = make_inputs(c);
    const Tensor out = run_op(op, c.at("params"), inputs);
    REQUIRE(out.shape() == shape_of(c.at("output")));
    CHECK(close_ratio(out.to_vector(), values_of(c.at("output")), kRtol, kAtol) <= 1);
    const auto w = values_of(c.at("loss_weights"));
    out.backward(Tensor::from_vector(std::vector<float>(w.begin(), w.end()), out.shape()));
    for (const auto& [name, g] : c.at("grads").items()) {
      INFO("gradient of " << name);
      REQUIRE(inputs[name].grad().defined());
      CHECK(close_ratio(inputs[name].grad().to_vector(), values_of(g), kRtol, kAtol) <= 1);
    }
  }
}

}  // namespace

TEST_CASE("layer_norm matches PyTorch", "[parity]") { check_op("layer_norm"); }
TEST_CASE("gelu matches PyTorch's tanh GELU", "[parity]") { check_op("gelu"); }
TEST_CASE("softmax matches PyTorch", "[parity]") { check_op("softmax"); }
TEST_CASE("attention matches PyTorch's causal masked softmax attention", "[parity]") { check_op("attention"); }
TEST_CASE("attention matches PyTorch with grouped-query heads, queries behind a cache and odd head sizes",
          "[parity]") {
  check_op("attention_gqa");
}
TEST_CASE("cross_entropy matches PyTorch, ignore_index included", "[parity]") { check_op("cross_entropy"); }
TEST_CASE("linear matches PyTorch", "[parity]") { check_op("linear"); }
TEST_CASE("embedding matches PyTorch", "[parity]") { check_op("embedding"); }
TEST_CASE("matmul matches PyTorch", "[parity]") { check_op("matmul"); }

// --- primitive ops ---------------------------------------------------------------------------------
TEST_CASE("add, sub, mul and div match PyTorch for every broadcast form", "[parity][primitives]") {
  for (const char* op : {"add", "sub", "mul", "div"}) check_op(op);
}
TEST_CASE("unary ops match PyTorch", "[parity][primitives]") {
  for (const char* op : {"neg", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "silu", "relu", "pow"}) check_op(op);
}
TEST_CASE("sum, mean and max over a dim match PyTorch", "[parity][primitives]") {
  for (const char* op : {"sum_dim", "mean_dim", "max"}) check_op(op);
}
TEST_CASE("cat, split, chunk, where, gather and expand match PyTorch", "[parity][primitives]") {
  for (const char* op : {"cat", "split", "chunk", "where", "gather", "expand"}) check_op(op);
}
TEST_CASE("rms_norm matches Hugging Face's LlamaRMSNorm", "[parity]") { check_op("rms_norm"); }
TEST_CASE("rotary_embedding matches Hugging Face's apply_rotary_pos_emb, either layout, at an offset", "[parity]") {
  check_op("rotary_embedding");
}
TEST_CASE("swiglu matches silu(gate) * up", "[parity]") { check_op("swiglu"); }
