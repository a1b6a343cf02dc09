// distill/kd_check.h — the golden-file checker behind `kdet kd-check` (specs/kd_golden_format.md §5–6).
//
// For one kdgold-1 file: build the method's loss module from the file's shapes and hp.* entries (no
// defaults: a missing or unconsumed hp.* / in.* key is a failure), load every param.* tensor (the key
// set must equal the module's parameters + buffers one to one), run forward in float64 with BN in
// training mode and teacher features constant, backpropagate out.loss once, and compare every out.*,
// grad.* and mid.* tensor of the file under the tolerance rule
//   max|a − b| ≤ rtol_f · max( max|b|, φ_f · S_f ),  S_f = largest max|b| of family f in the file,
//   (rtol, φ) = out (1e-9, 1e-9), grad (1e-8, 1e-5), mid (1e-9, 1e-9); every a finite, shapes equal.
// A missing or extra out.* / grad.* key fails; a mid.* key the engine cannot produce is listed as skipped.
//
// Float32 smoke mode (KdCheckOptions::dtype = F32): inputs and parameters are converted to f32 (box
// coordinates and ref_hw stay f64) and the engine's f32 path is compared under loose limits
// (rtol out/mid 1e-4, grad 1e-3; φ = 1e-3 for all families). The kdgold-1 tolerances are for float64 only (§6); the f32
// limits are this engine's choice, for catching f32-only breakage, not an exactness claim.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "distill/kd_golden.h"

namespace kdet::kd {

struct KdTolerance {
  double rtol, phi;
};
// For family "out", "grad" or "mid" (and the dtype of the run: F64 = the format's rule).
KdTolerance kd_tolerance(const std::string& family, DType dtype = DType::F64);

struct KdCheckOptions {
  DType dtype = DType::F64;
};

struct KdKeyCheck {
  std::string key;
  double max_abs_err = 0;  // max |a − b|
  double scale = 0;        // max(max|b|, φ·S_f)
  double rtol = 0;
  bool pass = false;
  std::string note;        // why it failed (shape, non-finite), empty otherwise
  double rel_err() const { return scale > 0 ? max_abs_err / scale : (max_abs_err > 0 ? INFINITY : 0.0); }
};

struct KdCheckReport {
  std::string path, method, case_name;
  std::vector<KdKeyCheck> keys;       // every compared key, in key order
  std::vector<std::string> errors;    // malformed file, missing/extra/unconsumed keys, engine errors
  std::vector<std::string> skipped;   // mid.* keys the engine does not produce
  bool ok() const;
  double worst_ratio() const;         // max over keys of rel_err / rtol (1 = at the tolerance)
};

// Never throws for a bad file or an engine error: the reason is recorded in errors.
KdCheckReport kd_check_file(const std::string& path, const KdCheckOptions& opts = {});
KdCheckReport kd_check(const KdGolden& golden, const KdCheckOptions& opts = {});

}  // namespace kdet::kd
