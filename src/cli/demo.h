// src/cli/demo.h — the two halves of `kascade demo`: the model demo (demo_cmd.cpp) and the
// synthetic layer stack that needs no model (demo_synthetic.cpp, `kascade demo --synthetic`).
#pragma once

#include "command.h"

namespace kascade::cli {

// Runs the synthetic demo; `args` are the options after --synthetic.
int run_synthetic_demo(const Args& args);

}  // namespace kascade::cli
