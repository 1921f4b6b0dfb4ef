// Empty translation unit of the host-only shared library `mobdistill_facade_host`: the facade
// (facade.cc) comes whole from mobdistill_engine_core, so tests can call md_engine_* via ctypes.
#include "mobdistill_engine/engine_facade.h"
