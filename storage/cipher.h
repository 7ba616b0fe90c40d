// Encryption at rest (docs/architecture.md, "Encryption at rest"):
// AES-256-GCM through OpenSSL, for snapshot frames and append-only blocks.
// Every sealed piece carries its own random 96-bit nonce and 128-bit tag:
//
//   sealed := nonce (12) | ciphertext (as long as the plaintext) | tag (16)
//
// and is bound to where it sits (its file's header, and its frame kind,
// section and index, or its block index) through the associated data, so
// a piece moved within a file, taken from another file, or altered fails
// its tag. Each file has a random 16-byte id in its header and is sealed
// under its own key, HMAC-SHA256(key, "featurekv file key" | file id), so
// the random-nonce bound of AES-GCM (2^32 seals a key) applies per file,
// not to everything a configured key ever writes. A configured key is
// named by its id, the first 8 bytes of SHA-256("featurekv key id" | key):
// files record the id of the key that wrote them, and a reader picks that
// key from its ring.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::crypt {

inline constexpr size_t kKeyBytes = 32, kNonceBytes = 12, kTagBytes = 16, kFileIdBytes = 16;
inline constexpr size_t kOverhead = kNonceBytes + kTagBytes;

struct Key {
  std::array<uint8_t, kKeyBytes> bytes{};
  uint64_t id = 0;
};

// A key from its 32 raw bytes.
std::shared_ptr<const Key> MakeKey(std::string_view raw);
// Reads a key file: exactly 32 bytes, or 64 hexadecimal digits (what
// `openssl rand -hex 32` prints; whitespace around them is ignored).
// Returns an error text naming the file, or "".
std::string ReadKeyFile(const std::string& path, std::shared_ptr<const Key>* key);
std::string KeyIdHex(uint64_t id);
// A random file id, and the key a file with that id is sealed under.
std::string NewFileId();
std::shared_ptr<const Key> FileKey(const Key& key, std::string_view file_id);

// Appends the sealed form of `plain`, bound to `aad`, to *out. False only
// when OpenSSL fails (no randomness).
bool Seal(const Key& key, std::string_view aad, std::string_view plain, std::string* out);
// Replaces *out with the plaintext of `sealed`; false when the tag does not
// match (altered bytes, another key, another place) or `sealed` is short.
bool Open(const Key& key, std::string_view aad, std::string_view sealed, std::string* out);

// The keys a process knows: the current one (what new files are written
// with; none = files are written in the clear) and older ones, still read.
// Thread-safe.
class KeyRing {
 public:
  std::shared_ptr<const Key> current() const;
  // The key with this id (the current or an older one), or null.
  std::shared_ptr<const Key> Find(uint64_t id) const;
  // Makes `key` (null: none) the current key; the one it replaces stays
  // known for reading until the process ends.
  void SetCurrent(std::shared_ptr<const Key> key);
  // The key of snapshot-encryption-previous-key-file (null: none),
  // replacing the one set before.
  void SetPrevious(std::shared_ptr<const Key> key);
  // One more older key (featurekv-snapshot's further --key-file).
  void AddOld(std::shared_ptr<const Key> key);
  bool empty() const;
  // What a reader that found no key with `id` should say.
  std::string Missing(uint64_t id) const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Key> current_, previous_;
  std::vector<std::shared_ptr<const Key>> old_;  // replaced by SetCurrent, or added
};

}  // namespace fkv::crypt
