/*
 * migbench guest UDP echo responder: sends every datagram back to its sender
 * unchanged, so that a prober beside the guest measures RTT and loss (the
 * network-visible downtime of a migration). Speaks the "@mb" protocol on
 * stdout; see workloads/README.md.
 *
 * Build: gcc -O2 -static -o udpecho udpecho.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage_error(const char *msg)
{
    printf("@mb error msg=%s\n", msg);
    fflush(stdout);
    exit(2);
}

int main(int argc, char **argv)
{
    long port = 7777;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            port = strtol(argv[++i], &end, 10);
            if (*end || port < 1 || port > 65535)
                usage_error("udpecho-port-must-be-1..65535");
        } else {
            usage_error("udpecho-usage:--port-N");
        }
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        usage_error("udpecho-socket-failed");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        printf("@mb error msg=udpecho-bind-failed errno=%d\n", errno);
        fflush(stdout);
        return 1;
    }
    printf("@mb ping-ready mode=udp port=%ld\n", port);
    fflush(stdout);
    char buf[2048];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            printf("@mb error msg=udpecho-recv-failed errno=%d\n", errno);
            fflush(stdout);
            return 1;
        }
        /* A full socket buffer on the way back is loss the prober will see: ignore errors. */
        (void)sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, plen);
    }
}
