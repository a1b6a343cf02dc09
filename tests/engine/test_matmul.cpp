#include <doctest/doctest.h>

#include "engine/gemm.h"
#include "engine/ops/matmul.h"
#include "engine/random.h"
#include "tests/gradcheck.h"

using namespace kdet;
using namespace kdet::test;

TEST_CASE("sgemm: all transposes, edge sizes, alpha/beta, strided ldc vs a double reference") {
  Generator g(3);
  const int sizes[][3] = {{1, 1, 1}, {13, 31, 5}, {12, 32, 256}, {50, 77, 300}, {37, 200, 513}, {130, 70, 9}, {300, 129, 64}};
  for (auto& sz : sizes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t M = sz[0], N = sz[1], K = sz[2], ldc = N + 3;
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(ta);
        CAPTURE(tb);
        auto A = rand_normal({M * K}, g).to_vector<float>(), B = rand_normal({K * N}, g).to_vector<float>();
        auto C = rand_normal({M * ldc}, g).to_vector<float>();
        std::vector<float> C0 = C;
        const int64_t lda = ta ? M : K, ldb = tb ? K : N;
        for (float beta : {0.f, 0.5f}) {
          C = C0;
          sgemm(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          double worst = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              double ref = C0[i * ldc + j];
              if (j < N) {
                double s = 0;
                for (int64_t k = 0; k < K; ++k)
                  s += double(ta ? A[k * lda + i] : A[i * lda + k]) * double(tb ? B[j * ldb + k] : B[k * ldb + j]);
                ref = 1.5 * s + beta * C0[i * ldc + j];
              }
              worst = std::max(worst, std::abs(ref - C[i * ldc + j]) / (1.0 + std::abs(ref)));
            }
          CHECK(worst < 1e-4);  // and padding columns j >= N untouched (ref = C0 there)
        }
      }
}

TEST_CASE("matmul/linear: gradcheck f64") {
  CHECK(gradcheck([](const std::vector<Var>& v) { return matmul(v[0], v[1]); }, {rnd({3, 4}, 1), rnd({4, 5}, 2)}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return matmul(v[0], v[1]); }, {rnd({2, 3, 4}, 3), rnd({2, 4, 2}, 4)}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
                  {rnd({2, 3, 4}, 5), rnd({6, 4}, 6), rnd({6}, 7)}));
  CHECK(gradcheck([](const std::vector<Var>& v) { return linear(v[0], v[1], Var()); }, {rnd({5, 4}, 8), rnd({3, 4}, 9)}));
}

TEST_CASE("matmul/linear: f32 matches f64, values match a hand computation") {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1}, {3, 2});
  CHECK(ops::matmul(a, b).to_vector<double>() == std::vector<double>{4, 5, 10, 11});
  Tensor w = Tensor::from_vector(std::vector<double>{1, 1, 1, 0, 0, 2}, {2, 3});
  Tensor bias = Tensor::from_vector(std::vector<double>{10, 20}, {2});
  CHECK(ops::linear(a, w, bias).to_vector<double>() == std::vector<double>{16, 26, 25, 32});
  Generator g(11);
  Tensor x64 = rand_normal({3, 70, 300}, g, 0, 1, DType::F64), w64 = rand_normal({90, 300}, g, 0, 1, DType::F64);
  Tensor b64 = rand_normal({90}, g, 0, 1, DType::F64);
  check_close(ops::linear(x64.to(DType::F32), w64.to(DType::F32), b64.to(DType::F32)), ops::linear(x64, w64, b64),
              1e-4, 1e-3, "linear f32 vs f64");
  Tensor m64 = rand_normal({3, 300, 40}, g, 0, 1, DType::F64);
  check_close(ops::matmul(x64.to(DType::F32), m64.to(DType::F32)), ops::matmul(x64, m64), 1e-4, 1e-3,
              "batched matmul f32 vs f64");
  CHECK_THROWS_WITH_AS(ops::matmul(a, a), doctest::Contains("matmul: inner dimensions differ"), Error);
  CHECK_THROWS_WITH_AS(ops::linear(a, b, Tensor()), doctest::Contains("linear: input"), Error);
}
