// AES-256-GCM for files at rest: see cipher.h.
#include "storage/cipher.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>

namespace fkv::crypt {

namespace {

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::shared_ptr<const Key> MakeKey(std::string_view raw) {
  if (raw.size() != kKeyBytes) return nullptr;
  auto k = std::make_shared<Key>();
  std::memcpy(k->bytes.data(), raw.data(), kKeyBytes);
  std::string msg = "featurekv key id";
  msg.append(raw);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_Digest(msg.data(), msg.size(), digest, &dlen, EVP_sha256(), nullptr);
  std::fill(msg.begin(), msg.end(), '\0');
  std::memcpy(&k->id, digest, 8);
  return k;
}

std::string ReadKeyFile(const std::string& path, std::shared_ptr<const Key>* key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot read the key file '" + path + "': " + std::strerror(errno);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() != kKeyBytes) {
    // 64 hex digits, whitespace around them ignored.
    auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
    size_t a = 0, b = data.size();
    while (a < b && is_space(data[a])) a++;
    while (b > a && is_space(data[b - 1])) b--;
    std::string_view hex(data.data() + a, b - a);
    if (hex.size() != 2 * kKeyBytes ||
        !std::all_of(hex.begin(), hex.end(), [](char c) { return HexDigit(c) >= 0; }))
      return "the key file '" + path + "' must hold exactly 32 bytes or 64 hexadecimal digits (it holds " +
             std::to_string(data.size()) + " bytes): make one with `openssl rand -hex 32`";
    std::string raw(kKeyBytes, '\0');
    for (size_t i = 0; i < kKeyBytes; i++)
      raw[i] = static_cast<char>(HexDigit(hex[2 * i]) * 16 + HexDigit(hex[2 * i + 1]));
    data = std::move(raw);
  }
  *key = MakeKey(data);
  std::fill(data.begin(), data.end(), '\0');
  return "";
}

std::string KeyIdHex(uint64_t id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 8; i++) {
    auto b = static_cast<uint8_t>(id >> (8 * i));  // the id's bytes in file order
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

std::string NewFileId() {
  std::string id(kFileIdBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(id.data()), static_cast<int>(id.size())) != 1) {
    // No randomness from OpenSSL: time and address still make ids distinct.
    uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    uint64_t a = reinterpret_cast<uintptr_t>(&id);
    std::memcpy(id.data(), &t, 8);
    std::memcpy(id.data() + 8, &a, 8);
  }
  return id;
}

std::shared_ptr<const Key> FileKey(const Key& key, std::string_view file_id) {
  std::string msg = "featurekv file key";
  msg.append(file_id);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  auto k = std::make_shared<Key>();
  std::memcpy(k->bytes.data(), out, kKeyBytes);
  k->id = key.id;
  std::fill(std::begin(out), std::end(out), 0);
  return k;
}

bool Seal(const Key& key, std::string_view aad, std::string_view plain, std::string* out) {
  size_t start = out->size();
  out->resize(start + kOverhead + plain.size());
  auto* nonce = reinterpret_cast<unsigned char*>(out->data() + start);
  unsigned char* ct = nonce + kNonceBytes;
  if (RAND_bytes(nonce, kNonceBytes) != 1) {
    out->resize(start);
    return false;
  }
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.bytes.data(), nonce) == 1 &&
            EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1;
  // EVP lengths are ints: feed the plaintext in pieces.
  size_t done = 0;
  while (ok && done < plain.size()) {
    int piece = static_cast<int>(std::min<size_t>(plain.size() - done, 1u << 30));
    ok = EVP_EncryptUpdate(ctx.get(), ct + done, &n, reinterpret_cast<const unsigned char*>(plain.data() + done),
                           piece) == 1;
    done += static_cast<size_t>(n);
  }
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), ct + done, &n) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, ct + plain.size()) == 1;
  if (!ok) out->resize(start);
  return ok;
}

bool Open(const Key& key, std::string_view aad, std::string_view sealed, std::string* out) {
  if (sealed.size() < kOverhead) return false;
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  const unsigned char* ct = nonce + kNonceBytes;
  size_t len = sealed.size() - kOverhead;
  unsigned char tag[kTagBytes];
  std::memcpy(tag, ct + len, kTagBytes);
  out->resize(len);
  auto* pt = reinterpret_cast<unsigned char*>(out->data());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.bytes.data(), nonce) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1;
  size_t done = 0;
  while (ok && done < len) {
    int piece = static_cast<int>(std::min<size_t>(len - done, 1u << 30));
    ok = EVP_DecryptUpdate(ctx.get(), pt + done, &n, ct + done, piece) == 1;
    done += static_cast<size_t>(n);
  }
  ok = ok && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), pt + done, &n) == 1;
  if (!ok) out->clear();
  return ok;
}

std::shared_ptr<const Key> KeyRing::current() const {
  std::lock_guard lk(mu_);
  return current_;
}

std::shared_ptr<const Key> KeyRing::Find(uint64_t id) const {
  std::lock_guard lk(mu_);
  if (current_ && current_->id == id) return current_;
  if (previous_ && previous_->id == id) return previous_;
  for (const auto& k : old_)
    if (k->id == id) return k;
  return nullptr;
}

void KeyRing::SetCurrent(std::shared_ptr<const Key> key) {
  std::lock_guard lk(mu_);
  if (current_ && (!key || key->id != current_->id)) old_.push_back(current_);
  current_ = std::move(key);
}

void KeyRing::SetPrevious(std::shared_ptr<const Key> key) {
  std::lock_guard lk(mu_);
  previous_ = std::move(key);
}

void KeyRing::AddOld(std::shared_ptr<const Key> key) {
  if (!key) return;
  std::lock_guard lk(mu_);
  old_.push_back(std::move(key));
}

bool KeyRing::empty() const {
  std::lock_guard lk(mu_);
  return !current_ && !previous_ && old_.empty();
}

std::string KeyRing::Missing(uint64_t id) const {
  std::lock_guard lk(mu_);
  std::string s = "encrypted with key " + KeyIdHex(id) + ", ";
  if (!current_ && !previous_ && old_.empty())
    return s + "but no key is configured (snapshot-encryption-key-file; featurekv-snapshot --key-file)";
  s += "which is not among the keys given (";
  if (current_) s += "current " + KeyIdHex(current_->id);
  if (previous_) s += (s.back() == '(' ? "previous " : ", previous ") + KeyIdHex(previous_->id);
  for (const auto& k : old_) s += (s.back() == '(' ? "older " : ", older ") + KeyIdHex(k->id);
  return s + "; snapshot-encryption-previous-key-file names an older key)";
}

}  // namespace fkv::crypt
