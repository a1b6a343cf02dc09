// data/loader.h — a threaded, seeded data loader: decode + augment on worker threads ahead of the
// training loop.
//
// Determinism: the order of an epoch and every random choice (flip) come from the seed alone:
// epoch e uses Generator(seed).fork(e) for the order, and image k of that order gets its own
// stream epoch_gen.fork(k), drawn on the calling thread before any worker runs. Workers build whole
// batches; batches are handed out in order. Same seed -> identical batches whatever `workers` is.
//
// Bad images (missing, corrupt, size differing from the annotation file): with on_bad_image = Error
// (the default) next_batch() throws the worker's error naming the file and image id; with Skip the
// image is left out of its batch, counted (skipped_images()) and reported once on stderr; a batch
// whose images all fail is skipped.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/transforms.h"
#include "data/types.h"
#include "engine/random.h"

namespace kdet::data {

struct LoaderConfig {
  TransformConfig transform;   // img_scale, mean/std, size divisor
  double flip_ratio = 0.5;     // 0 for evaluation
  int batch_size = 2;
  uint64_t seed = 0;
  int workers = 2;             // 0 = decode on the calling thread
  int prefetch = 4;            // batches ready ahead of the consumer
  bool shuffle = true;
  bool group_by_aspect = true;  // mmdet GroupSampler: a batch holds images of one orientation (w/h > 1 or not)
  bool drop_last = false;
  bool train_targets = true;   // mmdet training filter on the boxes (train_targets); false: all annotations
  enum class BadImage { Error, Skip } on_bad_image = BadImage::Error;

  // mmdet's test pipeline: no flip, file order, no orientation grouping, every annotation kept.
  static LoaderConfig eval(int batch_size = 1, int workers = 2) {
    LoaderConfig c;
    c.flip_ratio = 0;
    c.batch_size = batch_size;
    c.workers = workers;
    c.shuffle = false;
    c.group_by_aspect = false;
    c.train_targets = false;
    return c;
  }
};

class Loader {
 public:
  // `ds` must outlive the loader. `indices` selects images (e.g. train_image_indices(ds)); an
  // empty selection is an error (everything filtered out?). The second form takes every image.
  Loader(const Dataset& ds, std::vector<size_t> indices, LoaderConfig cfg);
  Loader(const Dataset& ds, LoaderConfig cfg);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) epoch `epoch`: fixes its order and per-image random streams, and lets the
  // workers run ahead. Called automatically with epoch 0 by the first next_batch().
  void set_epoch(int64_t epoch);
  // The next batch of the current epoch; false when the epoch is over.
  bool next_batch(Batch& out);
  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  int64_t skipped_images() const;
  const LoaderConfig& config() const { return cfg_; }

  // One image through the pipeline, synchronously (what a worker does for each image).
  PreparedImage load_one(size_t index, Generator& g) const;

 private:
  struct Task {
    std::vector<size_t> images;
    std::vector<Generator> gens;
  };
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };
  void stop_workers();
  void worker_loop();
  Result build(const Task& t);

  const Dataset& ds_;
  std::vector<size_t> indices_;
  LoaderConfig cfg_;
  int64_t epoch_ = -1;
  std::vector<Task> tasks_;
  size_t next_task_ = 0, consumed_ = 0;
  std::map<size_t, Result> ready_;
  bool stop_ = false;
  int64_t skipped_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  std::vector<std::thread> threads_;
};

}  // namespace kdet::data
