/* bench/baseline.py's workload: an agent-like mix of execs, file opens and
 * connects, timed in one process. Compiled at run time (cc -O2).
 *
 *   baseline_load [-n N] [-e EXECS] [-o OPENS] [-w WRITES] [-c CONNECTS]
 *                 [-u SENDS] [-g SYSCALLS] [-d DIR] [-f FILES] [-k ETC] [-x PROGRAM]
 *                 [-p TCP_PORT] [-q UDP_PORT]
 *       N iterations (after N/10 + 1 untimed warm-up ones), each doing:
 *       EXECS   fork() + execv(PROGRAM) + waitpid()         (default /bin/true)
 *       OPENS   open(O_RDONLY) + read() + close(), cycling over the files
 *               DIR/f00 .. DIR/f<FILES-1> (default 16), then the first ETC
 *               (default 3) of /etc/hostname, /etc/hosts, /etc/nsswitch.conf
 *       WRITES  open(DIR/log, O_WRONLY|O_APPEND) + write() + close()
 *       CONNECTS a TCP socket, connect() to 127.0.0.1:TCP_PORT, close()
 *               with SO_LINGER 0 (a reset: no TIME_WAIT piles up)
 *       SENDS   a UDP socket, sendto() 127.0.0.1:UDP_PORT, close() (a
 *               DNS-style lookup)
 *       SYSCALLS getppid(): a system call no program looks at, to time the
 *               syscall slow path alone (default 0)
 *     prints one line: ns=<elapsed> cpu_ns=<CPU time of this process and its
 *     children, user + system> iterations=N execs= opens= writes= connects=
 *     sends= syscalls= (the timed loop's totals). CPU time leaves out the time
 *     other processes held the CPUs (this machine is shared); BPF programs run
 *     in the process's context and are in it.
 *
 *   baseline_load serve
 *       the peer: a TCP listener and a UDP socket on 127.0.0.1 (ephemeral
 *       ports), prints "TCP_PORT UDP_PORT", then accepts and closes every
 *       connection and drains every datagram until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 256

static const char *etc_files[] = { "/etc/hostname", "/etc/hosts", "/etc/nsswitch.conf" };
#define N_ETC (sizeof(etc_files) / sizeof(etc_files[0]))

static char *paths[MAX_FILES + N_ETC];
static int n_paths;
static char log_path[4096];
static const char *program = "/bin/true";
static struct sockaddr_in tcp_peer, udp_peer;
static long execs, opens, writes, connects, sends, syscalls;
static char buf[4096];

static double cpu_ns(void)
{
	struct rusage self, children;

	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &children);
	return (self.ru_utime.tv_sec + self.ru_stime.tv_sec + children.ru_utime.tv_sec +
		children.ru_stime.tv_sec) * 1e9 +
	       (self.ru_utime.tv_usec + self.ru_stime.tv_usec + children.ru_utime.tv_usec +
		children.ru_stime.tv_usec) * 1e3;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int do_exec(void)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		char *argv[] = { (char *)program, NULL };

		execv(program, argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) == 127)
		return -1;
	return 0;
}

static int do_open(void)
{
	static int next;
	int fd = open(paths[next], O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		perror(paths[next]);
		return -1;
	}
	next = (next + 1) % n_paths;
	if (read(fd, buf, sizeof(buf)) < 0)
		return -1;
	return close(fd);
}

static int do_write(void)
{
	int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0) {
		perror(log_path);
		return -1;
	}
	if (write(fd, "x\n", 2) != 2)
		return -1;
	return close(fd);
}

static int do_connect(void)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (connect(s, (struct sockaddr *)&tcp_peer, sizeof(tcp_peer)) < 0) {
		perror("connect");
		close(s);
		return -1;
	}
	return close(s);
}

static int do_send(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -1;
	if (sendto(s, "x", 1, 0, (struct sockaddr *)&udp_peer, sizeof(udp_peer)) != 1) {
		perror("sendto");
		close(s);
		return -1;
	}
	return close(s);
}

struct mix {
	long e, o, w, c, u, g;
};

static int iteration(const struct mix *m)
{
	long i;

	for (i = 0; i < m->e; i++, execs++)
		if (do_exec() < 0)
			return -1;
	for (i = 0; i < m->o; i++, opens++)
		if (do_open() < 0)
			return -1;
	for (i = 0; i < m->w; i++, writes++)
		if (do_write() < 0)
			return -1;
	for (i = 0; i < m->c; i++, connects++)
		if (do_connect() < 0)
			return -1;
	for (i = 0; i < m->u; i++, sends++)
		if (do_send() < 0)
			return -1;
	for (i = 0; i < m->g; i++, syscalls++)
		syscall(SYS_getppid);	/* not the libc wrapper: always a real call */
	return 0;
}

static int serve(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	struct pollfd pfd[2];
	int t = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_DGRAM, 0);
	int tport, one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (t < 0 || u < 0 || bind(t, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(t, 4096) < 0 || getsockname(t, (struct sockaddr *)&sa, &len) < 0) {
		perror("serve: tcp");
		return 1;
	}
	tport = ntohs(sa.sin_port);
	sa.sin_port = 0;
	len = sizeof(sa);
	if (bind(u, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(u, (struct sockaddr *)&sa, &len) < 0) {
		perror("serve: udp");
		return 1;
	}
	printf("%d %d\n", tport, ntohs(sa.sin_port));
	fflush(stdout);
	pfd[0] = (struct pollfd){ .fd = t, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = u, .events = POLLIN };
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (pfd[0].revents & POLLIN) {
			int c = accept(t, NULL, NULL);

			if (c >= 0)
				close(c);
		}
		if (pfd[1].revents & POLLIN)
			while (recv(u, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
				;
	}
}

int main(int argc, char **argv)
{
	struct mix m = { 1, 19, 1, 1, 1, 0 };
	const char *dir = "/tmp";
	long n = 1000, i, files = 16, etc = N_ETC;
	int tport = 0, uport = 0, opt;
	double t0, c0;

	if (argc > 1 && !strcmp(argv[1], "serve"))
		return serve();
	while ((opt = getopt(argc, argv, "n:e:o:w:c:u:g:d:f:k:x:p:q:")) != -1) {
		switch (opt) {
		case 'n': n = atol(optarg); break;
		case 'e': m.e = atol(optarg); break;
		case 'o': m.o = atol(optarg); break;
		case 'w': m.w = atol(optarg); break;
		case 'c': m.c = atol(optarg); break;
		case 'u': m.u = atol(optarg); break;
		case 'g': m.g = atol(optarg); break;
		case 'd': dir = optarg; break;
		case 'f': files = atol(optarg); break;
		case 'k': etc = atol(optarg); break;
		case 'x': program = optarg; break;
		case 'p': tport = atoi(optarg); break;
		case 'q': uport = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n N] [-e EXECS] [-o OPENS] [-w WRITES] "
				"[-c CONNECTS] [-u SENDS] [-g SYSCALLS] [-d DIR] [-f FILES] [-k ETC] "
				"[-x PROGRAM] "
				"[-p TCP_PORT] [-q UDP_PORT] | serve\n", argv[0]);
			return 2;
		}
	}
	if (files < 0 || files > MAX_FILES || etc < 0 || etc > (long)N_ETC || n < 0 ||
	    (m.o && !(files + etc)) || (m.c && !tport) || (m.u && !uport)) {
		fprintf(stderr, "baseline_load: bad arguments\n");
		return 2;
	}
	for (i = 0; i < files; i++) {
		paths[n_paths] = malloc(strlen(dir) + 8);
		sprintf(paths[n_paths++], "%s/f%02ld", dir, i);
	}
	for (i = 0; i < etc; i++)
		paths[n_paths++] = (char *)etc_files[i];
	snprintf(log_path, sizeof(log_path), "%s/log", dir);
	tcp_peer.sin_family = udp_peer.sin_family = AF_INET;
	tcp_peer.sin_addr.s_addr = udp_peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	tcp_peer.sin_port = htons(tport);
	udp_peer.sin_port = htons(uport);

	for (i = 0; i < n / 10 + 1; i++)	/* warm up: caches, the peer, the baseline */
		if (iteration(&m) < 0)
			return 1;
	execs = opens = writes = connects = sends = syscalls = 0;
	c0 = cpu_ns();
	t0 = now_ns();
	for (i = 0; i < n; i++)
		if (iteration(&m) < 0)
			return 1;
	t0 = now_ns() - t0;
	printf("ns=%.0f cpu_ns=%.0f iterations=%ld execs=%ld opens=%ld writes=%ld connects=%ld "
	       "sends=%ld syscalls=%ld\n", t0, cpu_ns() - c0, n, execs, opens, writes, connects,
	       sends, syscalls);
	return 0;
}
