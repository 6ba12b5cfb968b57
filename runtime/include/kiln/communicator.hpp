// kiln::Communicator: the training schedule's only way to talk to other ranks (data
// parallelism). The schedule hands each gradient bucket (ParamLayout::buckets(): a contiguous
// range of the flat gradient buffer) to the communicator as soon as the last micro-step's backward
// has made it final, so a communicator can overlap the reduction with the rest of the backward.
// The single-rank communicator does nothing; NCCL and in-process communicators implement the same
// interface.
#pragma once

#include <cstdint>

#include "kiln/backend.hpp"
#include "kiln/export.h"
#include "kiln/model.hpp"

namespace kiln {

class KILN_API Communicator {
 public:
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Replaces `count` elements of `dtype` at `data` (memory of `backend`) with their average over
  // the ranks. On the cuda backend the reduction is ordered on backend.native_stream(): work the
  // schedule issues afterwards sees the result. Called in the same order on every rank.
  virtual void all_reduce_mean(void* data, int64_t count, DType dtype, Backend& backend) = 0;

  // Called once per optimizer step after the last bucket was handed over and before anything
  // reads the gradients (the global norm): a communicator that reduces in the background must
  // have finished (or ordered its completion on the stream) when this returns.
  virtual void finish_step(Backend& backend);
};

// One rank: averaging over one rank is the identity, so nothing is done.
class KILN_API SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_mean(void*, int64_t, DType, Backend&) override {}
};

}  // namespace kiln
