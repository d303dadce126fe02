/* bench/sandbox.py's inner loop: time N open()+close() of a file, or N
 * connect() of one UDP socket to an address, in one process, and print the
 * mean nanoseconds per call. Every call must succeed. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
		fprintf(stderr, "usage: %s open N PATH | connect N ADDR PORT\n", argv[0]);
		return 2;
	}
	n = atol(argv[2]);
	if (!strcmp(argv[1], "open")) {
		for (i = 0; i < n / 10 + 1; i++)	/* warm up */
			close(open(argv[3], O_RDONLY));
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			int fd = open(argv[3], O_RDONLY);

			if (fd < 0) {
				perror("open");
				return 1;
			}
			close(fd);
		}
	} else {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		int s = socket(AF_INET, SOCK_DGRAM, 0);

		if (argc < 5 || s < 0 || inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1)
			return 2;
		sa.sin_port = htons(atoi(argv[4]));
		for (i = 0; i < n / 10 + 1; i++)
			connect(s, (struct sockaddr *)&sa, sizeof(sa));
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
				perror("connect");
				return 1;
			}
		}
	}
	printf("%.1f\n", (now_ns() - t0) / n);
	return 0;
}
