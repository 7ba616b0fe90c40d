// TLS contexts: see tls.h.
#include "server/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <sstream>

#include "server/config.h"

namespace fkv {

TlsSettings TlsSettings::From(const Config& c) {
  TlsSettings s;
  s.cert_file = c.GetString("tls-cert-file");
  s.key_file = c.GetString("tls-key-file");
  s.ca_cert_file = c.GetString("tls-ca-cert-file");
  s.auth_clients = c.GetString("tls-auth-clients");
  s.protocols = c.GetString("tls-protocols");
  s.ciphers = c.GetString("tls-ciphers");
  s.ciphersuites = c.GetString("tls-ciphersuites");
  return s;
}

namespace {
std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}
}  // namespace

std::shared_ptr<boost::asio::ssl::context> MakeTlsContext(const TlsSettings& s, std::string* error) {
  namespace ssl = boost::asio::ssl;
  if (s.cert_file.empty() || s.key_file.empty()) {
    *error = "tls-cert-file and tls-key-file are required for TLS";
    return nullptr;
  }
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  // Protocols: TLS 1.2 and 1.3 unless tls-protocols names others (as Redis).
  bool v12 = s.protocols.empty(), v13 = s.protocols.empty();
  std::istringstream in(s.protocols);
  for (std::string p; in >> p;) {
    if (p == "TLSv1.2") v12 = true;
    else if (p == "TLSv1.3") v13 = true;
    else if (p != "TLSv1" && p != "TLSv1.1") {
      *error = "tls-protocols: unknown protocol '" + p + "' (TLSv1.2, TLSv1.3)";
      return nullptr;
    }
  }
  if (!v12 && !v13) {
    *error = "tls-protocols: TLSv1 and TLSv1.1 are not supported; use TLSv1.2 or TLSv1.3";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(native, v12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(native, v13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);  // idle connections give their buffers back
  if (SSL_CTX_use_certificate_chain_file(native, s.cert_file.c_str()) != 1) {
    *error = "tls-cert-file '" + s.cert_file + "': " + OpenSslError();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(native, s.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    *error = "tls-key-file '" + s.key_file + "': " + OpenSslError();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    *error = "tls-key-file does not match tls-cert-file: " + OpenSslError();
    return nullptr;
  }
  if (!s.ca_cert_file.empty() && SSL_CTX_load_verify_locations(native, s.ca_cert_file.c_str(), nullptr) != 1) {
    *error = "tls-ca-cert-file '" + s.ca_cert_file + "': " + OpenSslError();
    return nullptr;
  }
  if (s.auth_clients != "no" && s.ca_cert_file.empty()) {
    *error = "tls-auth-clients " + s.auth_clients + " needs tls-ca-cert-file (the CA that signs client certificates)";
    return nullptr;
  }
  if (!s.ciphers.empty() && SSL_CTX_set_cipher_list(native, s.ciphers.c_str()) != 1) {
    *error = "tls-ciphers '" + s.ciphers + "': " + OpenSslError();
    return nullptr;
  }
  if (!s.ciphersuites.empty() && SSL_CTX_set_ciphersuites(native, s.ciphersuites.c_str()) != 1) {
    *error = "tls-ciphersuites '" + s.ciphersuites + "': " + OpenSslError();
    return nullptr;
  }
  int mode = SSL_VERIFY_NONE;
  if (s.auth_clients == "yes") mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  else if (s.auth_clients == "optional") mode = SSL_VERIFY_PEER;
  SSL_CTX_set_verify(native, mode, nullptr);
  return ctx;
}

}  // namespace fkv
