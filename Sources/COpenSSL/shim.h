#ifndef FEDMIX_COPENSSL_SHIM_H
#define FEDMIX_COPENSSL_SHIM_H
/* OpenSSL 3 for the Protocol module. Function-like macros do not import into
 * Swift, so each one the module needs is wrapped below in a small
 * `static inline` function with a `fedmix_` prefix. Deprecated APIs are
 * hidden so that nothing in Swift can call them by accident. */
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED 1
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/bio.h>
#include <openssl/asn1.h>

/* ---- SSL_CTX / SSL configuration (macros in ssl.h) ---- */

static inline int fedmix_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

/* Options every fedmix context gets: no session resumption (each connection
 * verifies the peer's certificate afresh, which also makes certificate
 * rotation take effect at once), no renegotiation, no compression. Read
 * ahead: a record is read in one read(2), not its 5-byte header and then
 * its body (two system calls per message otherwise). Every read after the
 * handshake is a blocking SSL_read, never gated on poll(2) of the socket,
 * so data OpenSSL holds ahead is never waited for. */
static inline void fedmix_SSL_CTX_harden(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION
                             | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_read_ahead(ctx, 1);
}

static inline int fedmix_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

static inline int fedmix_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

/* ---- error queue (static inline in err.h; wrapped to be safe) ---- */

static inline int fedmix_ERR_GET_LIB(unsigned long code) { return ERR_GET_LIB(code); }
static inline int fedmix_ERR_GET_REASON(unsigned long code) { return ERR_GET_REASON(code); }

/* ---- memory and BIO helpers (macros) ---- */

static inline void fedmix_OPENSSL_free(void *p) { OPENSSL_free(p); }

static inline long fedmix_BIO_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

/* ---- keys ---- */

/* A fresh P-256 key (EVP_EC_gen is a macro over a variadic function). */
static inline EVP_PKEY *fedmix_EVP_EC_gen_P256(void) { return EVP_EC_gen("P-256"); }

/* A password callback that refuses: an encrypted key must fail to load with
 * an error instead of OpenSSL prompting on the terminal. */
static inline int fedmix_refuse_password(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

static inline EVP_PKEY *fedmix_PEM_read_private_key(BIO *bio) {
    return PEM_read_bio_PrivateKey(bio, NULL, fedmix_refuse_password, NULL);
}

static inline X509 *fedmix_PEM_read_X509(BIO *bio) {
    return PEM_read_bio_X509(bio, NULL, fedmix_refuse_password, NULL);
}

/* ---- subjectAltName access (stack macros, union member) ---- */

static inline int fedmix_GENERAL_NAMES_count(const GENERAL_NAMES *names) {
    return sk_GENERAL_NAME_num(names);
}

static inline const GENERAL_NAME *fedmix_GENERAL_NAMES_at(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}

static inline int fedmix_GENERAL_NAME_type(const GENERAL_NAME *name) { return name->type; }

/* The string payload of a DNS, e-mail, URI or IP-address name (IP addresses
 * are 4 or 16 raw bytes); NULL for other kinds. */
static inline const ASN1_STRING *fedmix_GENERAL_NAME_string(const GENERAL_NAME *name) {
    switch (name->type) {
    case GEN_DNS: return name->d.dNSName;
    case GEN_EMAIL: return name->d.rfc822Name;
    case GEN_URI: return name->d.uniformResourceIdentifier;
    case GEN_IPADD: return name->d.iPAddress;
    default: return NULL;
    }
}

/* ---- certificate extensions ---- */

/* Adds one extension written in openssl.cnf syntax (e.g. "critical,CA:FALSE")
 * to `cert`; `issuer` is needed for authorityKeyIdentifier. 1 on success. */
static inline int fedmix_X509_add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* ---- names and constants built from macro expressions ---- */

static inline int fedmix_MBSTRING_UTF8(void) { return MBSTRING_UTF8; }

/* Prints a distinguished name in RFC 2253 form ("CN=site-a,O=..."). */
static inline int fedmix_X509_NAME_print_rfc2253(BIO *bio, const X509_NAME *name) {
    return X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
}

/* Adds an extra certificate (an intermediate CA) to the context's chain. */
static inline int fedmix_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *cert) {
    return (int)SSL_CTX_add1_chain_cert(ctx, cert);
}

#endif
