/*
 * migbench guest memory writer: dirties a working set at a controlled rate
 * and checks every page's stamp before rewriting it (continuous integrity
 * check). Speaks the "@mb" line protocol on stdout; see workloads/README.md.
 *
 * Build: gcc -O2 -static -pthread -o writer writer.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define STAMP_MAGIC 0x574d424du /* "MBMW" little endian */
#define MAX_REPORTED_BAD 10
#define MAX_DEBT_NS 50000000LL /* pacing never tries to catch up more than 50 ms */
#define SPARSE_BYTES 8

enum pattern { PAT_ZERO, PAT_TEXT, PAT_RANDOM, PAT_SPARSE };
static const char *const pattern_names[] = {"zero", "text", "random", "sparse"};

struct stamp {
    uint32_t magic;
    uint32_t index;
    uint64_t gen;
};

struct worker {
    pthread_t tid;
    size_t first, end; /* owned page range [first, end) */
    uint64_t rng;
    double rate_bps;                  /* target bytes/s for this thread, 0 = unpaced */
    _Atomic uint64_t bytes;           /* bytes written since start (after fill) */
    _Atomic uint64_t stall_ns;        /* longest unintended gap in this interval */
    char pad[64];
};

static size_t page_size;
static size_t npages;
static unsigned char *mem;
static uint64_t *expected; /* expected generation per page */
static enum pattern pat;
static int nthreads;
static struct worker *workers;

static _Atomic uint64_t bad_total;
static _Atomic int pause_req;
static _Atomic int paused_count;
static pthread_mutex_t pause_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static inline uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Pseudo-English: words of 1..7 letters; each slot stores the word followed
 * by a space, padded to 8 bytes so that one unaligned 8-byte store writes it. */
static const char *const words[64] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was",
    "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from",
    "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more",
    "when", "will", "would", "who", "so", "no", "memory", "page", "guest",
    "host", "dirty", "rate", "migrate", "copy", "time", "network", "data",
    "block", "state", "device", "vm",
};
static uint64_t word_slot[64];
static unsigned word_len[64]; /* including the trailing space */

static void init_words(void)
{
    for (int i = 0; i < 64; i++) {
        char buf[8] = {0};
        size_t n = strlen(words[i]);
        memcpy(buf, words[i], n);
        buf[n] = ' ';
        memcpy(&word_slot[i], buf, 8);
        word_len[i] = (unsigned)n + 1;
    }
}

static void fill_text(unsigned char *p, size_t len, uint64_t *rng)
{
    size_t off = 0;
    while (off + 8 <= len) {
        uint64_t r = xorshift64(rng);
        for (int k = 0; k < 8 && off + 8 <= len; k++) {
            unsigned w = (unsigned)(r >> (k * 6)) & 63;
            memcpy(p + off, &word_slot[w], 8);
            off += word_len[w];
        }
    }
    while (off < len)
        p[off++] = ' ';
}

static void fill_random(unsigned char *p, size_t len, uint64_t *rng)
{
    uint64_t *q = (uint64_t *)p;
    for (size_t i = 0; i < len / 8; i++)
        q[i] = xorshift64(rng);
}

static int page_is_zero(const unsigned char *p)
{
    const uint64_t *q = (const uint64_t *)p;
    for (size_t i = 0; i < page_size / 8; i++)
        if (q[i])
            return 0;
    return 1;
}

/* Returns the generation found in the page, and whether it matches. */
static int page_ok(size_t i, uint64_t *got)
{
    const unsigned char *p = mem + i * page_size;
    if (pat == PAT_ZERO) {
        *got = 0;
        return page_is_zero(p);
    }
    struct stamp s;
    memcpy(&s, p, sizeof s);
    *got = s.gen;
    return s.magic == STAMP_MAGIC && s.index == (uint32_t)i && s.gen == expected[i];
}

static void write_page(size_t i, uint64_t gen, uint64_t *rng, int initial)
{
    unsigned char *p = mem + i * page_size;
    if (pat == PAT_ZERO) {
        memset(p, 0, page_size);
        return;
    }
    struct stamp s = {STAMP_MAGIC, (uint32_t)i, gen};
    switch (pat) {
    case PAT_TEXT:
        fill_text(p + sizeof s, page_size - sizeof s, rng);
        break;
    case PAT_RANDOM:
        fill_random(p + sizeof s, page_size - sizeof s, rng);
        break;
    case PAT_SPARSE:
        if (initial) {
            fill_random(p + sizeof s, page_size - sizeof s, rng);
        } else {
            uint64_t r = xorshift64(rng);
            size_t span = page_size - sizeof s - SPARSE_BYTES;
            size_t off = sizeof s + (size_t)(r % span);
            uint64_t v = xorshift64(rng);
            memcpy(p + off, &v, SPARSE_BYTES);
        }
        break;
    default:
        break;
    }
    memcpy(p, &s, sizeof s);
}

static void check_then_write(size_t i, uint64_t *rng)
{
    uint64_t got;
    if (!page_ok(i, &got)) {
        uint64_t n = atomic_fetch_add(&bad_total, 1) + 1;
        if (n <= MAX_REPORTED_BAD)
            say("@mb writer-bad page=%zu expected=%llu got=%llu", i,
                (unsigned long long)(pat == PAT_ZERO ? 0 : expected[i]),
                (unsigned long long)got);
    }
    uint64_t gen = expected[i] + 1;
    write_page(i, gen, rng, 0);
    expected[i] = gen;
}

/* Park here while the verifier runs; returns 1 if we did park. */
static int maybe_pause(void)
{
    if (!atomic_load_explicit(&pause_req, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&pause_mu);
    atomic_fetch_add(&paused_count, 1);
    pthread_cond_broadcast(&pause_cv);
    while (atomic_load(&pause_req))
        pthread_cond_wait(&pause_cv, &pause_mu);
    atomic_fetch_sub(&paused_count, 1);
    pthread_mutex_unlock(&pause_mu);
    return 1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    size_t n = w->end - w->first;
    size_t batch = 64;
    double ns_per_page = 0;
    if (w->rate_bps > 0) {
        double pps = w->rate_bps / (double)page_size;
        ns_per_page = 1e9 / pps;
        /* about one sleep per millisecond */
        batch = (size_t)(pps / 1000.0);
        if (batch < 1)
            batch = 1;
        if (batch > 64)
            batch = 64;
    }
    size_t cur = 0;
    int64_t last = now_ns();
    int64_t intended = 0; /* pacing sleep requested since the last page write */
    double next = (double)last; /* scheduled start of the next batch */
    for (;;) {
        if (maybe_pause()) {
            last = now_ns();
            intended = 0;
            next = (double)last;
        }
        for (size_t b = 0; b < batch; b++) {
            check_then_write(w->first + cur, &w->rng);
            if (++cur == n)
                cur = 0;
            int64_t t = now_ns();
            int64_t gap = t - last - intended;
            intended = 0;
            last = t;
            if (gap > 0 && (uint64_t)gap > atomic_load_explicit(&w->stall_ns, memory_order_relaxed))
                atomic_store_explicit(&w->stall_ns, (uint64_t)gap, memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&w->bytes, batch * page_size, memory_order_relaxed);
        if (ns_per_page > 0) {
            next += ns_per_page * (double)batch;
            int64_t t = now_ns();
            if (next > (double)t) {
                intended = (int64_t)next - t;
                sleep_until((int64_t)next);
            } else if ((double)t - next > (double)MAX_DEBT_NS) {
                next = (double)(t - MAX_DEBT_NS);
            }
        }
    }
    return NULL;
}

static void pause_all(void)
{
    pthread_mutex_lock(&pause_mu);
    atomic_store(&pause_req, 1);
    while (atomic_load(&paused_count) < nthreads)
        pthread_cond_wait(&pause_cv, &pause_mu);
    pthread_mutex_unlock(&pause_mu);
}

static void resume_all(void)
{
    pthread_mutex_lock(&pause_mu);
    atomic_store(&pause_req, 0);
    pthread_cond_broadcast(&pause_cv);
    pthread_mutex_unlock(&pause_mu);
}

/* Test hook: damage one page the way a lost dirty page would look (stale stamp). */
static void do_corrupt(const char *arg)
{
    char *end;
    unsigned long long i = strtoull(arg, &end, 10);
    if (end == arg || *end || i >= npages) {
        say("@mb error msg=corrupt-needs-a-page-index-below-%zu", npages);
        return;
    }
    pause_all();
    unsigned char *p = mem + i * page_size;
    if (pat == PAT_ZERO) {
        p[page_size / 2] = 0xa5;
    } else {
        struct stamp s;
        memcpy(&s, p, sizeof s);
        s.gen -= 1;
        memcpy(p, &s, sizeof s);
    }
    say("@mb corrupted page=%llu", i);
    resume_all();
}

static void do_verify(void)
{
    pause_all();

    uint64_t bad = 0;
    for (size_t i = 0; i < npages; i++) {
        uint64_t got;
        if (!page_ok(i, &got))
            bad++;
    }
    say("@mb verify pages=%zu bad=%llu", npages, (unsigned long long)bad);
    resume_all();
}

/* Line commands on stdin; accepts \n, \r or \r\n line ends (raw serial). */
static void *stdin_main(void *arg)
{
    (void)arg;
    char line[128];
    size_t len = 0;
    for (;;) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r == 0)
            return NULL;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        if (c == '\n' || c == '\r') {
            line[len] = 0;
            if (strcmp(line, "verify") == 0)
                do_verify();
            else if (strncmp(line, "corrupt ", 8) == 0)
                do_corrupt(line + 8);
            else if (len > 0)
                say("@mb error msg=unknown-command");
            len = 0;
        } else if (len + 1 < sizeof line) {
            line[len++] = c;
        }
    }
}

static int usage_error(const char *msg)
{
    say("@mb error msg=%s", msg);
    return 2;
}

static int parse_num(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double ws_mib = 64, rate_mib = 0, threads = 0, interval_ms = 100;
    const char *pattern = "text";
    static const struct option opts[] = {
        {"ws-mib", required_argument, NULL, 'w'},
        {"rate-mib", required_argument, NULL, 'r'},
        {"pattern", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"interval-ms", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            if (parse_num(optarg, &ws_mib) || ws_mib <= 0)
                return usage_error("ws-mib-must-be-positive");
            break;
        case 'r':
            if (parse_num(optarg, &rate_mib) || rate_mib < 0)
                return usage_error("rate-mib-must-be-non-negative");
            break;
        case 'p':
            pattern = optarg;
            break;
        case 't':
            if (parse_num(optarg, &threads) || threads < 1 || threads != (int)threads)
                return usage_error("threads-must-be-a-positive-integer");
            break;
        case 'i':
            if (parse_num(optarg, &interval_ms) || interval_ms < 10)
                return usage_error("interval-ms-must-be-at-least-10");
            break;
        default:
            return usage_error("unknown-option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected-argument");
    int found = 0;
    for (int i = 0; i < 4; i++)
        if (strcmp(pattern, pattern_names[i]) == 0) {
            pat = (enum pattern)i;
            found = 1;
        }
    if (!found)
        return usage_error("pattern-must-be-zero|text|random|sparse");

    page_size = (size_t)sysconf(_SC_PAGESIZE);
    npages = (size_t)(ws_mib * 1024 * 1024) / page_size;
    if (npages == 0)
        return usage_error("ws-mib-smaller-than-a-page");
    if (npages > UINT32_MAX)
        return usage_error("ws-mib-too-large");
    nthreads = threads > 0 ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1)
        nthreads = 1;
    if ((size_t)nthreads > npages)
        nthreads = (int)npages;

    mem = mmap(NULL, npages * page_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    expected = calloc(npages, sizeof *expected);
    workers = calloc((size_t)nthreads, sizeof *workers);
    if (mem == MAP_FAILED || !expected || !workers)
        return usage_error("out-of-memory");
    init_words();

    int64_t t0 = now_ns();
    for (int k = 0; k < nthreads; k++) {
        struct worker *w = &workers[k];
        w->first = npages * (size_t)k / (size_t)nthreads;
        w->end = npages * (size_t)(k + 1) / (size_t)nthreads;
        w->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(k + 1) * 0xbf58476d1ce4e5b9ULL) ^ (uint64_t)t0;
        if (!w->rng)
            w->rng = 1;
        w->rate_bps = rate_mib * 1024.0 * 1024.0 / nthreads;
        /* initial fill: generation 1 everywhere */
        for (size_t i = w->first; i < w->end; i++) {
            write_page(i, 1, &w->rng, 1);
            expected[i] = 1;
        }
    }
    say("@mb writer-ready pages=%zu threads=%d pattern=%s", npages, nthreads, pattern);

    for (int k = 0; k < nthreads; k++)
        if (pthread_create(&workers[k].tid, NULL, worker_main, &workers[k]))
            return usage_error("pthread_create-failed");
    pthread_t in_tid;
    if (pthread_create(&in_tid, NULL, stdin_main, NULL))
        return usage_error("pthread_create-failed");

    int64_t interval = (int64_t)(interval_ms * 1e6);
    int64_t prev_t = now_ns(), next = prev_t + interval;
    uint64_t prev_bytes = 0, max_stall = 0, seq = 0;
    for (;;) {
        sleep_until(next);
        next += interval;
        int64_t t = now_ns();
        if (next <= t) /* we were descheduled for a long time: do not burst */
            next = t + interval;
        uint64_t bytes = 0, stall = 0;
        for (int k = 0; k < nthreads; k++) {
            bytes += atomic_load_explicit(&workers[k].bytes, memory_order_relaxed);
            uint64_t s = atomic_exchange_explicit(&workers[k].stall_ns, 0, memory_order_relaxed);
            if (s > stall)
                stall = s;
        }
        if (stall > max_stall)
            max_stall = stall;
        double dt = (double)(t - prev_t) / 1e9;
        double rate = dt > 0 ? (double)(bytes - prev_bytes) / dt / (1024.0 * 1024.0) : 0;
        say("@mb writer t=%.3f seq=%llu rate=%.2f stall_ms=%.1f max_stall_ms=%.1f passes=%llu bad=%llu",
            (double)t / 1e9, (unsigned long long)seq++, rate, (double)stall / 1e6,
            (double)max_stall / 1e6, (unsigned long long)(bytes / page_size / npages),
            (unsigned long long)atomic_load(&bad_total));
        prev_t = t;
        prev_bytes = bytes;
    }
}
