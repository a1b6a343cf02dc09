// bench/bench_util.h — timing and machine-load helpers shared by the `make bench` sections
// (bench/kdet_bench.cpp: peak / SGEMM / conv2d; bench/bench_detector.cpp: RetinaNet step and inference).
#pragma once
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdet::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Timing {
  double med, min;
};

// Runs f `warmup` times, then `reps` timed times; every timed run's ms goes to *all when given.
inline Timing time_ms(const std::function<void()>& f, int warmup, int reps, std::vector<double>* all = nullptr) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now_s();
    f();
    t.push_back((now_s() - t0) * 1e3);
  }
  if (all) *all = t;
  return {median(t), *std::min_element(t.begin(), t.end())};
}

// Busy CPU seconds of the whole machine (from /proc/stat) and of this process.
inline double machine_busy_s() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  long long v[10] = {};
  f >> cpu;
  for (auto& x : v) f >> x;
  const long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // user nice system irq softirq steal
  return static_cast<double>(busy) / sysconf(_SC_CLK_TCK);
}
inline double self_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

// Other processes' CPU use (in cores) over a short window while this process sleeps.
inline double other_load_now(double window_s = 0.5) {
  const double b0 = machine_busy_s(), s0 = self_cpu_s(), t0 = now_s();
  usleep(static_cast<useconds_t>(window_s * 1e6));
  return ((machine_busy_s() - b0) - (self_cpu_s() - s0)) / (now_s() - t0);
}

// Waits (up to max_s) until other processes use less than 0.15 cores; returns the last reading.
inline double wait_idle(double max_s) {
  const double t0 = now_s();
  double l = other_load_now();
  while (l > 0.15 && now_s() - t0 < max_s) l = other_load_now();
  return l;
}

// A "Vm<key>:   1234 kB" line of /proc/self/status, in MiB (-1 when missing).
inline double proc_status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(k, 0) == 0) return std::atof(line.c_str() + k.size()) / 1024.0;
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0, /proc/self/clear_refs); false when not possible.
inline bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.close();
  return static_cast<bool>(f);
}

// Peak resident set size of this process so far, MiB: VmHWM, the high-water mark of this process's own address
// space (ru_maxrss when /proc is missing). NOT ru_maxrss: Linux carries the high-water mark of the address space
// that exec replaces into ru_maxrss, and a posix_spawn'ed child runs in its parent's address space until exec, so
// a bench case's ru_maxrss starts at the bench parent's peak (tested: a child of a 510 MiB parent reads ru_maxrss
// 510 MiB, VmHWM 8 MiB).
inline double max_rss_mib() {
  const double hwm = proc_status_mib("VmHWM");
  if (hwm >= 0) return hwm;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux: KiB
}

// Runs a shell command (a PyTorch peer script) and returns every stdout line that parses as JSON; other
// lines are skipped. Empty when the command cannot start.
inline std::vector<nlohmann::json> json_lines_of(const std::string& cmd) {
  std::vector<nlohmann::json> out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) {
    auto j = nlohmann::json::parse(buf, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  pclose(p);
  return out;
}

}  // namespace kdet::bench
