// Data parallelism in the training step: gradient buckets handed to the communicator as the
// backward finishes them, the loss and the count of positions over the ranks, the sharded
// (ZeRO-1) optimizer update with its all-gather, and the whole master weights of a sharded state.
//
// Every rank runs the same schedule on its own micro-batches. Each rank's loss gradient is scaled
// by world_size / (positions that count over every rank), so the mean over the ranks of the
// gradients is the gradient of the mean loss of the global batch, whatever each rank's count.
#include <cmath>
#include <limits>

#include "errors/check.hpp"
#include "runtime/trainer_state.hpp"

namespace kiln::impl {

void TrainerState::reduce_bucket(const ParamLayout::Bucket& bucket) {
  // The backward finishes buckets in decreasing address order, each adjacent to the previous
  // one: merging keeps the pending range contiguous.
  if (pending_begin == pending_end) {
    pending_begin = bucket.begin;
    pending_end = bucket.end;
  } else {
    KILN_CHECK(bucket.end == pending_begin, Status::internal_error, "trainer: bucket '",
               bucket.name, "' is not adjacent to the pending reduction");
    pending_begin = bucket.begin;
  }
  const int64_t bytes =
      (pending_end - pending_begin) * static_cast<int64_t>(dtype_size(types.grad));
  // The embeddings' bucket (at offset 0) is the last one the backward finishes.
  if (bytes >= train.bucket_bytes || pending_begin == 0) launch_pending();
}

void TrainerState::launch_pending() {
  if (pending_begin == pending_end) return;
  void* stream = backend->native_stream();
  void* grads = at(r.grads);
  if (!shards.sharded) {
    comm->start_all_reduce(
        static_cast<char*>(grads) + pending_begin * static_cast<int64_t>(dtype_size(types.grad)),
        pending_end - pending_begin, types.grad, ReduceOp::mean, stream);
  } else {
    // Each owner receives the part of the bucket inside its shard.
    std::vector<int64_t> bounds(static_cast<std::size_t>(shards.world_size) + 1);
    for (int q = 0; q <= shards.world_size; ++q) {
      bounds[static_cast<std::size_t>(q)] = std::clamp(
          q == shards.world_size ? shards.total : shards.begin(q), pending_begin, pending_end);
    }
    comm->start_reduce_scatter(grads, bounds, types.grad, ReduceOp::mean, stream);
  }
  pending_begin = pending_end = 0;
}

void TrainerState::finish_gradients() {
  if (comm->world_size() == 1) return;
  launch_pending();
  void* stream = backend->native_stream();
  // Every rank must agree on skipping a step: the loss is the mean over the ranks.
  comm->all_reduce(static_cast<double*>(at(r.stats)) + kStatLoss, 1, DType::f64, ReduceOp::mean,
                   stream);
  comm->wait_started(stream);
}

int64_t TrainerState::global_count(int64_t local, std::exception_ptr error) {
  if (comm->world_size() == 1) {
    if (error) std::rethrow_exception(error);
    return local;
  }
  // A rejected batch contributes NaN, which every rank's sum then carries.
  const double sum = comm->all_reduce_value(
      error ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(local), ReduceOp::sum);
  if (error) std::rethrow_exception(error);
  if (std::isnan(sum)) {
    throw RemoteError(Status::data_error,
                      "trainer: another rank rejected its batch of this step (see that rank's "
                      "error)");
  }
  return static_cast<int64_t>(sum);
}

void TrainerState::update(OptimizerUpdate& u) {
  const int64_t b = shards.begin(rank);
  u.layout = &layout;
  u.compute = at(r.params);
  u.grads = at(r.grads);
  u.shard_begin = b;
  u.shard_end = shards.end(rank);
  // A separate master region holds the shard only; the master weights the ops read directly (cpu)
  // are whole, so the shard's state starts at element b of them.
  u.master =
      types.separate_master || !shards.sharded
          ? at(r.master)
          : static_cast<char*>(at(r.master)) + b * static_cast<int64_t>(dtype_size(types.master));
  u.m = at(r.adam_m);
  u.v = at(r.adam_v);
  u.stats = static_cast<double*>(at(r.stats));
  Backend& be = *backend;
  void* stream = be.native_stream();
  if (shards.sharded) {
    be.grad_sum_squares(u);
    comm->all_reduce(u.stats + kStatGradNorm, 1, DType::f64, ReduceOp::sum, stream);
    u.norm_from_sum_squares = true;
  }
  be.optimizer_update(u);
  if (shards.sharded) comm->all_gather(at(r.params), shards.size, types.compute, stream);
}

const void* TrainerState::whole_master() {
  if (!shards.sharded || !types.separate_master) return at(r.master);
  KILN_CHECK(types.grad == types.master, Status::not_supported, "trainer: gathering ",
             dtype_name(types.master), " master weights through the ", dtype_name(types.grad),
             " gradient buffer");
  const std::size_t e = dtype_size(types.master);
  // Whole shards: the master region is `size` long, its padding zero.
  backend->convert(
      static_cast<char*>(at(r.grads)) + static_cast<std::size_t>(rank * shards.size) * e,
      types.master, at(r.master), types.master, shards.size);
  comm->all_gather(at(r.grads), shards.size, types.master, backend->native_stream());
  return at(r.grads);
}

namespace {

void upload(Backend& be, void* dst, DType dtype, const float* src, int64_t n) {
  be.upload_f32(dst, dtype, src, n);
}
void upload(Backend& be, void* dst, DType dtype, const double* src, int64_t n) {
  be.upload_f64(dst, dtype, src, n);
}

}  // namespace

template <typename H>
void TrainerState::set_master(const H* values) {
  Backend& be = *backend;
  const int64_t total = layout.total();
  if (!shards.sharded || !types.separate_master) {
    upload(be, at(r.master), types.master, values, total);
    if (types.separate_master) {
      be.convert(at(r.params), types.compute, at(r.master), types.master, total);
    }
    return;
  }
  // This rank's shard of the master weights, and the whole compute copy.
  const int64_t b = shards.begin(rank), e = shards.end(rank);
  upload(be, at(r.master), types.master, values + b, e - b);
  upload(be, at(r.params), types.compute, values, total);
  be.synchronize();
}

template void TrainerState::set_master<float>(const float*);
template void TrainerState::set_master<double>(const double*);

}  // namespace kiln::impl
