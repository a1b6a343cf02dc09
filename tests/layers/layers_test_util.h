// Helpers shared by the tests/layers/ tests (fixture weights, key lines, weighted-sum losses).
#pragma once
#include <sstream>
#include <string>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "layers/module.h"
#include "tests/fixtures.h"

namespace kdet::test {

// Fixture tensors whose name starts with `prefix`, prefix stripped.
inline TensorMap with_prefix(const Fixture& f, const std::string& prefix) {
  TensorMap m;
  for (auto& [k, v] : f.tensors)
    if (k.compare(0, prefix.size(), prefix) == 0) m[k.substr(prefix.size())] = v;
  return m;
}

// "name dtype[shape]" lines in state-dict order (the format gen_layers.py writes).
inline std::vector<std::string> key_lines(const Module& m) {
  auto sd = m.state_dict();
  std::vector<std::string> r;
  for (auto& k : m.state_dict_keys()) {
    std::ostringstream s;
    s << k << " " << sd.at(k).dtype() << sd.at(k).shape();
    r.push_back(s.str());
  }
  return r;
}

inline std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> r;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) r.push_back(line);
  return r;
}

// L = sum_i <ys[i], rs[i]>
inline Var weighted_sum(const std::vector<Var>& ys, const std::vector<Tensor>& rs) {
  Var l;
  for (size_t i = 0; i < ys.size(); ++i) {
    Var t = sum(ys[i] * Var(rs[i].to(ys[i].dtype()), false));
    l = l.defined() ? l + t : t;
  }
  return l;
}

// Max |x| of a tensor (scale for absolute tolerances).
inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace kdet::test
