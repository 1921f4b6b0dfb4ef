// Status: the one error type of the engine. Nothing throws across module, C API or JNI
// boundaries; every fallible step returns a Status, passed up with MD_RETURN_IF_ERROR.
#ifndef MOBDISTILL_ENGINE_STATUS_H_
#define MOBDISTILL_ENGINE_STATUS_H_

#include <string>
#include <utility>

namespace mobdistill {

class Status {
 public:
  Status() = default;  // ok
  static Status Ok() { return Status(); }
  // `reason`: a stable name for programs ("bad_hmac", "replay", ...), empty when a message is
  // all there is. The update library's failures keep their status name here (see
  // update_manager.cc), so UpdateRecord.reason and Python's UpdateError.status read the same.
  static Status Error(std::string message, std::string reason = "") {
    return Status(std::move(message), std::move(reason));
  }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }
  const std::string& reason() const { return reason_; }

 private:
  Status(std::string message, std::string reason)
      : failed_(true), message_(std::move(message)), reason_(std::move(reason)) {}
  bool failed_ = false;
  std::string message_;
  std::string reason_;
};

}  // namespace mobdistill

// Evaluates `expr` (a Status) once and returns it from the calling function if it failed.
#define MD_RETURN_IF_ERROR(expr)                              \
  do {                                                        \
    ::mobdistill::Status md_status_ = (expr);                 \
    if (!md_status_.ok()) return md_status_;                  \
  } while (0)

#endif  // MOBDISTILL_ENGINE_STATUS_H_
