// open_elsewise: read a file the ways system-call tracepoints do not see:
// a 32-bit system call (int $0x80) from a 64-bit process, and io_uring's
// IORING_OP_OPENAT. Prints what it read, so the caller knows the read
// really happened (the positive control). Built by tests/kernel/test_baseline_kernel.py.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/io_uring.h>

static long int80(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("push %%rbx\n mov %2, %%rbx\n int $0x80\n pop %%rbx"
			 : "=a"(ret) : "a"(nr), "r"(a), "c"(b), "d"(c)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static int uring_openat(const char *path)
{
	struct io_uring_params p;
	struct io_uring_sqe *sqes;
	unsigned *tail, *mask, *array, *chead, *cmask;
	struct io_uring_cqe *cqes;
	char *sq, *cq;
	int fd, res;

	memset(&p, 0, sizeof(p));
	fd = syscall(__NR_io_uring_setup, 4, &p);
	if (fd < 0)
		return -1;
	sq = mmap(0, p.sq_off.array + p.sq_entries * 4, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
	sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	tail = (void *)(sq + p.sq_off.tail);
	mask = (void *)(sq + p.sq_off.ring_mask);
	array = (void *)(sq + p.sq_off.array);
	chead = (void *)(cq + p.cq_off.head);
	cmask = (void *)(cq + p.cq_off.ring_mask);
	cqes = (void *)(cq + p.cq_off.cqes);
	memset(&sqes[0], 0, sizeof(sqes[0]));
	sqes[0].opcode = IORING_OP_OPENAT;
	sqes[0].fd = AT_FDCWD;
	sqes[0].addr = (unsigned long)path;
	sqes[0].open_flags = O_RDONLY;
	array[*tail & *mask] = 0;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -1;
	res = cqes[*chead & *cmask].res;
	return res;
}

int main(int argc, char **argv)
{
	char buf[64] = {0};
	char *low;
	long fd;

	if (argc != 3)
		return 2;
	if (!strcmp(argv[1], "int80")) {
		/* the path must be below 4 GiB for the 32-bit call */
		low = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
		strncpy(low, argv[2], 4095);
		fd = int80(5 /* ia32 open */, (long)low, O_RDONLY, 0);
	} else {
		fd = uring_openat(argv[2]);
	}
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		return 1;
	printf("%s", buf);
	return 0;
}
