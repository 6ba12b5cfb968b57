// Training checkpoints: the master weights, the AdamW moments, the step, the configs and the
// data loader's position, written atomically and checked on load.
//
// File format, version 1 (integers little-endian):
//   offset 0      FileHeader (64 bytes): magic "KILNCKPT", version, section count, the offsets and
//                 CRC-32C of the section table and of the JSON metadata, the file's total size
//   offset 64     the section table: one 64-byte SectionEntry per section (name, kind, CRC-32C of
//                 the payload, offset, bytes)
//   then          the JSON metadata (configs, step, kiln version)
//   then          the payloads, each at a multiple of 64 bytes
// The payload checksums are computed while the payloads stream out and patched into the table
// before the file is committed; a reader checks the header, the table, the metadata and every
// payload before it changes anything.
//
// Three kinds of file share that format:
//   whole    the checkpoint of a state every rank holds entirely (one rank, or plain data
//            parallelism; rank 0 writes it): sections "master", "adam_m", "adam_v" (f32,
//            ParamLayout::total() values each) and "data_state" (bytes).
//   index    the checkpoint of a sharded state (ZeRO-1), at the path the caller named: the
//            metadata lists the shard files ("shards": file, rank, begin, end) and the only
//            section is "data_state".
//   shard    one rank's part, "<path>.step<S>.rank<R>-of-<W>" beside the index: sections
//            "master", "adam_m", "adam_v" holding elements [begin, end) of the flat buffer.
// A state is read back at any world size, sharded or not: each rank reads the elements it keeps
// (its shard, or everything), from the whole file or from the shard files that hold them. Shard
// files carry their step in their name, so a new save never overwrites the files an older index
// names; the older files are removed once the new index is in place.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "errors/check.hpp"
#include "kiln/io.hpp"
#include "kiln/trainer.hpp"
#include "kiln/version.h"
#include "runtime/json_strict.hpp"
#include "runtime/model_json.hpp"
#include "runtime/trainer_state.hpp"

static_assert(std::endian::native == std::endian::little,
              "kiln's checkpoint format is little-endian; a big-endian host needs byte swaps");

namespace kiln {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kKindF32 = 1;
constexpr uint32_t kKindBytes = 2;
constexpr const char* kShardFormat = "kiln checkpoint shard";

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t section_count;
  uint64_t table_offset;
  uint64_t json_offset;
  uint64_t json_bytes;
  uint32_t json_crc;
  uint32_t table_crc;
  uint64_t file_bytes;
  uint8_t reserved[8];
};
static_assert(sizeof(FileHeader) == 64);

struct SectionEntry {
  char name[40];
  uint32_t kind;
  uint32_t crc;
  uint64_t offset;
  uint64_t bytes;
};
static_assert(sizeof(SectionEntry) == 64);

uint64_t align64(uint64_t x) {
  return (x + 63) / 64 * 64;
}

[[noreturn]] void corrupt(const fs::path& path, const std::string& what) {
  impl::throw_error(Status::data_error, "checkpoint '" + path.string() + "': " + what, nullptr,
                    nullptr, 0);
}

struct Section {
  std::string name;
  uint32_t kind;
  const std::byte* data;
  uint64_t bytes;
};

// A file of the format, checked: header, table, metadata and every payload's checksum.
struct CheckedFile {
  MappedFile file;
  nlohmann::json meta;
  std::vector<Section> sections;

  const fs::path& path() const { return file.path(); }
  bool has(const std::string& name) const {
    for (const Section& s : sections) {
      if (s.name == name) return true;
    }
    return false;
  }
  const Section& section(const std::string& name) const {
    for (const Section& s : sections) {
      if (s.name == name) return s;
    }
    corrupt(path(), "has no section '" + name + "'");
  }
  // A f32 section of exactly `count` values.
  const float* f32(const std::string& name, int64_t count) const {
    const Section& s = section(name);
    if (s.kind != kKindF32) corrupt(path(), "section '" + name + "' is not f32");
    if (s.bytes != static_cast<uint64_t>(count) * 4) {
      corrupt(path(), "section '" + name + "' holds " + std::to_string(s.bytes / 4) +
                          " values where " + std::to_string(count) + " are expected");
    }
    return reinterpret_cast<const float*>(s.data);
  }
};

CheckedFile open_checked(const fs::path& path) {
  CheckedFile c{MappedFile(path), {}, {}};
  const std::span<const std::byte> bytes = c.file.bytes();
  if (bytes.size() < sizeof(FileHeader)) {
    corrupt(path, "is " + std::to_string(bytes.size()) +
                      " bytes long, too short for a checkpoint header (truncated?)");
  }
  FileHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
    corrupt(path, "is not a kiln checkpoint (bad magic)");
  }
  if (h.version != kVersion) {
    corrupt(path, "has format version " + std::to_string(h.version) + "; this kiln reads version " +
                      std::to_string(kVersion));
  }
  if (h.file_bytes != bytes.size()) {
    corrupt(path, "is " + std::to_string(bytes.size()) + " bytes long where its header says " +
                      std::to_string(h.file_bytes) + " (truncated or appended to)");
  }
  const uint64_t table_bytes = uint64_t{h.section_count} * sizeof(SectionEntry);
  if (h.section_count > 1024 || h.table_offset > bytes.size() ||
      table_bytes > bytes.size() - h.table_offset || h.json_offset > bytes.size() ||
      h.json_bytes > bytes.size() - h.json_offset) {
    corrupt(path, "has a header pointing outside the file");
  }
  if (crc32c(bytes.data() + h.table_offset, table_bytes) != h.table_crc) {
    corrupt(path, "section table checksum mismatch (corrupt)");
  }
  if (crc32c(bytes.data() + h.json_offset, h.json_bytes) != h.json_crc) {
    corrupt(path, "metadata checksum mismatch (corrupt)");
  }
  for (uint32_t i = 0; i < h.section_count; ++i) {
    SectionEntry e;
    std::memcpy(&e, bytes.data() + h.table_offset + i * sizeof(SectionEntry), sizeof e);
    e.name[sizeof e.name - 1] = '\0';
    if (e.offset > bytes.size() || e.bytes > bytes.size() - e.offset) {
      corrupt(path, std::string("section '") + e.name + "' lies outside the file");
    }
    const std::byte* data = bytes.data() + e.offset;
    if (crc32c(data, e.bytes) != e.crc) {
      corrupt(path, std::string("section '") + e.name + "' checksum mismatch (corrupt)");
    }
    c.sections.push_back({e.name, e.kind, data, e.bytes});
  }
  try {
    c.meta = nlohmann::json::parse(std::string_view(
        reinterpret_cast<const char*>(bytes.data() + h.json_offset), h.json_bytes));
  } catch (const std::exception& e) {
    corrupt(path, std::string("metadata is not valid: ") + e.what());
  }
  return c;
}

// One section to write: `fetch` returns its bytes in host memory, valid until the next call.
struct OutSection {
  std::string name;
  uint32_t kind;
  uint64_t bytes;
  std::function<const void*()> fetch;
};

void write_checked(const fs::path& path, const nlohmann::json& meta,
                   const std::vector<OutSection>& outs) {
  const std::string json = meta.dump(1);
  const uint32_t count = static_cast<uint32_t>(outs.size());
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.section_count = count;
  h.table_offset = sizeof(FileHeader);
  h.json_offset = h.table_offset + count * sizeof(SectionEntry);
  h.json_bytes = json.size();
  h.json_crc = crc32c(json.data(), json.size());
  std::vector<SectionEntry> table(count, SectionEntry{});
  uint64_t offset = align64(h.json_offset + h.json_bytes);
  for (uint32_t i = 0; i < count; ++i) {
    std::strncpy(table[i].name, outs[i].name.c_str(), sizeof table[i].name - 1);
    table[i].kind = outs[i].kind;
    table[i].offset = offset;
    table[i].bytes = outs[i].bytes;
    offset = align64(offset + outs[i].bytes);
  }
  h.file_bytes =
      count ? table[count - 1].offset + table[count - 1].bytes : h.json_offset + h.json_bytes;
  const std::size_t table_bytes = table.size() * sizeof(SectionEntry);
  write_file_atomically(path, [&](AtomicFileWriter& w) {
    w.write(&h, sizeof h);
    w.write(table.data(), table_bytes);
    w.write(json);
    const char zeros[64] = {};
    for (uint32_t i = 0; i < count; ++i) {
      w.write(zeros, table[i].offset - w.size());
      const void* data = outs[i].fetch();
      table[i].crc = crc32c(data, table[i].bytes);
      w.write(data, table[i].bytes);
    }
    h.table_crc = crc32c(table.data(), table_bytes);
    w.patch(h.table_offset, table.data(), table_bytes);
    w.patch(0, &h, sizeof h);
  });
}

// A whole or index checkpoint, checked, with its metadata parsed.
struct LoadedCheckpoint {
  CheckedFile file;
  CheckpointInfo info;
  struct Shard {
    std::string file;
    int rank;
    int64_t begin, end;
  };
  std::vector<Shard> shards;  // empty for a whole checkpoint
  int64_t param_count = 0;
};

// The folder of a checkpoint path.
fs::path folder_of(const fs::path& path) {
  return path.parent_path().empty() ? fs::path(".") : path.parent_path();
}

LoadedCheckpoint load(const fs::path& path) {
  // Temporaries of saves killed midway (they can be as large as the checkpoint) go at the next
  // save or load of the folder.
  remove_stale_temporaries(folder_of(path));
  LoadedCheckpoint c{open_checked(path), {}, {}, 0};
  const nlohmann::json& j = c.file.meta;
  try {
    if (j.value("format", std::string()) == kShardFormat) {
      corrupt(path, "is one rank's shard of a checkpoint; load the index file it belongs to");
    }
    c.info.model = impl::model_from_json(j.at("model"));
    c.info.train = impl::train_from_json(j.at("train"));
    c.info.train.validate(c.info.model);
    c.info.step = impl::json_int(j, "step", 0);
    c.info.kiln_version = j.at("kiln_version").get<std::string>();
    c.param_count = j.contains("param_count") ? impl::json_int(j, "param_count", 0) : -1;
    if (j.contains("shards")) {
      for (const auto& s : j.at("shards")) {
        const std::string file = s.at("file").get<std::string>();
        // A shard lies beside its index: a name with a folder ("../x", "/etc/x") is refused.
        KILN_CHECK(!file.empty() && file != "." && file != ".." &&
                       file.find('/') == std::string::npos && file.find('\0') == std::string::npos,
                   Status::data_error, "checkpoint '", path.string(), "': shard file name '", file,
                   "' is not a file name beside the index");
        c.shards.push_back({file, static_cast<int>(impl::json_int(s, "rank", 0, INT32_MAX)),
                            impl::json_int(s, "begin", 0), impl::json_int(s, "end", 0)});
      }
    }
  } catch (const Error& e) {
    if (e.status() == Status::data_error) throw;
    corrupt(path, "metadata: " + e.message());
  } catch (const std::exception& e) {
    corrupt(path, std::string("metadata is not valid: ") + e.what());
  }
  if (c.info.step < 0) corrupt(path, "metadata: negative step");
  if (c.shards.empty() && c.file.has("master") == false) {
    corrupt(path, "has neither tensors nor shards");
  }
  const Section& ds = c.file.section("data_state");
  c.info.data_state.assign(reinterpret_cast<const char*>(ds.data), ds.bytes);
  return c;
}

// Reads elements [begin, end) of the three tensors of a checkpoint, from the whole file or from
// the shard files holding them (each opened, and checked, once).
class StateReader {
 public:
  StateReader(const LoadedCheckpoint& c, int64_t total) : c_(c), total_(total) {
    if (c.param_count >= 0 && c.param_count != total) {
      corrupt(c.file.path(), "holds " + std::to_string(c.param_count) +
                                 " parameter values where the model has " + std::to_string(total));
    }
    int64_t next = 0;
    for (const auto& s : c.shards) {
      if (s.begin != next || s.end < s.begin || s.end > total) {
        corrupt(c.file.path(), "lists shards that do not tile [0, " + std::to_string(total) + ")");
      }
      next = s.end;
    }
    if (!c.shards.empty() && next != total) {
      corrupt(c.file.path(), "lists shards that do not tile [0, " + std::to_string(total) + ")");
    }
  }

  // Every section holds the values the model needs (for a sharded checkpoint every shard file is
  // opened and checked): called before anything is allocated for them.
  void check_sizes() {
    for (const char* name : {"master", "adam_m", "adam_v"}) {
      if (c_.shards.empty()) {
        c_.file.f32(name, total_);
      } else {
        for (std::size_t i = 0; i < c_.shards.size(); ++i)
          shard(i).f32(name, c_.shards[i].end - c_.shards[i].begin);
      }
    }
  }

  // out (end - begin) := tensor `name` ("master", "adam_m", "adam_v") elements [begin, end).
  void read(const std::string& name, int64_t begin, int64_t end, float* out) {
    if (c_.shards.empty()) {
      const float* all = c_.file.f32(name, total_);
      std::memcpy(out, all + begin, static_cast<std::size_t>(end - begin) * sizeof(float));
      return;
    }
    for (std::size_t i = 0; i < c_.shards.size(); ++i) {
      const auto& s = c_.shards[i];
      const int64_t lo = std::max(begin, s.begin), hi = std::min(end, s.end);
      if (lo >= hi) continue;
      const float* part = shard(i).f32(name, s.end - s.begin);
      std::memcpy(out + (lo - begin), part + (lo - s.begin),
                  static_cast<std::size_t>(hi - lo) * sizeof(float));
    }
  }

 private:
  const CheckedFile& shard(std::size_t i) {
    auto it = open_.find(i);
    if (it != open_.end()) return it->second;
    const auto& s = c_.shards[i];
    const fs::path path = c_.file.path().parent_path() / s.file;
    CheckedFile f = open_checked(path);
    try {
      const nlohmann::json& j = f.meta;
      if (j.at("format").get<std::string>() != kShardFormat) {
        corrupt(path, "is not a checkpoint shard");
      }
      if (impl::json_int(j, "step") != c_.info.step || impl::json_int(j, "begin") != s.begin ||
          impl::json_int(j, "end") != s.end || impl::json_int(j, "param_count") != total_) {
        corrupt(path, "does not match its index '" + c_.file.path().string() +
                          "' (step or range differ: a shard of another save?)");
      }
    } catch (const Error& e) {
      if (e.status() == Status::data_error) throw;
      corrupt(path, "metadata: " + e.message());
    } catch (const std::exception& e) {
      corrupt(path, std::string("metadata is not valid: ") + e.what());
    }
    return open_.emplace(i, std::move(f)).first->second;
  }

  const LoadedCheckpoint& c_;
  int64_t total_;
  std::map<std::size_t, CheckedFile> open_;
};

std::string shard_file_name(const fs::path& index, int64_t step, int rank, int world) {
  char buf[64];
  std::snprintf(buf, sizeof buf, ".step%08lld.rank%05d-of-%05d", static_cast<long long>(step), rank,
                world);
  return index.filename().string() + buf;
}

// Removes the shard files of earlier saves to `index` (those not in `keep`). Several ranks may
// race to remove the same file on a shared file system: errors are ignored.
void remove_stale_shards(const fs::path& index, const std::vector<std::string>& keep) {
  const fs::path dir = index.parent_path().empty() ? fs::path(".") : index.parent_path();
  const std::string prefix = index.filename().string() + ".step";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.find(".rank") == std::string::npos) continue;
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
}

// Every rank learns whether every rank succeeded; a rank that failed rethrows its own error, the
// others report that another rank failed. Collective.
void agree(Communicator& comm, const std::exception_ptr& error, const std::string& what) {
  const bool failed = error != nullptr;
  // The highest failed rank + 1, or 0.
  const double any = comm.world_size() > 1
                         ? comm.all_reduce_value(failed ? comm.rank() + 1.0 : 0.0, ReduceOp::max)
                         : (failed ? 1.0 : 0.0);
  if (failed) std::rethrow_exception(error);
  if (any != 0.0) {
    throw RemoteError(Status::io_error,
                      impl::cat(what, " failed on rank ", any - 1, " (see its error)"));
  }
}

}  // namespace

void Trainer::save_checkpoint(const std::filesystem::path& path,
                              const std::string& data_state) const {
  impl::TrainerState& s = *s_;
  Communicator& comm = *s.comm;
  const int64_t total = s.layout.total();
  const int world = comm.world_size(), rank = s.rank;
  remove_stale_temporaries(folder_of(path));
  nlohmann::json meta;
  meta["format"] = "kiln checkpoint";
  meta["kiln_version"] = KILN_VERSION_STRING;
  meta["model"] = impl::model_to_json(s.layout.config());
  meta["train"] = impl::train_to_json(s.train);
  meta["step"] = s.step;
  meta["param_count"] = total;
  const OutSection data_section{"data_state", kKindBytes, data_state.size(),
                                [&] { return static_cast<const void*>(data_state.data()); }};

  // One host buffer, reused for each tensor: the checkpoint of a large model streams through it.
  std::vector<float> host;
  auto tensor = [&](const char* name, const void* src, int64_t n) {
    return OutSection{name, kKindF32, static_cast<uint64_t>(n) * 4, [&s, &host, src, n] {
                        host.resize(static_cast<std::size_t>(n));
                        s.backend->download_f32(host.data(), src, s.types.master, n);
                        return static_cast<const void*>(host.data());
                      }};
  };

  std::vector<std::string> keep;
  if (!s.shards.sharded) {
    // Every rank holds the whole state: rank 0 writes it.
    std::exception_ptr error;
    if (rank == 0) {
      try {
        write_checked(
            path, meta,
            {tensor("master", s.at(s.r.master), total), tensor("adam_m", s.at(s.r.adam_m), total),
             tensor("adam_v", s.at(s.r.adam_v), total), data_section});
      } catch (...) {
        error = std::current_exception();
      }
    }
    agree(comm, error, "saving checkpoint '" + path.string() + "'");
  } else {
    // Each rank writes its shard; once all are in place rank 0 writes the index naming them.
    const int64_t b = s.shards.begin(rank), e = s.shards.end(rank);
    const void* master = s.types.separate_master
                             ? s.at(s.r.master)
                             : static_cast<const char*>(s.at(s.r.master)) +
                                   b * static_cast<int64_t>(dtype_size(s.types.master));
    nlohmann::json shards = nlohmann::json::array();
    for (int q = 0; q < world; ++q) {
      keep.push_back(shard_file_name(path, s.step, q, world));
      shards.push_back({{"file", keep.back()},
                        {"rank", q},
                        {"begin", s.shards.begin(q)},
                        {"end", s.shards.end(q)}});
    }
    std::exception_ptr error;
    try {
      nlohmann::json shard_meta{{"format", kShardFormat},
                                {"kiln_version", KILN_VERSION_STRING},
                                {"step", s.step},
                                {"rank", rank},
                                {"world_size", world},
                                {"begin", b},
                                {"end", e},
                                {"param_count", total}};
      write_checked(path.parent_path() / keep[static_cast<std::size_t>(rank)], shard_meta,
                    {tensor("master", master, e - b), tensor("adam_m", s.at(s.r.adam_m), e - b),
                     tensor("adam_v", s.at(s.r.adam_v), e - b)});
    } catch (...) {
      error = std::current_exception();
    }
    agree(comm, error, "saving checkpoint shards of '" + path.string() + "'");
    if (rank == 0) {
      try {
        meta["world_size"] = world;
        meta["shards"] = shards;
        write_checked(path, meta, {data_section});
      } catch (...) {
        error = std::current_exception();
      }
    }
    agree(comm, error, "saving checkpoint '" + path.string() + "'");
  }
  remove_stale_shards(path, keep);
}

CheckpointInfo Trainer::load_checkpoint(const std::filesystem::path& path) {
  impl::TrainerState& s = *s_;
  Communicator& comm = *s.comm;
  const int64_t total = s.layout.total();
  // Read and check everything this rank needs before anything changes (on any rank).
  CheckpointInfo info;
  const bool sharded = s.shards.sharded;
  const int64_t b = s.shards.begin(s.rank), e = s.shards.end(s.rank);
  std::vector<float> master(static_cast<std::size_t>(sharded ? e - b : total));
  std::vector<float> m(master.size()), v(master.size());
  std::exception_ptr error;
  try {
    LoadedCheckpoint c = load(path);
    if (!(c.info.model.resolved() == s.layout.config())) {
      impl::throw_error(Status::invalid_argument,
                        "checkpoint '" + path.string() + "' holds a " + c.info.model.describe() +
                            " model; this trainer's is " + s.layout.config().describe(),
                        nullptr, nullptr, 0);
    }
    StateReader reader(c, total);
    const int64_t lo = sharded ? b : 0, hi = sharded ? e : total;
    reader.read("master", lo, hi, master.data());
    reader.read("adam_m", lo, hi, m.data());
    reader.read("adam_v", lo, hi, v.data());
    info = std::move(c.info);
  } catch (...) {
    error = std::current_exception();
  }
  agree(comm, error, "loading checkpoint '" + path.string() + "'");

  Backend& be = *s.backend;
  if (!sharded) {
    s.set_master(master.data());
  } else {
    // This rank's shard of the master weights, then the compute weights gathered from every
    // rank's shard.
    const std::size_t ce = dtype_size(s.types.compute);
    void* shard_master = s.types.separate_master
                             ? s.at(s.r.master)
                             : static_cast<char*>(s.at(s.r.master)) +
                                   b * static_cast<int64_t>(dtype_size(s.types.master));
    be.upload_f32(shard_master, s.types.master, master.data(), e - b);
    if (s.types.separate_master) {
      be.convert(static_cast<char*>(s.at(s.r.params)) + static_cast<std::size_t>(b) * ce,
                 s.types.compute, shard_master, s.types.master, e - b);
    }
    comm.all_gather(s.at(s.r.params), s.shards.size, s.types.compute, be.native_stream());
  }
  be.upload_f32(s.at(s.r.adam_m), s.types.master, m.data(), static_cast<int64_t>(m.size()));
  be.upload_f32(s.at(s.r.adam_v), s.types.master, v.data(), static_cast<int64_t>(v.size()));
  be.synchronize();
  s.step = info.step;
  return info;
}

CheckpointInfo read_checkpoint(const std::filesystem::path& path,
                               std::vector<float>* master_weights) {
  LoadedCheckpoint c = load(path);
  if (master_weights) {
    ModelConfig model = c.info.model;
    try {
      model.validate();
    } catch (const Error& e) {
      corrupt(path, "metadata: " + e.message());
    }
    const ParamLayout layout(model);
    // The file must hold every value before memory is set aside for them.
    StateReader reader(c, layout.total());
    reader.check_sizes();
    try {
      master_weights->resize(static_cast<std::size_t>(layout.total()));
    } catch (const std::bad_alloc&) {
      impl::throw_error(Status::out_of_memory,
                        "checkpoint '" + path.string() + "': cannot allocate " +
                            std::to_string(layout.total()) + " parameter values (" +
                            model.describe() + ")",
                        nullptr, nullptr, 0);
    }
    reader.read("master", 0, layout.total(), master_weights->data());
  }
  return c.info;
}

}  // namespace kiln
