/* bench/sandbox.py's inner loop: time N calls of one operation in one
 * process and print the mean nanoseconds per call. Every call must succeed.
 *   open N PATH          open()+close() of a file
 *   rename N PATH        rename(PATH, PATH.b), then back: one rename a call
 *   unlink N PATH        open(O_CREAT)+close()+unlink() of PATH
 *   mmap N PATH          mmap(PROT_READ|PROT_EXEC) of PATH's first page + munmap
 *   connect N ADDR PORT  connect() of one UDP socket
 *   sendto N ADDR PORT   sendto() of one byte on an unconnected UDP socket */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int one(const char *op, const char *path, char *alt, int fd)
{
	static long k;
	void *p;

	if (!strcmp(op, "open")) {
		int f = open(path, O_RDONLY);

		if (f < 0)
			return -1;
		return close(f);
	}
	if (!strcmp(op, "rename"))
		return (k++ & 1) ? rename(alt, path) : rename(path, alt);
	if (!strcmp(op, "unlink")) {
		int f = open(path, O_CREAT | O_WRONLY, 0644);

		if (f < 0)
			return -1;
		close(f);
		return unlink(path);
	}
	if (!strcmp(op, "mmap")) {
		p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED)
			return -1;
		return munmap(p, 4096);
	}
	return -1;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long i, n;
	double t0;

	if (argc < 4) {
		fprintf(stderr, "usage: %s open|rename|unlink|mmap N PATH | connect|sendto N ADDR PORT\n",
			argv[0]);
		return 2;
	}
	n = atol(argv[2]);
	if (strcmp(argv[1], "connect") && strcmp(argv[1], "sendto")) {
		char alt[4096];
		int fd = open(argv[3], O_RDONLY);

		snprintf(alt, sizeof(alt), "%s.b", argv[3]);
		for (i = 0; i < n / 10 + 2; i++)	/* warm up (an even count) */
			one(argv[1], argv[3], alt, fd);
		if (i & 1)
			one(argv[1], argv[3], alt, fd);
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			if (one(argv[1], argv[3], alt, fd) < 0) {
				perror(argv[1]);
				return 1;
			}
		}
		if (n & 1)
			one(argv[1], argv[3], alt, fd);	/* a rename ends where it began */
	} else {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		int send = !strcmp(argv[1], "sendto");

		if (argc < 5 || s < 0 || inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1)
			return 2;
		sa.sin_port = htons(atoi(argv[4]));
		for (i = 0; i < n / 10 + 1; i++)
			send ? sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa)) :
			       connect(s, (struct sockaddr *)&sa, sizeof(sa));
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			int r = send ? (int)sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa)) :
				       connect(s, (struct sockaddr *)&sa, sizeof(sa));

			if (r < 0) {
				perror(argv[1]);
				return 1;
			}
		}
	}
	printf("%.1f\n", (now_ns() - t0) / n);
	return 0;
}
