/*
 * migbench fio monitor: runs fio with --output-format=json+ --status-interval=1,
 * reads its cumulative JSON status objects from a pipe and prints one compact
 * "@mb fio" line per status: IOPS and completion-latency percentiles of the
 * interval since the previous status (from the difference of fio's cumulative
 * clat histograms). The raw JSON (~13 KB/s) never reaches the serial console.
 *
 * Usage: fiomon /bin/fio [fio options...]
 * Also:  fiomon --parse < fio-json-stream   (no fio; used by the harness's tests)
 *
 * Build: gcc -O2 -static -o fiomon fiomon.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BINS 4096
#define MAX_OBJ (4 << 20)

struct hist {
    int n;
    uint64_t ns[MAX_BINS];
    uint64_t count[MAX_BINS];
};

struct dir_state {
    uint64_t ios;
    struct hist bins;
};

static struct dir_state prev[2], cur[2];
static int64_t prev_ms = -1;
static long seq;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Value of the number after "key" : in [p, end); -1 if absent. */
static int64_t find_num(const char *p, const char *end, const char *key)
{
    size_t kl = strlen(key);
    for (const char *q = p; q && q < end; q++) {
        q = memmem(q, (size_t)(end - q), key, kl);
        if (!q)
            return -1;
        const char *r = q + kl;
        while (r < end && (*r == ' ' || *r == ':'))
            r++;
        if (r < end && (*r == '-' || (*r >= '0' && *r <= '9')))
            return strtoll(r, NULL, 10);
    }
    return -1;
}

/* End of the JSON object that starts at '{' *p (strings respected), or NULL. */
static const char *object_end(const char *p, const char *end)
{
    int depth = 0, in_str = 0;
    for (const char *q = p; q < end; q++) {
        char c = *q;
        if (in_str) {
            if (c == '\\')
                q++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{') {
            depth++;
        } else if (c == '}') {
            if (--depth == 0)
                return q + 1;
        }
    }
    return NULL;
}

/* "name" : { ... } inside [p, end): the object's bounds. */
static int find_object(const char *p, const char *end, const char *name, const char **ob,
                       const char **oe)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", name);
    size_t kl = strlen(key);
    const char *q = p;
    while ((q = memmem(q, (size_t)(end - q), key, kl)) != NULL) {
        const char *r = q + kl;
        while (r < end && (*r == ' ' || *r == ':' || *r == '\n'))
            r++;
        if (r < end && *r == '{') {
            const char *e = object_end(r, end);
            if (!e)
                return 0;
            *ob = r;
            *oe = e;
            return 1;
        }
        q += kl;
    }
    return 0;
}

static void parse_bins(const char *p, const char *end, struct hist *h)
{
    h->n = 0;
    const char *q = p + 1;
    while (q < end && h->n < MAX_BINS) {
        const char *k = memchr(q, '"', (size_t)(end - q));
        if (!k)
            break;
        uint64_t ns = strtoull(k + 1, (char **)&q, 10);
        const char *colon = memchr(q, ':', (size_t)(end - q));
        if (!colon)
            break;
        uint64_t c = strtoull(colon + 1, (char **)&q, 10);
        h->ns[h->n] = ns;
        h->count[h->n] = c;
        h->n++;
    }
}

static void parse_dir(const char *job, const char *jend, const char *name, struct dir_state *d)
{
    const char *ob, *oe, *cb, *ce, *bb, *be;
    memset(d, 0, sizeof *d);
    if (!find_object(job, jend, name, &ob, &oe))
        return;
    int64_t ios = find_num(ob, oe, "\"total_ios\"");
    d->ios = ios > 0 ? (uint64_t)ios : 0;
    if (find_object(ob, oe, "clat_ns", &cb, &ce) && find_object(cb, ce, "bins", &bb, &be))
        parse_bins(bb, be, &d->bins);
}

/* Interval histogram cur - prev (bins are cumulative); merged over both directions. */
static int delta_bins(struct hist *out, const struct hist *c, const struct hist *p)
{
    for (int i = 0; i < c->n; i++) {
        uint64_t before = 0;
        for (int j = 0; j < p->n; j++)
            if (p->ns[j] == c->ns[i]) {
                before = p->count[j];
                break;
            }
        if (c->count[i] <= before)
            continue;
        int k;
        for (k = 0; k < out->n; k++)
            if (out->ns[k] == c->ns[i])
                break;
        if (k == out->n) {
            if (out->n >= MAX_BINS)
                return -1;
            out->ns[k] = c->ns[i];
            out->count[k] = 0;
            out->n++;
        }
        out->count[k] += c->count[i] - before;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile (0..100) of a histogram, in microseconds; -1 when empty. */
static double percentile_us(const struct hist *h, double pct)
{
    uint64_t total = 0;
    for (int i = 0; i < h->n; i++)
        total += h->count[i];
    if (!total)
        return -1;
    /* sort bins by ns (small n: insertion through an index array is fine) */
    static uint64_t keys[MAX_BINS][2];
    for (int i = 0; i < h->n; i++) {
        keys[i][0] = h->ns[i];
        keys[i][1] = h->count[i];
    }
    qsort(keys, (size_t)h->n, sizeof keys[0], cmp_u64);
    double want = pct / 100.0 * (double)total;
    uint64_t acc = 0;
    for (int i = 0; i < h->n; i++) {
        acc += keys[i][1];
        if ((double)acc >= want)
            return keys[i][0] / 1000.0;
    }
    return keys[h->n - 1][0] / 1000.0;
}

static void fmt_us(char *buf, size_t n, double v)
{
    if (v < 0)
        snprintf(buf, n, "nan");
    else
        snprintf(buf, n, "%.1f", v);
}

static void handle_status(const char *p, const char *end)
{
    int64_t ms = find_num(p, end, "\"timestamp_ms\"");
    const char *jb, *je;
    const char *jobs = memmem(p, (size_t)(end - p), "\"jobs\"", 6);
    if (ms < 0 || !jobs)
        return;
    const char *brace = memchr(jobs, '{', (size_t)(end - jobs));
    if (!brace || !(je = object_end(brace, end)))
        return;
    jb = brace;
    int64_t err = find_num(jb, je, "\"error\"");
    parse_dir(jb, je, "read", &cur[0]);
    parse_dir(jb, je, "write", &cur[1]);
    if (prev_ms >= 0 && ms > prev_ms) {
        double dt = (ms - prev_ms) / 1000.0;
        static struct hist rd, wr, all;
        rd.n = wr.n = all.n = 0;
        delta_bins(&rd, &cur[0].bins, &prev[0].bins);
        delta_bins(&wr, &cur[1].bins, &prev[1].bins);
        delta_bins(&all, &cur[0].bins, &prev[0].bins);
        delta_bins(&all, &cur[1].bins, &prev[1].bins);
        double riops = (double)(cur[0].ios - prev[0].ios) / dt;
        double wiops = (double)(cur[1].ios - prev[1].ios) / dt;
        char p50[32], p99[32], p999[32], mx[32], rp99[32], wp99[32];
        fmt_us(p50, sizeof p50, percentile_us(&all, 50));
        fmt_us(p99, sizeof p99, percentile_us(&all, 99));
        fmt_us(p999, sizeof p999, percentile_us(&all, 99.9));
        fmt_us(mx, sizeof mx, percentile_us(&all, 100));
        fmt_us(rp99, sizeof rp99, percentile_us(&rd, 99));
        fmt_us(wp99, sizeof wp99, percentile_us(&wr, 99));
        printf("@mb fio t=%.3f seq=%ld dt=%.3f iops=%.1f r_iops=%.1f w_iops=%.1f lat_p50_us=%s "
               "lat_p99_us=%s lat_p999_us=%s lat_max_us=%s r_lat_p99_us=%s w_lat_p99_us=%s "
               "err=%lld\n",
               mono_s(), seq++, dt, riops + wiops, riops, wiops, p50, p99, p999, mx, rp99, wp99,
               (long long)(err < 0 ? 0 : err));
        fflush(stdout);
    } else if (prev_ms < 0) {
        printf("@mb fio-ready t=%.3f\n", mono_s());
        fflush(stdout);
    }
    prev[0] = cur[0];
    prev[1] = cur[1];
    prev_ms = ms;
}

/* Print a pending line of fio's own text (if any) and forget it. */
static void flush_msg(const char *msg, size_t *msg_len)
{
    if (*msg_len > 0) {
        fwrite(msg, 1, *msg_len, stdout);
        putchar('\n');
        fflush(stdout);
    }
    *msg_len = 0;
}

/* Read the stream, cut it into top-level JSON objects, handle each. */
static void pump(FILE *in)
{
    static char buf[MAX_OBJ];
    static char msg[1024];
    size_t len = 0, msg_len = 0;
    int depth = 0, in_str = 0, esc = 0;
    int c;
    while ((c = getc(in)) != EOF) {
        if (depth == 0 && c != '{') {
            /* fio's own messages between objects (errors, warnings): pass whole lines through,
               dropping the blank separators between JSON objects */
            if (c == '\n') {
                flush_msg(msg, &msg_len);
            } else if (msg_len < sizeof msg && (msg_len > 0 || c != ' ')) {
                msg[msg_len++] = (char)c;
            }
            continue;
        }
        if (depth == 0)
            flush_msg(msg, &msg_len);
        if (len < sizeof buf)
            buf[len++] = (char)c;
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{') {
            depth++;
        } else if (c == '}' && --depth == 0) {
            handle_status(buf, buf + len);
            len = 0;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--parse") == 0) {
        pump(stdin);
        return 0;
    }
    if (argc < 2) {
        printf("@mb error msg=fiomon-usage:fiomon-FIO-[options]\n");
        return 2;
    }
    int fds[2];
    if (pipe(fds) < 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char **av = calloc((size_t)argc + 3, sizeof *av);
        int k = 0;
        for (int i = 1; i < argc; i++)
            av[k++] = argv[i];
        av[k++] = "--output-format=json+";
        av[k++] = "--status-interval=1";
        av[k] = NULL;
        execv(av[0], av);
        printf("@mb error msg=fiomon-cannot-exec-%s errno=%d\n", av[0], errno);
        _exit(127);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    pump(in);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
