// kdet bench-kd [--size 512] [--batch 2] [--channels 256] [--reps 3] [--methods a,b] [--no-student] [--cpu-time]
//               [--device cpu|cuda|cuda:N]
//
// Forward + backward time of each KD loss on RetinaNet-R50-sized FPN features (P3..P7 of a
// size x size input: 64², 32², 16², 8², 4² at 512; 256 channels; batch 2), and the same as a fraction
// of one student training step (RetinaNet-R50 loss forward + backward on the same batch, no optimizer
// step). After one warm-up of everything, --reps rounds each time the student step and then every
// method once (interleaved, so a change of machine load hits the student and the losses alike); the
// table gives the median time and the median over rounds of (method time / that round's student
// step). --cpu-time clocks the process's CPU time (user + sys of all threads) instead of wall time: on
// a shared machine with OMP_NUM_THREADS=1 it is close to the unloaded single-core time. FGD gets 3
// random boxes per image; MGD draws its mask; AID's teacher loss is a constant here (its per-image
// teacher loss pass is a teacher cost). --device cuda runs everything on that GPU (a CUDA build), the device
// synchronised around each timed piece (wall time).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "detectors/retinanet.h"
#include "distill/distiller.h"
#include "engine/check.h"
#include "engine/ops/reduce.h"
#include "tools/commands.h"
#include "tools/train_loop.h"

#if KDET_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace kdet::cli {

namespace {

double clock_now(bool cpu) {
  if (cpu) {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int cmd_bench_kd(int argc, char** argv) {
  int64_t size = 512, batch = 2, C = 256;
  int reps = 3;
  bool student = true, cpu_time = false;
  std::string device = "cpu";
  std::vector<std::string> methods = {"fitnet", "fgd", "mgd", "amd", "dmkd", "ssim", "fbkd", "aid"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      KDET_CHECK(i + 1 < argc, "bench-kd: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("usage: kdet bench-kd [--size 512] [--batch 2] [--channels 256] [--reps 3] [--methods a,b] "
                  "[--no-student] [--cpu-time] [--device cpu|cuda|cuda:N]\n");
      return 0;
    } else if (a == "--size") size = std::stoll(val());
    else if (a == "--batch") batch = std::stoll(val());
    else if (a == "--channels") C = std::stoll(val());
    else if (a == "--reps") reps = std::stoi(val());
    else if (a == "--no-student") student = false;
    else if (a == "--cpu-time") cpu_time = true;
    else if (a == "--device") device = val();
    else if (a == "--methods") {
      methods.clear();
      std::string s = val();
      for (size_t p = 0; p <= s.size();) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        if (q > p) methods.push_back(s.substr(p, q - p));
        p = q + 1;
      }
    } else KDET_FAIL("bench-kd: unknown argument '", a, "'");
  }
  KDET_CHECK(size % 128 == 0 && size >= 128, "bench-kd: --size must be a multiple of 128");
  KDET_CHECK(reps >= 1 && batch >= 1 && C >= 16, "bench-kd: bad --reps / --batch / --channels");
  const Device dev = train::parse_device(device, "--device");
  KDET_CHECK(!(cpu_time && dev.is_cuda()), "bench-kd: --cpu-time measures the host, not a GPU");
  auto sync = [dev] {
#if KDET_CUDA
    if (dev.is_cuda()) cuda::synchronize(dev.index);
#endif
  };

  Generator g(0);
  const int L = 5;
  std::vector<Tensor> Sx, T;
  std::vector<std::pair<int64_t, int64_t>> ch;
  for (int i = 0; i < L; ++i) {
    const int64_t h = size >> (3 + i);
    Sx.push_back(rand_normal({batch, C, h, h}, g).to(dev));
    T.push_back(rand_normal({batch, C, h, h}, g).to(dev));
    ch.emplace_back(C, C);
  }
  std::vector<Tensor> boxes;
  std::vector<double> ref;
  for (int64_t n = 0; n < batch; ++n) {
    std::vector<double> b;
    for (int k = 0; k < 3; ++k) {
      const double x = g.uniform(0, size * 0.6), y = g.uniform(0, size * 0.6), w = g.uniform(16, size * 0.4),
                   hh = g.uniform(16, size * 0.4);
      b.insert(b.end(), {x, y, x + w, y + hh});
    }
    boxes.push_back(Tensor::from_vector(b, {3, 4}));
    ref.push_back(static_cast<double>(size));
    ref.push_back(static_cast<double>(size));
  }
  const Tensor ref_hw = Tensor::from_vector(ref, {batch, 2});
  const Tensor tl = Tensor::full({batch}, 1.0);

  // Every timed piece of work, student step first: names[k], run[k].
  std::vector<std::string> names;
  std::vector<std::function<void()>> run;
  std::unique_ptr<RetinaNet> net;
  data::Batch b;
  if (student) {
    net = std::make_unique<RetinaNet>(RetinaNetConfig::mmdet(50, 80));
    Generator gi(1);
    net->init_weights(gi);
    net->to(dev);
    net->train();
    b.images = rand_normal({batch, 3, size, size}, g).to(dev);
    for (int64_t n = 0; n < batch; ++n) {
      data::ImageMeta m;
      m.ori_h = m.img_h = m.pad_h = static_cast<int>(size);
      m.ori_w = m.img_w = m.pad_w = static_cast<int>(size);
      b.metas.push_back(m);
      std::vector<data::BoxAnn> anns;
      const auto bv = boxes[static_cast<size_t>(n)].to_vector<double>();
      for (int k = 0; k < 3; ++k) {
        data::BoxAnn a;
        a.x1 = static_cast<float>(bv[4 * k]), a.y1 = static_cast<float>(bv[4 * k + 1]);
        a.x2 = static_cast<float>(bv[4 * k + 2]), a.y2 = static_cast<float>(bv[4 * k + 3]);
        a.label = k;
        anns.push_back(a);
      }
      b.gts.push_back(anns);
    }
    names.push_back("student");
    run.push_back([&] {
      net->zero_grad();
      total_loss(net->loss(b)).backward();
    });
  }
  std::vector<std::unique_ptr<Module>> mods;
  std::vector<std::unique_ptr<Generator>> gens;
  for (const auto& m : methods) {
    const kd::KdMethod km = kd::parse_kd_method(m);
    KDET_CHECK(km != kd::KdMethod::LogitKD, "bench-kd: logit_kd works on head logits, not FPN features");
    std::unique_ptr<Module> mod;
    kd::FBKDConfig fb;
    fb.nonlocal = kd::fbkd_default_nonlocal(L);
    switch (km) {
      case kd::KdMethod::FitNet: mod = std::make_unique<kd::FitNetLoss>(ch, kd::FitNetConfig{}); break;
      case kd::KdMethod::FGD: mod = std::make_unique<kd::FGDLoss>(ch, kd::FGDConfig{}); break;
      case kd::KdMethod::MGD: mod = std::make_unique<kd::MGDLoss>(ch, kd::MGDConfig{}); break;
      case kd::KdMethod::AMD: mod = std::make_unique<kd::AMDLoss>(ch, kd::AMDConfig{}); break;
      case kd::KdMethod::DMKD: mod = std::make_unique<kd::DMKDLoss>(ch, kd::DMKDConfig{}); break;
      case kd::KdMethod::SSIM: mod = std::make_unique<kd::SSIMKDLoss>(ch, kd::SSIMConfig{}); break;
      case kd::KdMethod::FBKD: mod = std::make_unique<kd::FBKDLoss>(C, fb); break;
      case kd::KdMethod::AID: mod = std::make_unique<kd::AIDLoss>(C, kd::AIDConfig{fb, 0.1}); break;
      default: break;
    }
    gens.push_back(std::make_unique<Generator>(2));
    mod->init_weights(*gens.back());
    mod->to(dev);
    names.push_back(m);
    run.push_back([&, km, mod = mod.get(), gm = gens.back().get()] {
      std::vector<Var> S;
      for (const auto& s : Sx) S.emplace_back(s, true);
      kd::KdResult r;
      switch (km) {
        case kd::KdMethod::FitNet: r = static_cast<kd::FitNetLoss*>(mod)->forward(S, T); break;
        case kd::KdMethod::FGD: r = static_cast<kd::FGDLoss*>(mod)->forward(S, T, boxes, ref_hw); break;
        case kd::KdMethod::MGD: r = static_cast<kd::MGDLoss*>(mod)->forward(S, T, kd::MGDLoss::draw_rand(T, *gm)); break;
        case kd::KdMethod::AMD: r = static_cast<kd::AMDLoss*>(mod)->forward(S, T); break;
        case kd::KdMethod::DMKD: r = static_cast<kd::DMKDLoss*>(mod)->forward(S, T); break;
        case kd::KdMethod::SSIM: r = static_cast<kd::SSIMKDLoss*>(mod)->forward(S, T); break;
        case kd::KdMethod::FBKD: r = static_cast<kd::FBKDLoss*>(mod)->forward(S, T); break;
        case kd::KdMethod::AID: r = static_cast<kd::AIDLoss*>(mod)->forward(S, T, tl); break;
        default: break;
      }
      mod->zero_grad();
      r.loss.backward();
    });
    mods.push_back(std::move(mod));
  }
  for (auto& f : run) f();  // warm-up (caching allocator, page faults; cuDNN algorithm choice)
  sync();
  const size_t K = run.size();
  std::vector<std::vector<double>> t(K), frac(K);
  for (int rep = 0; rep < reps; ++rep)
    for (size_t k = 0; k < K; ++k) {
      const double a = clock_now(cpu_time);
      run[k]();
      sync();
      t[k].push_back(clock_now(cpu_time) - a);
      if (student && k > 0) frac[k].push_back(t[k].back() / t[0].back());
    }
  const char* clock = cpu_time ? "cpu" : "wall";
  if (student)
    std::printf("student step (RetinaNet-R50 loss fwd+bwd, batch %lld, %lldx%lld, on %s): %.3f s %s (median of %d)\n",
                (long long)batch, (long long)size, (long long)size, device.c_str(), median(t[0]), clock, reps);
  std::printf("%-8s %12s %10s   (%s time, %d interleaved rounds)\n", "method", "fwd+bwd ms", "of step", clock, reps);
  for (size_t k = student ? 1 : 0; k < K; ++k) {
    if (student)
      std::printf("%-8s %12.1f %9.1f%%\n", names[k].c_str(), median(t[k]) * 1e3, 100.0 * median(frac[k]));
    else
      std::printf("%-8s %12.1f %10s\n", names[k].c_str(), median(t[k]) * 1e3, "-");
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace kdet::cli
