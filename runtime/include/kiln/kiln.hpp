// kiln: the whole public C++ API (the C ABI plus the runtime).
#pragma once

#include "kiln/device.hpp"
#include "kiln/error.hpp"
#include "kiln/kiln.h"
