// Tests of the gradient checker itself: it must accept a correct backward and reject wrong ones,
// otherwise every gradcheck in the op tests would prove nothing.
#include <catch2/catch.hpp>

#include "lmforge/ops.h"
#include "ops/gradcheck.h"

using namespace lmf;
using lmf::test::gradcheck;
using lmf::test::random_tensor;

namespace {

// y = 2x with a backward that returns `factor` * g: correct only for factor == 2.
Tensor doubled_with_backward(const Tensor& x, float factor) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = scale(x, 2.f);
  }
  return record(out, "doubled", {x}, [factor](const Tensor& g) {
    return std::vector<Tensor>{scale(g, factor)};
  });
}

// y = x * x with a backward that forgets the factor 2 on one element only.
Tensor square_with_one_wrong_element(const Tensor& x) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = mul(x, x);
  }
  const Tensor saved = x.detach();
  return record(out, "square", {x}, [saved](const Tensor& g) {
    Tensor dx = mul(g, scale(saved, 2.f));
    dx.data<float>()[3] *= 0.5f;
    return std::vector<Tensor>{dx};
  });
}

}  // namespace

TEST_CASE("gradcheck accepts a correct backward", "[gradcheck]") {
  const Tensor x = random_tensor({3, 4}, 1);
  const auto result = gradcheck([](const std::vector<Tensor>& in) { return doubled_with_backward(in[0], 2.f); }, {x});
  INFO(result.report);
  CHECK(result.ok);
  CHECK(result.checked == 12);
}

TEST_CASE("gradcheck rejects a backward with a wrong factor", "[gradcheck]") {
  const Tensor x = random_tensor({3, 4}, 2);
  const auto result = gradcheck([](const std::vector<Tensor>& in) { return doubled_with_backward(in[0], 2.1f); }, {x});
  CHECK_FALSE(result.ok);
  CHECK_FALSE(result.report.empty());
}

TEST_CASE("gradcheck rejects a backward wrong in a single element", "[gradcheck]") {
  const Tensor x = random_tensor({2, 4}, 3);
  const auto result = gradcheck([](const std::vector<Tensor>& in) { return square_with_one_wrong_element(in[0]); }, {x});
  CHECK_FALSE(result.ok);
  CHECK(result.report.find("element 3") != std::string::npos);
}

TEST_CASE("gradcheck skips inputs that do not require grad", "[gradcheck]") {
  const Tensor a = random_tensor({2, 3}, 4);
  const Tensor b = random_tensor({2, 3}, 5, /*requires_grad=*/false);
  const auto result = gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, b});
  CHECK(result.ok);
  CHECK(result.checked == 6);
}
