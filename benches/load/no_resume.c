/*
 * LD_PRELOAD shim for the full-handshake scenario of compare.sh.
 *
 * wrk and h2load reuse one SSL object per connection slot and call SSL_clear() between
 * connections; OpenSSL keeps the last session across SSL_clear(), so every reconnect offers it
 * (a TLS 1.3 ticket) and both Portcullis and nginx resume instead of doing a full handshake.
 * Neither tool has an option against that, and a server-side switch would differ between the two
 * proxies. Dropping the session right after SSL_clear() makes every connection a full handshake
 * (compare.sh checks that in nginx's $ssl_session_reused).
 *
 * Build: cc -shared -fPIC -O2 -o no_resume.so no_resume.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

/*
 * Both functions are looked up at run time, so the shim links against nothing and can be
 * preloaded into helpers without libssl (taskset) as well.
 */
int SSL_clear(SSL *ssl) {
    static int (*real_clear)(SSL *) = NULL;
    static int (*set_session)(SSL *, SSL_SESSION *) = NULL;
    if (real_clear == NULL) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_DEFAULT, "SSL_set_session");
    }
    int ok = real_clear(ssl);
    /* Forget the session SSL_clear() kept, so the next handshake offers nothing to resume. */
    if (set_session != NULL) {
        set_session(ssl, NULL);
    }
    return ok;
}
