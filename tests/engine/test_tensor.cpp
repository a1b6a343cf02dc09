#include <doctest/doctest.h>

#include "engine/allocator.h"

#include "engine/ops/elementwise.h"
#include "engine/random.h"
#include "engine/safetensors.h"
#include <fstream>

#include "tests/fixtures.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("tensor: factories, views and copies") {
  Tensor t = Tensor::arange(24, DType::F32).view({2, 3, 4});
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.is_contiguous());
  Tensor p = t.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK_FALSE(p.is_contiguous());
  Tensor pc = p.contiguous();
  CHECK(pc.is_contiguous());
  // p[k, i, j] == t[i, j, k]
  auto v = pc.to_vector<float>();
  CHECK(v[1 * 6 + 1 * 3 + 2] == doctest::Approx(1 * 12 + 2 * 4 + 1));
  Tensor s = t.slice(2, 1, 4, 2);  // columns 1, 3
  CHECK(s.shape() == Shape{2, 3, 2});
  auto sv = s.contiguous().to_vector<float>();
  CHECK(sv[0] == 1.0f);
  CHECK(sv[1] == 3.0f);
  Tensor sel = t.select(1, 2);
  CHECK(sel.shape() == Shape{2, 4});
  CHECK(sel.contiguous().to_vector<float>()[0] == 8.0f);
  Tensor e = Tensor::from_vector<float>({1, 2, 3}).view({3, 1}).expand({3, 4});
  CHECK(e.contiguous().to_vector<float>()[5] == 2.0f);
  Tensor d = t.to(DType::F64);
  CHECK(d.dtype() == DType::F64);
  CHECK(d.to_vector<double>()[23] == 23.0);
  CHECK(t.view({-1, 4}).shape() == Shape{6, 4});
  CHECK_THROWS_AS(t.view({5, -1}), Error);
  CHECK_THROWS_AS(p.view({24}), Error);
  Tensor u = t.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 2, 3, 4});
  CHECK(u.squeeze(0).shape() == t.shape());
}

TEST_CASE("tensor: errors name the op and shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 3});
  try {
    ops::add(a, b);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("add") != std::string::npos);
    CHECK(m.find("[2, 3]") != std::string::npos);
    CHECK(m.find("[4, 3]") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(ops::add(a, Tensor::zeros({2, 3}, DType::F64)), doctest::Contains("dtype"), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::F32, Device::cuda()), doctest::Contains("CUDA"), Error);
}

TEST_CASE("allocator: stats track current and peak bytes") {
  alloc_reset_peak();
  auto s0 = alloc_stats();
  {
    Tensor big = Tensor::empty({1 << 20});  // 4 MiB
    auto s1 = alloc_stats();
    CHECK(s1.current_bytes >= s0.current_bytes + (4 << 20));
    CHECK(s1.peak_bytes >= s1.current_bytes);
  }
  auto s2 = alloc_stats();
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.peak_bytes >= s0.current_bytes + (4 << 20));
  Tensor again = Tensor::empty({1 << 20});  // served from the cache
  CHECK(alloc_stats().cache_hits > s2.cache_hits);
}

TEST_CASE("allocator: an idle larger block (< 2x) serves a smaller request and returns to its own class") {
  alloc_release_cache();
  // Sizes no other test uses at the same time: 7 MiB and 5 MiB (different size classes, 5 < 7 < 10).
  void* a = cpu_alloc(7 << 20);
  const auto s0 = alloc_stats();
  cpu_free(a, 7 << 20);
  CHECK(alloc_stats().cached_bytes == s0.cached_bytes + (7 << 20));
  void* b = cpu_alloc(5 << 20);  // no 5 MiB block is idle: the 7 MiB one is lent
  CHECK(b == a);
  auto s1 = alloc_stats();
  CHECK(s1.cached_bytes == s0.cached_bytes);
  CHECK(s1.current_bytes == s0.current_bytes);  // counted at its real size
  cpu_free(b, 5 << 20);                           // back to the 7 MiB class
  CHECK(alloc_stats().current_bytes == s0.current_bytes - (7 << 20));
  void* c = cpu_alloc(7 << 20);
  CHECK(c == a);
  void* d = cpu_alloc(3 << 20);  // 7 MiB would be >= 2x: not lent (none idle anyway), new memory
  CHECK(d != a);
  cpu_free(c, 7 << 20);
  void* e = cpu_alloc(3 << 20);  // the idle 7 MiB block is more than twice 3 MiB: not used
  CHECK(e != a);
  cpu_free(d, 3 << 20);
  cpu_free(e, 3 << 20);
  alloc_release_cache();
  CHECK(alloc_stats().cached_bytes == 0);
}

TEST_CASE("rng: explicit generators are deterministic and independent") {
  Generator a(7), b(7), c(8);
  Tensor x = rand_normal({1000}, a), y = rand_normal({1000}, b), z = rand_normal({1000}, c);
  CHECK(max_abs_diff(x, y) == 0.0);
  CHECK(max_abs_diff(x, z) > 0.1);
  auto v = x.to_vector<double>();
  double m = 0, s = 0;
  for (double q : v) m += q;
  m /= v.size();
  for (double q : v) s += (q - m) * (q - m);
  s = std::sqrt(s / v.size());
  CHECK(std::abs(m) < 0.1);
  CHECK(std::abs(s - 1) < 0.1);
  Generator g(3);
  auto perm = randperm(100, g);
  std::vector<bool> seen(100);
  for (auto i : perm) seen[i] = true;
  CHECK(std::all_of(seen.begin(), seen.end(), [](bool q) { return q; }));
}

TEST_CASE("safetensors: round trip of every dtype with metadata") {
  Generator g(1);
  std::map<std::string, Tensor> m{{"a.weight", rand_normal({3, 4}, g)},
                                  {"b", rand_normal({2}, g, 0, 1, DType::F64)},
                                  {"idx", Tensor::arange(5)},
                                  {"img", Tensor::full({2, 2}, 200, DType::U8)},
                                  {"mask", Tensor::ones({3}, DType::Bool)},
                                  {"empty", Tensor::zeros({0, 4})}};
  save_safetensors("/tmp/kdet_test_rt.safetensors", m, {{"format", "kdet"}, {"step", "10"}});
  auto f = load_safetensors("/tmp/kdet_test_rt.safetensors");
  CHECK(f.metadata.at("step") == "10");
  REQUIRE(f.tensors.size() == m.size());
  for (auto& [k, t] : m) {
    CHECK(f.tensors.at(k).dtype() == t.dtype());
    CHECK(f.tensors.at(k).shape() == t.shape());
    if (t.numel()) CHECK(max_abs_diff(f.tensors.at(k), t) == 0.0);
  }
}

TEST_CASE("safetensors: corrupt files give errors naming the file") {
  const char* p = "/tmp/kdet_test_bad.safetensors";
  {
    std::ofstream f(p, std::ios::binary);
    f << "abc";
  }
  CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains(p), Error);
  {
    std::ofstream f(p, std::ios::binary);
    uint64_t n = 1000;
    f.write(reinterpret_cast<char*>(&n), 8);
    f << "{}";
  }
  CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("exceeds file size"), Error);
  {
    std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
    std::ofstream f(p, std::ios::binary);
    uint64_t n = h.size();
    f.write(reinterpret_cast<char*>(&n), 8);
    f << h << "12345678";  // 8 of 16 bytes
  }
  CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("'w'"), Error);
  {
    std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})";  // broken JSON
    std::ofstream f(p, std::ios::binary);
    uint64_t n = h.size();
    f.write(reinterpret_cast<char*>(&n), 8);
    f << h << std::string(16, '\0');
  }
  CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("malformed"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors("/nonexistent/x.safetensors"), doctest::Contains("cannot open"), Error);
}

TEST_CASE("safetensors: reads a file written by the Python package") {
  auto f = load_fixture("safetensors_interop");
  if (!f) return;
  CHECK(f->metadata.at("origin") == "python");
  CHECK(f->at("backbone.conv1.weight").shape() == Shape{4, 3, 3, 3});
  CHECK(f->at("f64").dtype() == DType::F64);
  CHECK(f->at("i64").to_vector<int64_t>()[6] == 6);
  CHECK(f->at("u8").shape() == Shape{2, 3});
  CHECK(f->at("u8").to_vector<uint8_t>()[5] == 5);
  CHECK(f->at("bool").to_vector<bool>()[1] == false);
  CHECK(f->at("scalar").shape() == Shape{});
  CHECK(f->at("scalar").item() == 3.5);
  // and back: our writer's output is readable by our reader with the same bytes
  save_safetensors("/tmp/kdet_rt2.safetensors", f->tensors, f->metadata);
  auto g = load_safetensors("/tmp/kdet_rt2.safetensors");
  CHECK(max_abs_diff(g.tensors.at("backbone.conv1.weight"), f->at("backbone.conv1.weight")) == 0.0);
}
