// Builds a tiny expression with the installed lmforge and checks its gradient, proving that the
// package's headers, library and CMake target work from outside the source tree.
#include <cstdio>

#include <lmforge/lmforge.h>

int main() {
  lmf::Tensor x = lmf::Tensor::from_vector(std::vector<float>{1.f, 2.f, 3.f}, {3}).set_requires_grad(true);
  lmf::Tensor loss = lmf::sum(lmf::mul(x, x));  // d/dx = 2x
  loss.backward();
  const auto g = x.grad().to_vector();
  const bool ok = g[0] == 2.f && g[1] == 4.f && g[2] == 6.f;
  std::printf("lmforge consumer: loss %.1f, gradient %s\n", loss.item(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
