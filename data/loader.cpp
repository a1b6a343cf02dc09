#include "data/loader.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "data/coco.h"
#include "data/image.h"
#include "engine/check.h"

namespace kdet::data {

Loader::Loader(const Dataset& ds, std::vector<size_t> indices, LoaderConfig cfg)
    : ds_(ds), indices_(std::move(indices)), cfg_(cfg) {
  KDET_CHECK(cfg_.batch_size >= 1, "Loader: batch_size must be >= 1, got ", cfg_.batch_size);
  KDET_CHECK(cfg_.workers >= 0 && cfg_.prefetch >= 1, "Loader: bad workers/prefetch ", cfg_.workers, "/", cfg_.prefetch);
  KDET_CHECK(!indices_.empty(), "Loader: no images selected from ", ds_.source,
             " (", ds_.images.size(), " images; all filtered out?)");
  for (size_t i : indices_) KDET_CHECK(i < ds_.images.size(), "Loader: image index ", i, " out of range for ", ds_.source);
}

namespace {
std::vector<size_t> all_indices(const Dataset& ds) {
  std::vector<size_t> v(ds.images.size());
  std::iota(v.begin(), v.end(), size_t{0});
  return v;
}
}  // namespace

Loader::Loader(const Dataset& ds, LoaderConfig cfg) : Loader(ds, all_indices(ds), cfg) {}

Loader::~Loader() { stop_workers(); }

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  stop_ = false;
}

int64_t Loader::batches_per_epoch() const {
  if (epoch_ >= 0) return static_cast<int64_t>(tasks_.size());
  int64_t n = static_cast<int64_t>(indices_.size()), b = cfg_.batch_size;
  if (!cfg_.group_by_aspect) return cfg_.drop_last ? n / b : (n + b - 1) / b;
  int64_t wide = 0;
  for (size_t i : indices_) wide += ds_.images[i].width > ds_.images[i].height;
  auto nb = [&](int64_t k) { return cfg_.drop_last ? k / b : (k + b - 1) / b; };
  return nb(wide) + nb(n - wide);
}

int64_t Loader::skipped_images() const {
  std::lock_guard<std::mutex> lk(mu_);
  return skipped_;
}

void Loader::set_epoch(int64_t epoch) {
  stop_workers();
  epoch_ = epoch;
  ready_.clear();
  next_task_ = consumed_ = 0;
  tasks_.clear();
  Generator base(cfg_.seed);
  Generator eg = base.fork(static_cast<uint64_t>(epoch));
  // order
  std::vector<size_t> order = indices_;
  if (cfg_.shuffle) {
    auto perm = randperm(static_cast<int64_t>(order.size()), eg);
    std::vector<size_t> o(order.size());
    for (size_t k = 0; k < o.size(); ++k) o[k] = order[static_cast<size_t>(perm[k])];
    order.swap(o);
  }
  // batches (grouped by orientation like mmdet's GroupSampler, then the batch order shuffled)
  std::vector<std::vector<size_t>> batches;
  auto chunk = [&](const std::vector<size_t>& v) {
    for (size_t s = 0; s < v.size(); s += cfg_.batch_size) {
      size_t e = std::min(v.size(), s + cfg_.batch_size);
      if (cfg_.drop_last && e - s < static_cast<size_t>(cfg_.batch_size)) break;
      batches.emplace_back(v.begin() + s, v.begin() + e);
    }
  };
  if (cfg_.group_by_aspect) {
    std::vector<size_t> wide, tall;
    for (size_t i : order) (ds_.images[i].width > ds_.images[i].height ? wide : tall).push_back(i);
    chunk(wide);
    chunk(tall);
    if (cfg_.shuffle) {
      auto perm = randperm(static_cast<int64_t>(batches.size()), eg);
      std::vector<std::vector<size_t>> b(batches.size());
      for (size_t k = 0; k < b.size(); ++k) b[k] = std::move(batches[static_cast<size_t>(perm[k])]);
      batches.swap(b);
    }
  } else {
    chunk(order);
  }
  // per-image random streams, drawn here in order
  uint64_t k = 0;
  for (auto& b : batches) {
    Task t;
    t.images = std::move(b);
    for (size_t j = 0; j < t.images.size(); ++j) t.gens.push_back(eg.fork(k++));
    tasks_.push_back(std::move(t));
  }
  for (int w = 0; w < cfg_.workers; ++w) threads_.emplace_back([this] { worker_loop(); });
}

PreparedImage Loader::load_one(size_t index, Generator& g) const {
  const ImageRecord& rec = ds_.images[index];
  bool flip = cfg_.flip_ratio > 0 && g.uniform() < cfg_.flip_ratio;
  std::string path = ds_.image_path(rec);
  Image im;
  try {
    im = load_image(path);
  } catch (const Error& e) {
    KDET_FAIL(e.what(), " [image id ", rec.id, " of ", ds_.source, "]");
  }
  KDET_CHECK(im.w == rec.width && im.h == rec.height, path, ": image id ", rec.id, " decodes to ", im.w, "x", im.h,
             " but ", ds_.source, " says ", rec.width, "x", rec.height);
  std::vector<BoxAnn> boxes = cfg_.train_targets ? train_targets(rec) : rec.anns;
  PreparedImage p = prepare_image(im, std::move(boxes), cfg_.transform, flip);
  p.meta.image_id = rec.id;
  p.meta.index = index;
  return p;
}

Loader::Result Loader::build(const Task& t) {
  Result r;
  std::vector<PreparedImage> items;
  try {
    for (size_t j = 0; j < t.images.size(); ++j) {
      Generator g = t.gens[j];
      try {
        items.push_back(load_one(t.images[j], g));
      } catch (const Error& e) {
        if (cfg_.on_bad_image == LoaderConfig::BadImage::Error) throw;
        std::fprintf(stderr, "loader: skipping image: %s\n", e.what());
        std::lock_guard<std::mutex> lk(mu_);
        ++skipped_;
      }
    }
    if (!items.empty()) r.batch = collate(std::move(items));
  } catch (...) {
    r.error = std::current_exception();
  }
  return r;
}

void Loader::worker_loop() {
  for (;;) {
    size_t t;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] {
        return stop_ || (next_task_ < tasks_.size() && next_task_ < consumed_ + static_cast<size_t>(cfg_.prefetch));
      });
      if (stop_) return;
      t = next_task_++;
    }
    Result r = build(tasks_[t]);
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_[t] = std::move(r);
    }
    cv_ready_.notify_all();
  }
}

bool Loader::next_batch(Batch& out) {
  if (epoch_ < 0) set_epoch(0);
  for (;;) {
    if (consumed_ >= tasks_.size()) return false;
    Result r;
    if (cfg_.workers == 0) {
      r = build(tasks_[consumed_]);
    } else {
      std::unique_lock<std::mutex> lk(mu_);
      cv_ready_.wait(lk, [&] { return ready_.count(consumed_) > 0; });
      r = std::move(ready_[consumed_]);
      ready_.erase(consumed_);
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++consumed_;
    }
    cv_work_.notify_all();
    if (r.error) std::rethrow_exception(r.error);
    if (r.batch.size() == 0) continue;  // every image of the batch was skipped
    out = std::move(r.batch);
    return true;
  }
}

}  // namespace kdet::data
