// kascade/error.h — the one error path of the library.
//
// Library code never exits or aborts on bad input: it throws kascade::Error with a message
// that names the call or file, the offending value and what was expected. The CLI catches
// at the top and prints the message as one line with a non-zero exit.
//
//   KASCADE_CHECK(n > 0, "decode: context length must be positive, got " << n);
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace kascade {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace kascade

// Throws kascade::Error built from a stream expression when `cond` is false.
#define KASCADE_CHECK(cond, msg_stream)                 \
  do {                                                  \
    if (!(cond)) {                                      \
      std::ostringstream kascade_check_os_;             \
      kascade_check_os_ << msg_stream;                  \
      throw ::kascade::Error(kascade_check_os_.str());  \
    }                                                   \
  } while (0)

// Throws unconditionally (a plain throw, so the compiler sees that control ends here).
#define KASCADE_FAIL(msg_stream)                      \
  do {                                                \
    std::ostringstream kascade_fail_os_;              \
    kascade_fail_os_ << msg_stream;                   \
    throw ::kascade::Error(kascade_fail_os_.str());   \
  } while (0)
