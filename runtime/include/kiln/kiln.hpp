// kiln: the whole public C++ API (the C ABI plus the runtime).
#pragma once

#include "kiln/backend.hpp"
#include "kiln/communicator.hpp"
#include "kiln/data.hpp"
#include "kiln/device.hpp"
#include "kiln/error.hpp"
#include "kiln/generate.hpp"
#include "kiln/hf_gpt2.hpp"
#include "kiln/io.hpp"
#include "kiln/kiln.h"
#include "kiln/limits.hpp"
#include "kiln/model.hpp"
#include "kiln/plan.hpp"
#include "kiln/safetensors.hpp"
#include "kiln/tokenizer.hpp"
#include "kiln/train_config.hpp"
#include "kiln/trainer.hpp"
