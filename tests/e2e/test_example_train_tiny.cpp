// The example program trains: its printed loss falls well below the loss of a uniform guess.
#include <catch2/catch.hpp>

#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "e2e/cli_run.h"

TEST_CASE("examples/train_tiny lowers the loss on its synthetic data") {
  const lmf::test::RunResult r = lmf::test::run_merged(std::string(LMF_BINARY_DIR) + "/bin/train_tiny \"\" 120");
  const std::string& output = r.out;
  REQUIRE(r.exit_code == 0);
  std::vector<double> losses;
  const std::regex loss_re(R"(loss ([0-9.]+))");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), loss_re); it != std::sregex_iterator(); ++it)
    losses.push_back(std::stod((*it)[1]));
  INFO(output);
  REQUIRE(losses.size() >= 3);
  CHECK(losses.front() == Approx(std::log(64.0)).epsilon(0.1));  // random init: about ln(V)
  CHECK(losses.back() < 0.5 * losses.front());
}
