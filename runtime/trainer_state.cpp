#include "runtime/trainer_state.hpp"

#include "errors/check.hpp"

namespace kiln::impl {

TrainerState::TrainerState(const ModelConfig& model, const TrainConfig& train_config,
                           std::shared_ptr<Backend> backend_ptr, Communicator* communicator)
    : layout(model.resolved()),
      train(train_config),
      backend(std::move(backend_ptr)),
      comm(communicator ? communicator : &single_rank),
      shards(layout.total(), comm->world_size(), train_config.zero1),
      rank(comm->rank()) {
  KILN_CHECK_ARG(backend != nullptr, "trainer: no backend");
  train.validate(layout.config());
  KILN_CHECK_ARG(!train.cuda_graph || backend->supports_capture(),
                 "trainer: cuda_graph needs a backend with CUDA graphs (the cuda backend); ",
                 backend->description(), " has none");
  backend->set_deterministic(train.deterministic);
  types = backend->types();
  const std::size_t workspace =
      backend->workspace_bytes(layout.config(), train.batch, train.seq_len);
  r = build_training_plan(plan, layout.config(), train, types, workspace,
                          backend->optimizer_workspace_bytes(layout.config()), comm->world_size());
  arena = backend->allocate(plan.total_bytes());
  // A fresh arena holds garbage; zero it once so that the alignment gaps of the parameter,
  // gradient and moment buffers are zero and stay zero.
  backend->fill_zero(arena, plan.total_bytes());
  const std::size_t n = static_cast<std::size_t>(train.batch * train.seq_len);
  host_inputs.resize(n);
  host_targets.resize(n);
}

TrainerState::~TrainerState() {
  if (graph >= 0) backend->release_graph(graph);
  if (arena) {
    try {
      backend->synchronize();
    } catch (...) {
      // A failed stream is reported by the call that failed; the memory is released regardless.
    }
    backend->deallocate(arena);
  }
}

void TrainerState::bind_workspace() {
  if (r.workspace != kNoRegion) {
    backend->set_workspace(at(r.workspace), plan[r.workspace].bytes);
  } else {
    backend->set_workspace(nullptr, 0);
  }
}

void TrainerState::run_graph(double dloss) {
  if (graph >= 0 && graph_dloss != dloss) {
    backend->release_graph(graph);
    graph = -1;
  }
  if (graph < 0 && !graph_warmed) {
    // The first run of each op may do one-time host work (library plans, caches) that must not
    // happen inside a capture: run the micro-step eagerly once, capture the next one.
    micro_step(dloss, false);
    graph_warmed = true;
    return;
  }
  if (graph < 0) {
    backend->begin_capture();
    try {
      micro_step(dloss, false);
    } catch (...) {
      try {
        backend->release_graph(backend->end_capture());
      } catch (...) {
      }
      throw;
    }
    graph = backend->end_capture();
    graph_dloss = dloss;
  }
  backend->replay(graph);
}

}  // namespace kiln::impl
