/* libcpulist: answers reads of /sys/devices/system/cpu/{possible,present} where they are missing.
 *
 * Why: Lambda does not mount /sys/devices/system/cpu. On arm64 the CPU-detection library that
 * XNNPACK uses (cpuinfo) takes the processor count from those two files only; without them it
 * gives up, XNNPACK cannot initialise, and LiteRT falls back to its slower built-in kernels.
 * Preloaded (LD_PRELOAD, set by the Dockerfile), this makes a *missing* file read as
 * "0-<n-1>\n", n being the CPUs this process may run on (sched_getaffinity). Files that exist
 * and every other path go to libc untouched, so x86_64, `docker run` and any machine that does
 * mount the directory see no difference. tests/system/test_image_arm64.py checks the effect.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int is_cpu_list(const char *path) {
    return path && (strcmp(path, "/sys/devices/system/cpu/possible") == 0 ||
                    strcmp(path, "/sys/devices/system/cpu/present") == 0);
}

/* A memory file holding the CPU list, or -1 with errno left as the failed open set it. */
static int cpu_list_fd(void) {
    int saved = errno;
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    char text[32];
    int len = n > 1 ? snprintf(text, sizeof text, "0-%d\n", n - 1) : snprintf(text, sizeof text, "0\n");
    int fd = memfd_create("cpu-list", MFD_CLOEXEC);
    if (fd >= 0 && write(fd, text, (size_t)len) == len && lseek(fd, 0, SEEK_SET) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    errno = saved;
    return -1;
}

static int answer(int fd, const char *path) {
    return fd < 0 && errno == ENOENT && is_cpu_list(path) ? cpu_list_fd() : fd;
}

/* The mode argument exists only when the flags create a file. */
static mode_t mode_of(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

#define NEXT(name) static __typeof__(name) *next; if (!next) next = dlsym(RTLD_NEXT, #name)

int open(const char *path, int flags, ...) {
    NEXT(open);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    return answer(next(path, flags, mode), path);
}

int open64(const char *path, int flags, ...) {
    NEXT(open64);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    return answer(next(path, flags, mode), path);
}

int openat(int dirfd, const char *path, int flags, ...) {
    NEXT(openat);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    return answer(next(dirfd, path, flags, mode), path);
}

/* What _FORTIFY_SOURCE builds call instead of open(); never with O_CREAT. */
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }

FILE *fopen(const char *path, const char *mode) {
    NEXT(fopen);
    FILE *f = next(path, mode);
    if (f == NULL && errno == ENOENT && is_cpu_list(path)) {
        int fd = cpu_list_fd();
        if (fd >= 0 && (f = fdopen(fd, "r")) == NULL)
            close(fd);
    }
    return f;
}

FILE *fopen64(const char *path, const char *mode) { return fopen(path, mode); }
