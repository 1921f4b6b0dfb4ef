#include "check.h"
#include "params.h"

using mobdistill::Params;
using mobdistill::ParseFlags;
using mobdistill::Status;

int main() {
  {
    Params p;
    const char* argv[] = {"e", "--manifest=m.json", "--runtime_lib", "lib.so", "--jsonl=a",
                          "--summary=b", "--num_threads=4", "--use_xnnpack=false",
                          "--random_input", "--run_delay=0.5"};
    Status s = ParseFlags(10, argv, &p);
    CHECK(s.ok());
    CHECK_EQ(p.num_threads, 4);
    CHECK(!p.use_xnnpack);
    CHECK(p.random_input);
    CHECK_EQ(p.run_delay, 0.5);
    CHECK_EQ(p.runtime_lib, "lib.so");
    CHECK(p.Validate().ok());
  }
  {
    Params p;  // defaults are declared once, in Params
    CHECK_EQ(p.num_threads, 1);
    CHECK_EQ(p.warmup_runs, 1);
    CHECK_EQ(p.num_runs, 50);
    CHECK(p.use_xnnpack);
    CHECK_CONTAINS(p.Validate().message(), "--manifest");
  }
  {
    Params p;
    const char* argv[] = {"e", "--num_thread=2"};
    CHECK_CONTAINS(ParseFlags(2, argv, &p).message(), "unknown flag --num_thread");
    const char* argv2[] = {"e", "--num_runs=abc"};
    CHECK_CONTAINS(ParseFlags(2, argv2, &p).message(), "--num_runs=abc");
    const char* argv3[] = {"e", "--use_gpu=maybe"};
    CHECK_CONTAINS(ParseFlags(2, argv3, &p).message(), "true or false");
  }
  {
    Params p;
    p.manifest = "m";
    p.runtime_lib = "r";
    p.jsonl = "j";
    p.summary = "s";
    p.num_runs = 0;
    CHECK_CONTAINS(p.Validate().message(), "--num_runs");
    p.num_runs = 1;
    p.num_threads = 0;
    CHECK_CONTAINS(p.Validate().message(), "--num_threads");
    p.num_threads = -1;
    p.frames = "f";
    p.random_input = true;
    CHECK_CONTAINS(p.Validate().message(), "--random_input");
    p.random_input = false;
    p.swap_graph = "x";
    CHECK_CONTAINS(p.Validate().message(), "--swap_after_run");
    p.swap_graph.clear();
    CHECK_EQ(p.update_build_priority, std::string("idle"));  // builds at SCHED_IDLE by default
    const char* priority[] = {"engine", "--update_build_priority=sometimes"};
    CHECK(ParseFlags(2, priority, &p).ok());
    CHECK_CONTAINS(p.Validate().message(), "--update_build_priority must be idle or normal");
    p.update_build_priority = "normal";
    CHECK(p.Validate().message().find("update_build_priority") == std::string::npos);
  }
  CHECK_CONTAINS(mobdistill::Usage(), "--update_build_priority");
  CHECK_CONTAINS(mobdistill::Usage(), "--warmup_runs");
  return TEST_MAIN_RETURN();
}
