/* A fake libnvidia-ml.so.1 for tests: the NVML entry points carbontrack calls (through ctypes in the
 * trainer's client and through pynvml in the sidecar's opt-in mode), answered from a trace file.
 *
 * The file is named by FAKE_NVML_CONFIG and read at nvmlInit; one directive a line, '#' comments:
 *   start_ns N        CLOCK_MONOTONIC nanoseconds at trace time 0 (default: the first nvmlInit)
 *   init_error CODE   every nvmlInit* returns CODE (9: driver not loaded, 12: library not found)
 *   device UUID       begins a GPU; the lines below until the next `device` describe it
 *   name TEXT         product name
 *   counter 0|1       0: nvmlDeviceGetTotalEnergyConsumption is NOT_SUPPORTED (pre-Volta)
 *   offset_mj N       counter value at trace time 0 (NVML counts from driver load)
 *   mig 0|1           MIG mode (current and pending)
 *   mig_device UUID   a MIG instance of this GPU (nvmlDeviceGetMigDeviceHandleByIndex)
 *   reset_at S        driver reload at trace time S: the counter restarts from 0
 *   lost_at S         from trace time S on, readings fail with GPU_IS_LOST
 *   proc PID [FROM_S] a compute process on this GPU (from trace time FROM_S on); PID `self` is the
 *                     process that loaded the library
 *   point T W         power trace: piecewise linear through (T seconds, W watts), ends held
 *   events_from init  reset_at, lost_at and proc times count from this process's first nvmlInit
 *                     (a trainer's start-up time then does not matter), not from start_ns
 * FAKE_NVML_VISIBLE=2,5 makes only those devices enumerate (a container given 2 of the node's GPUs),
 * in that order, as index 0 and 1.
 * Energy is the exact integral of the trace, floored to integer mJ, as the real counter reports.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NOT_FOUND = 6, NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9, NVML_ERROR_LIBRARY_NOT_FOUND = 12, NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999
};

#define MAX_DEV 16
#define MAX_MIG 8
#define MAX_PROC 16

typedef struct { double t, w; } point_t;

struct dev {
    int is_mig;
    struct dev *parent;
    char uuid[96];
    char name[96];
    int counter;
    int mig;
    long long offset_mj;
    double reset_at, lost_at;
    point_t *pts;
    double *cum;
    int npts, cap;
    unsigned int pids[MAX_PROC];
    double pid_from[MAX_PROC];
    int nproc;
    struct dev *migs[MAX_MIG];
    int nmig;
};

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t; /* the v2/v3 layout pynvml passes */

static struct dev devs[MAX_DEV];
static struct dev migdevs[MAX_DEV * MAX_MIG];
static int ndev, nmigdev, initialised, init_error;
static int visible[MAX_DEV], nvisible;
static long long start_ns = -1, init_ns = -1;
static int events_from_init;

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double now_s(void) { return (double)(mono_ns() - start_ns) / 1e9; }

/* the clock of reset_at, lost_at and proc times */
static double event_s(void) {
    return events_from_init ? (double)(mono_ns() - init_ns) / 1e9 : now_s();
}

static void add_point(struct dev *d, double t, double w) {
    if (d->npts == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->pts = realloc(d->pts, sizeof(point_t) * d->cap);
    }
    d->pts[d->npts++] = (point_t){t, w};
}

static void finish(struct dev *d) {
    if (d->npts == 0) add_point(d, 0, 0);
    /* a stable order: points with equal t (a vertical edge) keep their file order */
    for (int i = 1; i < d->npts; i++)
        for (int j = i; j > 0 && d->pts[j - 1].t > d->pts[j].t; j--) {
            point_t x = d->pts[j]; d->pts[j] = d->pts[j - 1]; d->pts[j - 1] = x;
        }
    d->cum = malloc(sizeof(double) * d->npts);
    d->cum[0] = 0;
    for (int i = 1; i < d->npts; i++)
        d->cum[i] = d->cum[i - 1] + (d->pts[i].w + d->pts[i - 1].w) / 2 * (d->pts[i].t - d->pts[i - 1].t);
}

/* index of the last point with pts.t <= t, for pts[0].t <= t < pts[n-1].t */
static int before(const struct dev *d, double t) {
    int lo = 0, hi = d->npts - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (d->pts[mid].t <= t) lo = mid; else hi = mid;
    }
    return lo;
}

static double power_at(const struct dev *d, double t) {
    if (t <= d->pts[0].t) return d->pts[0].w;
    if (t >= d->pts[d->npts - 1].t) return d->pts[d->npts - 1].w;
    int i = before(d, t) + 1;
    double f = (t - d->pts[i - 1].t) / (d->pts[i].t - d->pts[i - 1].t);
    return d->pts[i - 1].w + f * (d->pts[i].w - d->pts[i - 1].w);
}

/* energy from the first point to t (negative before it), ends held: as carbontrack's Piecewise */
static double integral(const struct dev *d, double t) {
    int n = d->npts;
    if (t <= d->pts[0].t) return d->pts[0].w * (t - d->pts[0].t);
    if (t >= d->pts[n - 1].t) return d->cum[n - 1] + d->pts[n - 1].w * (t - d->pts[n - 1].t);
    int lo = before(d, t);
    return d->cum[lo] + (d->pts[lo].w + power_at(d, t)) / 2 * (t - d->pts[lo].t);
}

static double energy_j(const struct dev *d, double t) {
    return integral(d, t < 0 ? 0 : t) - integral(d, 0);
}

static void load(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[512];
    struct dev *cur = NULL;
    ndev = nmigdev = 0;
    init_error = 0;
    memset(devs, 0, sizeof devs);
    memset(migdevs, 0, sizeof migdevs);
    if (!f) { init_error = NVML_ERROR_DRIVER_NOT_LOADED; return; }
    while (fgets(line, sizeof line, f)) {
        char key[32], arg[256];
        double a = 0, b = -1;
        long long ll;
        if (line[0] == '#' || sscanf(line, "%31s", key) != 1) continue;
        if (!strcmp(key, "start_ns") && sscanf(line, "%*s %lld", &ll) == 1) start_ns = ll;
        else if (!strcmp(key, "init_error")) sscanf(line, "%*s %d", &init_error);
        else if (!strcmp(key, "events_from")) events_from_init = strstr(line, "init") != NULL;
        else if (!strcmp(key, "device") && sscanf(line, "%*s %95s", arg) == 1 && ndev < MAX_DEV) {
            cur = &devs[ndev++];
            snprintf(cur->uuid, sizeof cur->uuid, "%s", arg);
            snprintf(cur->name, sizeof cur->name, "Fake NVIDIA GPU");
            cur->counter = 1;
            cur->reset_at = cur->lost_at = -1;
        } else if (!cur) continue;
        else if (!strcmp(key, "name")) {
            char *p = line + 4;
            while (*p == ' ') p++;
            p[strcspn(p, "\n")] = 0;
            snprintf(cur->name, sizeof cur->name, "%s", p);
        } else if (!strcmp(key, "counter")) sscanf(line, "%*s %d", &cur->counter);
        else if (!strcmp(key, "offset_mj")) sscanf(line, "%*s %lld", &cur->offset_mj);
        else if (!strcmp(key, "mig")) sscanf(line, "%*s %d", &cur->mig);
        else if (!strcmp(key, "reset_at")) sscanf(line, "%*s %lf", &cur->reset_at);
        else if (!strcmp(key, "lost_at")) sscanf(line, "%*s %lf", &cur->lost_at);
        else if (!strcmp(key, "proc") && cur->nproc < MAX_PROC && sscanf(line, "%*s %255s", arg) == 1) {
            /* `self`: the process that reads the library (the trainer itself) */
            cur->pids[cur->nproc] = !strcmp(arg, "self") ? (unsigned int)getpid() : (unsigned int)atoll(arg);
            sscanf(line, "%*s %*s %lf", &b);
            cur->pid_from[cur->nproc++] = b < 0 ? -1e300 : b;
        } else if (!strcmp(key, "mig_device") && sscanf(line, "%*s %95s", arg) == 1 && cur->nmig < MAX_MIG) {
            struct dev *m = &migdevs[nmigdev++];
            m->is_mig = 1;
            m->parent = cur;
            snprintf(m->uuid, sizeof m->uuid, "%s", arg);
            snprintf(m->name, sizeof m->name, "%s MIG", cur->name);
            cur->migs[cur->nmig++] = m;
        } else if (!strcmp(key, "point") && sscanf(line, "%*s %lf %lf", &a, &b) == 2) add_point(cur, a, b);
    }
    fclose(f);
    for (int i = 0; i < ndev; i++) finish(&devs[i]);
    nvisible = 0;
    const char *vis = getenv("FAKE_NVML_VISIBLE");
    if (vis && *vis) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", vis);
        for (char *tok = strtok(buf, ","); tok && nvisible < MAX_DEV; tok = strtok(NULL, ","))
            if (atoi(tok) >= 0 && atoi(tok) < ndev) visible[nvisible++] = atoi(tok);
    } else
        for (int i = 0; i < ndev; i++) visible[nvisible++] = i;
}

static struct dev *dev_of(void *handle) {
    struct dev *d = handle;
    if (d >= devs && d < devs + ndev) return d;
    if (d >= migdevs && d < migdevs + nmigdev) return d;
    return NULL;
}

static int lost(const struct dev *d) {
    const struct dev *p = d->is_mig ? d->parent : d;
    return p->lost_at >= 0 && event_s() >= p->lost_at;
}

#define CHECK_INIT() if (!initialised) return NVML_ERROR_UNINITIALIZED
#define DEVICE(h, d) CHECK_INIT(); struct dev *d = dev_of(h); if (!d) return NVML_ERROR_INVALID_ARGUMENT

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (!initialised) {
        load();
        if (init_error) return init_error;
        if (start_ns < 0) start_ns = mono_ns();
        if (init_ns < 0) init_ns = mono_ns();
    }
    initialised++;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    CHECK_INIT();
    initialised--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    CHECK_INIT();
    snprintf(version, length, "999.99-fake");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    CHECK_INIT();
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned int)nvisible;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    CHECK_INIT();
    if (index >= (unsigned int)nvisible || !device) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devs[visible[index]];
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, void **device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **device) {
    CHECK_INIT();
    for (int i = 0; i < nvisible; i++)
        if (!strcmp(devs[visible[i]].uuid, uuid)) { *device = &devs[visible[i]]; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(void *device, unsigned int *index) {
    DEVICE(device, d);
    for (int i = 0; i < nvisible; i++)
        if (&devs[visible[i]] == d) { *index = (unsigned int)i; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    DEVICE(device, d);
    if (!uuid || strlen(d->uuid) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(uuid, d->uuid);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    DEVICE(device, d);
    if (!name || length == 0) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(name, length, "%s", d->name);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *device, unsigned long long *energy) {
    DEVICE(device, d);
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED; /* MIG instances have no counter of their own */
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    if (!d->counter) return NVML_ERROR_NOT_SUPPORTED;
    double t = now_s(), reset = d->reset_at + (t - event_s()); /* the reload, on the trace's clock */
    if (d->reset_at >= 0 && t >= reset)
        *energy = (unsigned long long)floor((energy_j(d, t) - energy_j(d, reset)) * 1000 + 1e-6);
    else
        *energy = (unsigned long long)floor(energy_j(d, t) * 1000 + 1e-6) + (unsigned long long)d->offset_mj;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *device, unsigned int *power) {
    DEVICE(device, d);
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    *power = (unsigned int)llround(power_at(d, now_s()) * 1000);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(void *device, unsigned int *current, unsigned int *pending) {
    DEVICE(device, d);
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    *current = *pending = (unsigned int)d->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(void *device, unsigned int *isMig) {
    DEVICE(device, d);
    *isMig = (unsigned int)d->is_mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *device, unsigned int *count) {
    DEVICE(device, d);
    *count = d->mig ? MAX_MIG : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *device, unsigned int index, void **mig) {
    DEVICE(device, d);
    if (!d->mig) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned int)d->nmig) return NVML_ERROR_NOT_FOUND;
    *mig = d->migs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    DEVICE(device, d);
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    double t = event_s();
    unsigned int n = 0;
    for (int i = 0; i < d->nproc; i++) n += t >= d->pid_from[i];
    if (*count < n || (!infos && n > 0)) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    unsigned int k = 0;
    for (int i = 0; i < d->nproc; i++)
        if (t >= d->pid_from[i])
            infos[k++] = (nvmlProcessInfo_t){d->pids[i], 1ULL << 30, 0xFFFFFFFFu, 0xFFFFFFFFu};
    *count = n;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return nvmlDeviceGetComputeRunningProcesses_v3(device, count, infos);
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return nvmlDeviceGetComputeRunningProcesses_v3(device, count, infos);
}
