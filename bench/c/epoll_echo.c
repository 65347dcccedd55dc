/*
 * The field's floor for `deno task bench --peers`: a single-threaded C epoll echo server, about
 * as little as an echo round trip can cost in user space (read into one buffer, write it back,
 * edge-triggered epoll). No limits, no quit, no TLS: a yardstick, not a server.
 *
 * Usage: epoll_echo [port]   (0 or none: a free port; prints "c-epoll listening on [::]:<port>")
 *
 * Runs in the benchmark's process tree, never in the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER_SIZE (64 * 1024)

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int port = argc > 1 ? atoi(argv[1]) : 0;
  int listener = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1, zero = 0;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_port = htons((unsigned short)port)};
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0) {
    perror("epoll_echo: cannot listen");
    return 1;
  }
  socklen_t length = sizeof addr;
  getsockname(listener, (struct sockaddr *)&addr, &length);
  fprintf(stderr, "c-epoll listening on [::]:%d\n", ntohs(addr.sin6_port));
  int epfd = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
  static unsigned char buffer[BUFFER_SIZE];
  struct epoll_event events[512];
  for (;;) {
    int n = epoll_wait(epfd, events, 512, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int conn;
        while ((conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = conn};
          epoll_ctl(epfd, EPOLL_CTL_ADD, conn, &cev);
        }
        continue;
      }
      for (;;) {
        ssize_t got = read(fd, buffer, BUFFER_SIZE);
        if (got > 0) {
          ssize_t sent = 0;
          while (sent < got) {
            ssize_t w = write(fd, buffer + sent, (size_t)(got - sent));
            if (w > 0) {
              sent += w;
            } else if (w < 0 && errno == EAGAIN) {
              /* A closed-loop client reads its echo: wait for room, briefly. */
              struct epoll_event wev = {.events = EPOLLOUT};
              int wfd = epoll_create1(0);
              wev.data.fd = fd;
              epoll_ctl(wfd, EPOLL_CTL_ADD, fd, &wev);
              epoll_wait(wfd, &wev, 1, 1000);
              close(wfd);
            } else {
              break;
            }
          }
          if (got < BUFFER_SIZE) break;
        } else if (got == 0 || errno != EAGAIN) {
          close(fd);
          break;
        } else {
          break;
        }
      }
    }
  }
}
