#include "qwsystem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Content hashes of files -------------------------------------------------------------
   A 128-bit non-cryptographic hash, for telling whether a file's content changed: four
   64-bit lanes each take one word of every 32-byte stripe (multiply, rotate, multiply), so
   the loop runs at memory speed; the tail and the length go through a final mix, and the
   two output words are mixes of the lanes in different orders. Not for security. */

static const uint64_t K1 = 0x9e3779b185ebca87ULL, K2 = 0xc2b2ae3d27d4eb4fULL,
                      K3 = 0x165667b19e3779f9ULL, K4 = 0x85ebca77c2b2ae63ULL;

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t read64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint64_t lane(uint64_t acc, uint64_t w) { return rotl(acc + w * K2, 31) * K1; }
static inline uint64_t avalanche(uint64_t h) {
    h ^= h >> 33; h *= K2;
    h ^= h >> 29; h *= K3;
    h ^= h >> 32;
    return h;
}

void qw_hash_init(qw_hash_state *s) {
    s->v[0] = K1 + K2;
    s->v[1] = K2;
    s->v[2] = 0;
    s->v[3] = (uint64_t)0 - K1;
    s->length = 0;
    s->pending = 0;
}

static void stripes(qw_hash_state *s, const unsigned char *p, size_t n) {
    uint64_t a = s->v[0], b = s->v[1], c = s->v[2], d = s->v[3];
    for (; n >= 32; n -= 32, p += 32) {
        a = lane(a, read64(p));
        b = lane(b, read64(p + 8));
        c = lane(c, read64(p + 16));
        d = lane(d, read64(p + 24));
    }
    s->v[0] = a; s->v[1] = b; s->v[2] = c; s->v[3] = d;
}

void qw_hash_update(qw_hash_state *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->length += n;
    if (s->pending) {
        size_t take = 32 - s->pending;
        if (take > n) take = n;
        memcpy(s->buf + s->pending, p, take);
        s->pending += take;
        p += take;
        n -= take;
        if (s->pending < 32) return;
        stripes(s, s->buf, 32);
        s->pending = 0;
    }
    size_t whole = n & ~(size_t)31;
    stripes(s, p, whole);
    p += whole;
    n -= whole;
    if (n) {
        memcpy(s->buf, p, n);
        s->pending = n;
    }
}

void qw_hash_final(const qw_hash_state *s, uint64_t out[2]) {
    uint64_t a = s->v[0], b = s->v[1], c = s->v[2], d = s->v[3];
    uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18) + s->length * K4;
    uint64_t g = rotl(d, 3) ^ rotl(c, 11) ^ rotl(b, 19) ^ rotl(a, 27) ^ (s->length * K3);
    const unsigned char *p = s->buf;
    size_t n = s->pending;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w = read64(p);
        h = rotl(h ^ lane(0, w), 27) * K1 + K4;
        g = rotl(g ^ lane(K3, w), 23) * K2 + K1;
    }
    for (; n > 0; n--, p++) {
        h = rotl(h ^ (*p * K4), 11) * K1;
        g = rotl(g ^ (*p * K1), 13) * K3;
    }
    out[0] = avalanche(h ^ avalanche(g));
    out[1] = avalanche(g + out[0] * K2);
}

int qw_hash_file(const char *path, uint64_t out[2]) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return errno;
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    enum { CHUNK = 256 * 1024 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) { close(fd); return ENOMEM; }
    qw_hash_state s;
    qw_hash_init(&s);
    int err = 0;
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n > 0) { qw_hash_update(&s, buf, (size_t)n); continue; }
        if (n == 0) break;
        if (errno == EINTR) continue;
        err = errno;
        break;
    }
    free(buf);
    close(fd);
    if (!err) qw_hash_final(&s, out);
    return err;
}
