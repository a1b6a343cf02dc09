#include "engine/config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/check.h"

namespace kdet {

namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string dir_of(const std::string& path) {
  size_t p = path.find_last_of('/');
  return p == std::string::npos ? "." : path.substr(0, p);
}

// "1333, 800" / "(1333, 800)" / "[1, 2]" / "a b c" -> tokens
std::vector<std::string> split_list(const std::string& v) {
  std::string s;
  for (char c : v) s.push_back((c == ',' || c == '(' || c == ')' || c == '[' || c == ']') ? ' ' : c);
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string t;
  while (in >> t) out.push_back(t);
  return out;
}

bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  v = x;
  return true;
}

bool parse_double(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(s.c_str(), &end);
  if (errno || *end || !std::isfinite(x)) return false;
  v = x;
  return true;
}


}  // namespace

Config Config::load(const std::string& path) {
  std::ifstream f(path);
  KDET_CHECK(f.good(), "config: cannot open ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return parse(ss.str(), path);
}

Config Config::parse(const std::string& text, const std::string& origin) {
  Config c;
  c.path_ = origin;
  std::istringstream in(text);
  std::string line, section;
  int lineno = 0;
  bool seen_key = false;
  while (std::getline(in, line)) {
    ++lineno;
    size_t hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    const std::string where = origin + ":" + std::to_string(lineno);
    if (line.front() == '[') {
      KDET_CHECK(line.back() == ']' && line.size() > 2, where, ": malformed section header '", line, "'");
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    size_t eq = line.find('=');
    KDET_CHECK(eq != std::string::npos, where, ": expected 'key = value', got '", line, "'");
    std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    KDET_CHECK(!key.empty(), where, ": empty key");
    if (key == "base" && section.empty()) {
      KDET_CHECK(!seen_key, where, ": 'base' must come before any other key");
      KDET_CHECK(!value.empty(), where, ": 'base' needs a file name");
      // A base chain that loops (a.cfg -> b.cfg -> a.cfg) would recurse until the stack overflows.
      static thread_local int base_depth = 0;
      KDET_CHECK(base_depth < 32, where, ": base chain deeper than 32 files (a cycle?)");
      struct DepthGuard {
        int& d;
        explicit DepthGuard(int& d_) : d(d_) { ++d; }
        ~DepthGuard() { --d; }
      } guard(base_depth);
      std::string bpath = value.front() == '/' ? value : dir_of(origin) + "/" + value;
      std::ifstream probe(bpath);
      if (!probe.good()) bpath = value;  // also accept paths relative to the working directory
      Config b = load(bpath);
      c.kv_ = b.kv_;
      continue;
    }
    seen_key = true;
    std::string full = section.empty() ? key : section + "." + key;
    c.kv_[full] = {value, where};
  }
  return c;
}

void Config::apply_override(const std::string& assignment, bool allow_new) {
  size_t eq = assignment.find('=');
  KDET_CHECK(eq != std::string::npos, "--set ", assignment, ": expected key=value");
  std::string key = trim(assignment.substr(0, eq));
  KDET_CHECK(allow_new || kv_.count(key), "--set ", assignment, ": unknown key '", key, "' (not in ", path_,
             " or its base)");
  set(key, trim(assignment.substr(eq + 1)));
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  kv_[key] = {value, origin};
}

bool Config::has(const std::string& key) const { return kv_.count(key) > 0; }

const Config::Entry& Config::entry(const std::string& key) const {
  auto it = kv_.find(key);
  KDET_CHECK(it != kv_.end(), "config ", path_, ": missing key '", key, "'");
  used_.insert(key);
  return it->second;
}

std::string Config::get_string(const std::string& key) const { return entry(key).value; }
std::string Config::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}

int64_t Config::get_int(const std::string& key) const {
  const Entry& e = entry(key);
  int64_t v;
  KDET_CHECK(parse_int(e.value, v), e.origin, ": key '", key, "' must be an integer, got '", e.value, "'");
  return v;
}
int64_t Config::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }

double Config::get_double(const std::string& key) const {
  const Entry& e = entry(key);
  double v;
  KDET_CHECK(parse_double(e.value, v), e.origin, ": key '", key, "' must be a finite number, got '", e.value, "'");
  return v;
}
double Config::get_double(const std::string& key, double def) const { return has(key) ? get_double(key) : def; }

bool Config::get_bool(const std::string& key) const {
  const Entry& e = entry(key);
  if (e.value == "true" || e.value == "True" || e.value == "1" || e.value == "yes") return true;
  if (e.value == "false" || e.value == "False" || e.value == "0" || e.value == "no") return false;
  KDET_FAIL(e.origin, ": key '", key, "' must be true or false, got '", e.value, "'");
}
bool Config::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

std::vector<int64_t> Config::get_ints(const std::string& key) const {
  const Entry& e = entry(key);
  std::vector<int64_t> out;
  for (auto& t : split_list(e.value)) {
    int64_t v;
    KDET_CHECK(parse_int(t, v), e.origin, ": key '", key, "' must be a list of integers, got '", e.value, "'");
    out.push_back(v);
  }
  return out;
}
std::vector<int64_t> Config::get_ints(const std::string& key, const std::vector<int64_t>& def) const {
  return has(key) ? get_ints(key) : def;
}

std::vector<double> Config::get_doubles(const std::string& key) const {
  const Entry& e = entry(key);
  std::vector<double> out;
  for (auto& t : split_list(e.value)) {
    double v;
    KDET_CHECK(parse_double(t, v), e.origin, ": key '", key, "' must be a list of numbers, got '", e.value, "'");
    out.push_back(v);
  }
  return out;
}
std::vector<double> Config::get_doubles(const std::string& key, const std::vector<double>& def) const {
  return has(key) ? get_doubles(key) : def;
}

std::vector<std::string> Config::get_strings(const std::string& key) const { return split_list(entry(key).value); }

std::vector<std::string> Config::keys(const std::string& section) const {
  std::vector<std::string> out;
  const std::string prefix = section + ".";
  for (auto& kv : kv_)
    if (kv.first.compare(0, prefix.size(), prefix) == 0) out.push_back(kv.first.substr(prefix.size()));
  return out;
}

void Config::check_all_used() const {
  std::ostringstream msg;
  int n = 0;
  for (auto& kv : kv_) {
    if (used_.count(kv.first)) continue;
    msg << "\n  " << kv.second.origin << ": unknown key '" << kv.first << "'";
    ++n;
  }
  KDET_CHECK(n == 0, "config ", path_, ": ", n, " unknown key(s) (not read by any component):", msg.str());
}

std::string Config::dump() const {
  std::ostringstream o;
  std::string section;
  for (auto& kv : kv_) {
    size_t dot = kv.first.find('.');
    std::string sec = dot == std::string::npos ? "" : kv.first.substr(0, dot);
    std::string key = dot == std::string::npos ? kv.first : kv.first.substr(dot + 1);
    if (sec != section) {
      o << "\n[" << sec << "]\n";
      section = sec;
    }
    o << key << " = " << kv.second.value << "\n";
  }
  return o.str();
}

}  // namespace kdet
