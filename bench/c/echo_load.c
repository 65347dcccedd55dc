/*
 * A closed-loop echo load generator in C, for `deno task bench --client c`: one thread, epoll,
 * N connections, each sending a message of SIZE bytes and waiting for its whole echo before the
 * next (every byte checked, a counter stamped in the first 8 bytes so that a stale echo cannot
 * pass). Connects are paced (at most 200 in flight) so that the server's listen queue never
 * overflows. It costs the two cores far less than the TypeScript client, so the server gets
 * more of them and the CPU figures are the server's, not a client's artefact.
 *
 * Usage: echo_load HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S [PROBE]
 *   PROBE = 1: connection 0 is a bystander (64 B every 10 ms) and the latencies are its own.
 * Writes `measuring` and `stopped` lines to stderr at the edges of the measured window, and
 * prints one JSON object on stdout: roundTrips (measured window), errors, mismatches,
 * connectFailures, p50/p99/p999 (ms), clientCpuSeconds (its own CPU over the window), firstError.
 *
 * Runs in the benchmark's process tree, never in the server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_IN_FLIGHT 200
#define PROBE_SIZE 64
#define PROBE_PAUSE_NS 10000000LL
/* Latency histogram: 10 us buckets up to 10 s. */
#define BUCKET_NS 10000LL
#define BUCKETS 1000000

enum state { CONNECTING, SENDING, RECEIVING, PAUSED, DEAD };

struct conn {
  int fd;
  enum state state;
  size_t size;
  size_t sent;
  size_t got;
  uint32_t counter;
  int64_t started;
  int64_t wake;
  unsigned char *message;
  unsigned char *reply;
};

/* CPU seconds this process has used (user + system). */
static double cpu_seconds(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
         (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char HEX[] = "0123456789abcdef";
static uint32_t *histogram;
static long long round_trips, errors, mismatches, connect_failures;
static char first_error[200];
static int measuring, stopping, probe_mode;

static void fail(const char *what) {
  if (first_error[0] == 0) snprintf(first_error, sizeof first_error, "%s", what);
}

static void stamp(struct conn *c) {
  for (int i = 0; i < 8 && (size_t)i < c->size; i++) {
    c->message[i] = (unsigned char)HEX[(c->counter >> (28 - 4 * i)) & 0xf];
  }
}

static void fill(unsigned char *message, size_t size, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; i++) {
    x = x * 1103515245u + 12345u;
    unsigned char byte = (unsigned char)(x >> 24);
    message[i] = byte == '\n' ? 0x0b : byte; /* no line can ever read `quit` */
  }
}

static void kill_conn(int epfd, struct conn *c, const char *why) {
  if (c->state == DEAD) return;
  if (!stopping) {
    errors++;
    fail(why);
  }
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->state = DEAD;
}

static void start_trip(int epfd, struct conn *c) {
  stamp(c);
  c->counter++;
  c->sent = 0;
  c->got = 0;
  c->started = now_ns();
  c->state = SENDING;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what it can; returns 0 when the whole message is out. */
static int pump_send(int epfd, struct conn *c) {
  while (c->sent < c->size) {
    ssize_t n = send(c->fd, c->message + c->sent, c->size - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) return 1;
      kill_conn(epfd, c, strerror(errno));
      return -1;
    }
    c->sent += (size_t)n;
  }
  c->state = RECEIVING;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
  return 0;
}

static void pump_receive(int epfd, struct conn *c, int is_probe) {
  while (c->got < c->sent) {
    ssize_t n = recv(c->fd, c->reply + c->got, c->sent - c->got, 0);
    if (n == 0) {
      kill_conn(epfd, c, "server closed the connection");
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN) return;
      kill_conn(epfd, c, strerror(errno));
      return;
    }
    c->got += (size_t)n;
  }
  if (c->sent < c->size) return; /* a large message's echo started before all of it was sent */
  if (memcmp(c->message, c->reply, c->size) != 0) {
    mismatches++;
    fail("reply differs from the one expected");
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
    return;
  }
  int64_t elapsed = now_ns() - c->started;
  if (measuring) {
    /* With a bystander, only its own latencies are recorded; the others count trips. */
    if (!is_probe) round_trips++;
    if (!probe_mode || is_probe) {
      long long bucket = elapsed / BUCKET_NS;
      if (bucket >= BUCKETS) bucket = BUCKETS - 1;
      histogram[bucket]++;
    }
  }
  if (stopping) {
    c->state = PAUSED;
    return;
  }
  if (is_probe) {
    c->state = PAUSED;
    c->wake = now_ns() + PROBE_PAUSE_NS;
    struct epoll_event ev = {.events = 0, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return;
  }
  start_trip(epfd, c);
  pump_send(epfd, c);
}

static double percentile(double p, long long total) {
  if (total == 0) return -1;
  long long want = (long long)(total * p), seen = 0;
  for (long long i = 0; i < BUCKETS; i++) {
    seen += histogram[i];
    if (seen > want) return (double)(i * BUCKET_NS + BUCKET_NS / 2) / 1e6;
  }
  return (double)(BUCKETS * BUCKET_NS) / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: echo_load HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S [PROBE]\n");
    return 2;
  }
  const char *host = argv[1];
  const char *port = argv[2];
  int count = atoi(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  double warmup = atof(argv[5]);
  double duration = atof(argv[6]);
  int probe = argc > 7 && atoi(argv[7]) == 1;
  probe_mode = probe;
  if (count < 1 || size < 8) {
    fprintf(stderr, "echo_load: CONNECTIONS must be >= 1 and SIZE >= 8\n");
    return 2;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *addr;
  if (getaddrinfo(host, port, &hints, &addr) != 0) {
    fprintf(stderr, "echo_load: cannot resolve %s\n", host);
    return 2;
  }
  histogram = calloc(BUCKETS, sizeof *histogram);
  struct conn *conns = calloc((size_t)count, sizeof *conns);
  int epfd = epoll_create1(0);
  int opened = 0, connected = 0, pending = 0;
  struct epoll_event events[512];
  int64_t connect_deadline = now_ns() + 60LL * 1000000000LL;

  /* Connect in waves of at most CONNECT_IN_FLIGHT. */
  while (connected + connect_failures < count && now_ns() < connect_deadline) {
    while (opened < count && pending < CONNECT_IN_FLIGHT) {
      struct conn *c = &conns[opened];
      c->size = probe && opened == 0 ? PROBE_SIZE : size;
      c->message = malloc(c->size);
      c->reply = malloc(c->size);
      fill(c->message, c->size, (uint32_t)opened * 100003u + 1);
      c->fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
      int one = 1;
      setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c->state = CONNECTING;
      if (connect(c->fd, addr->ai_addr, addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        connect_failures++;
        fail(strerror(errno));
        close(c->fd);
        c->state = DEAD;
      } else {
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
        pending++;
      }
      opened++;
    }
    int n = epoll_wait(epfd, events, 512, 100);
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      if (c->state != CONNECTING) continue;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      pending--;
      if (err != 0) {
        connect_failures++;
        fail(strerror(err));
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->state = DEAD;
        continue;
      }
      connected++;
      c->state = PAUSED; /* started together below */
      struct epoll_event ev = {.events = 0, .data.ptr = c};
      epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
  }
  for (int i = 0; i < count; i++) {
    if (conns[i].state == PAUSED) {
      start_trip(epfd, &conns[i]);
      pump_send(epfd, &conns[i]);
    }
  }

  int64_t start = now_ns();
  int64_t measure_at = start + (int64_t)(warmup * 1e9);
  int64_t stop_at = measure_at + (int64_t)(duration * 1e9);
  int64_t settle_until = 0;
  double cpu_at_start = 0, cpu_used = 0;
  while (1) {
    int64_t now = now_ns();
    if (!measuring && !stopping && now >= measure_at) {
      measuring = 1;
      cpu_at_start = cpu_seconds();
      /* Marks for whoever samples the server's CPU over exactly this window. */
      fputs("measuring\n", stderr);
      fflush(stderr);
    }
    if (measuring && now >= stop_at) {
      measuring = 0;
      stopping = 1;
      cpu_used = cpu_seconds() - cpu_at_start;
      fputs("stopped\n", stderr);
      fflush(stderr);
      settle_until = now + 15LL * 1000000000LL;
    }
    if (stopping) {
      int busy = 0;
      for (int i = 0; i < count; i++) {
        if (conns[i].state == SENDING || conns[i].state == RECEIVING) busy = 1;
      }
      if (!busy) break;
      if (now >= settle_until) {
        errors++;
        fail("round trips still unanswered 15 s after the end");
        break;
      }
    }
    if (probe && conns[0].state == PAUSED && !stopping && now >= conns[0].wake) {
      start_trip(epfd, &conns[0]);
      pump_send(epfd, &conns[0]);
    }
    int n = epoll_wait(epfd, events, 512, probe ? 1 : 50);
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      int is_probe = probe && c == &conns[0];
      if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN)) {
        kill_conn(epfd, c, "connection reset");
        continue;
      }
      if (c->state == SENDING && (events[i].events & EPOLLOUT)) {
        if (pump_send(epfd, c) < 0) continue;
      }
      if ((c->state == RECEIVING || c->state == SENDING) && (events[i].events & EPOLLIN)) {
        pump_receive(epfd, c, is_probe);
        /* Still sending a large message: keep both directions watched. */
        if (c->state == SENDING) {
          struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
          epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
      }
    }
  }
  long long total = 0;
  for (long long i = 0; i < BUCKETS; i++) total += histogram[i];
  printf("{\"roundTrips\":%lld,\"errors\":%lld,\"mismatches\":%lld,\"connectFailures\":%lld,"
         "\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"clientCpuSeconds\":%.6f,\"firstError\":",
         round_trips, errors, mismatches, connect_failures, percentile(0.5, total),
         percentile(0.99, total), percentile(0.999, total), cpu_used);
  if (first_error[0] == 0) {
    printf("null}\n");
  } else {
    printf("\"");
    for (const char *p = first_error; *p; p++) {
      if (*p == '"' || *p == '\\') putchar('\\');
      putchar(*p);
    }
    printf("\"}\n");
  }
  for (int i = 0; i < count; i++) {
    if (conns[i].state != DEAD) close(conns[i].fd);
  }
  return 0;
}
