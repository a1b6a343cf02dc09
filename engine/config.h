// engine/config.h — flat, typed experiment configs (configs/*.cfg).
//
//   # comment
//   base = retinanet_r50_fpn_1x.cfg      (optional, first line only; path relative to this file)
//   [model]
//   depth = 50
//   img_scale = 1333, 800
//
// Keys are flattened to "section.key". A child file replaces values of its base (no deep merge).
// `--set model.depth=18` (apply_override) overrides from the command line. Every component reads its keys through the
// typed getters, which mark them used; check_all_used() then reports every key nobody read (a typo or
// a key from another component) with its file and line — unknown keys are errors, never ignored.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace kdet {

class Config {
 public:
  static Config load(const std::string& path);
  static Config parse(const std::string& text, const std::string& origin = "<string>");

  // "section.key=value" (as given to --set). The key may be new only if `allow_new` (else it must exist
  // in the file or its base, so typos in overrides are caught at once).
  void apply_override(const std::string& assignment, bool allow_new = false);
  void set(const std::string& key, const std::string& value, const std::string& origin = "--set");

  bool has(const std::string& key) const;
  // Getters without a default throw "missing key" naming the file.
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_double(const std::string& key) const;
  double get_double(const std::string& key, double def) const;
  bool get_bool(const std::string& key) const;
  bool get_bool(const std::string& key, bool def) const;
  std::vector<int64_t> get_ints(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key, const std::vector<int64_t>& def) const;
  std::vector<double> get_doubles(const std::string& key) const;
  std::vector<double> get_doubles(const std::string& key, const std::vector<double>& def) const;
  std::vector<std::string> get_strings(const std::string& key) const;  // comma/space separated

  // Keys of one section ("model" -> {"depth", ...}).
  std::vector<std::string> keys(const std::string& section) const;
  // Throws listing every key that no getter read, with file:line.
  void check_all_used() const;
  // The resolved config as text (written into run directories and checkpoint metadata).
  std::string dump() const;
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string value;
    std::string origin;  // "file:line" or "--set"
  };
  const Entry& entry(const std::string& key) const;
  std::map<std::string, Entry> kv_;
  mutable std::set<std::string> used_;
  std::string path_;
};

}  // namespace kdet
