// kiln: the whole public C++ API (the C ABI plus the runtime).
#pragma once

#include "kiln/data.hpp"
#include "kiln/device.hpp"
#include "kiln/error.hpp"
#include "kiln/io.hpp"
#include "kiln/kiln.h"
#include "kiln/safetensors.hpp"
#include "kiln/tokenizer.hpp"
