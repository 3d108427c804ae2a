// The one Catch2 main shared by every test executable (compiled once to keep builds fast).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
