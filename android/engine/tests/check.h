// A minimal test harness (no gtest dependency, so the tests also build with a bare NDK).
#ifndef MOBDISTILL_ENGINE_TESTS_CHECK_H_
#define MOBDISTILL_ENGINE_TESTS_CHECK_H_

#include <cstdio>
#include <string>

namespace md_test {
inline int& Failures() {
  static int failures = 0;
  return failures;
}
}  // namespace md_test

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++md_test::Failures();                                                 \
    }                                                                        \
  } while (0)

#define CHECK_EQ(a, b)                                                       \
  do {                                                                       \
    if (!((a) == (b))) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s\n", __FILE__, __LINE__, #a, #b); \
      ++md_test::Failures();                                                 \
    }                                                                        \
  } while (0)

#define CHECK_CONTAINS(haystack, needle)                                     \
  do {                                                                       \
    if (std::string(haystack).find(needle) == std::string::npos) {           \
      std::fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", __FILE__, __LINE__, \
                   std::string(haystack).c_str(), std::string(needle).c_str()); \
      ++md_test::Failures();                                                 \
    }                                                                        \
  } while (0)

#define TEST_MAIN_RETURN()                                                   \
  (md_test::Failures() == 0 ? (std::printf("ok\n"), 0)                       \
                            : (std::fprintf(stderr, "%d failure(s)\n", md_test::Failures()), 1))

#endif  // MOBDISTILL_ENGINE_TESTS_CHECK_H_
