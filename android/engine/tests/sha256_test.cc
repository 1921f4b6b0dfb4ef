// FIPS 180-4 / NIST example vectors for the engine's SHA-256 (the update library's, in hex).
#include <string>

#include "check.h"
#include "digest.h"

using mobdistill::Sha256Hex;

static std::string H(const std::string& s) {
  return Sha256Hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

int main() {
  CHECK_EQ(H(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK_EQ(H("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK_EQ(H("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK_EQ(H(std::string(1000000, 'a')),
           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // 55/56/64-byte boundaries of the padding logic
  CHECK_EQ(H(std::string(55, 'x')).size(), 64u);
  CHECK(H(std::string(56, 'x')) != H(std::string(57, 'x')));
  CHECK_EQ(H(std::string(64, 'a')),
           "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  return TEST_MAIN_RETURN();
}
