// lmforge: the umbrella header. Everything a program needs to build, train, save and sample GPT
// models: tensors and autograd, ops, modules, optimizers, data, checkpoints, the trainer.
#pragma once

#include "lmforge/core/allocator.h"
#include "lmforge/core/compute.h"
#include "lmforge/core/cuda_graph.h"
#include "lmforge/core/device.h"
#include "lmforge/core/dtype.h"
#include "lmforge/core/error.h"
#include "lmforge/core/rng.h"
#include "lmforge/core/tensor.h"

#include "lmforge/autograd.h"
#include "lmforge/ops.h"

#include "lmforge/nn/attention.h"
#include "lmforge/nn/causal_lm.h"
#include "lmforge/nn/embedding.h"
#include "lmforge/nn/gpt.h"
#include "lmforge/nn/kv_cache.h"
#include "lmforge/nn/layer_norm.h"
#include "lmforge/nn/linear.h"
#include "lmforge/nn/llama.h"
#include "lmforge/nn/module.h"
#include "lmforge/nn/rms_norm.h"
#include "lmforge/nn/rotary.h"
#include "lmforge/nn/swiglu_mlp.h"

#include "lmforge/optim/adamw.h"
#include "lmforge/optim/clip.h"
#include "lmforge/optim/muon.h"
#include "lmforge/optim/schedule.h"

#include "lmforge/data/loader.h"
#include "lmforge/data/shard.h"
#include "lmforge/data/tokenizer.h"

#include "lmforge/io/checkpoint.h"
#include "lmforge/io/gguf.h"
#include "lmforge/io/safetensors.h"

#include "lmforge/generate/generate.h"

#include "lmforge/train/checkpointer.h"
#include "lmforge/train/config.h"
#include "lmforge/train/data_parallel.h"
#include "lmforge/train/guards.h"
#include "lmforge/train/run_lock.h"
#include "lmforge/train/run_log.h"
#include "lmforge/train/trainer.h"
