// Catch2's main for the CPU tests (in its own file: it is slow to compile).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
