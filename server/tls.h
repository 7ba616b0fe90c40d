// TLS for client connections (docs/operations.md, "TLS"): OpenSSL through
// Boost.Asio's ssl::stream over the connection's own socket. A context is
// built from the tls-* directives at start and again on CONFIG SET of any
// of them; a connection keeps the context it was accepted with.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl.hpp>

namespace fkv {

class Config;

struct TlsSettings {
  std::string cert_file, key_file, ca_cert_file;
  std::string auth_clients = "yes";  // yes | no | optional
  std::string protocols;             // "TLSv1.2 TLSv1.3"; empty = both
  std::string ciphers, ciphersuites;
  static TlsSettings From(const Config& c);
};

// A server context, or nullptr and *error.
std::shared_ptr<boost::asio::ssl::context> MakeTlsContext(const TlsSettings& s, std::string* error);

}  // namespace fkv
