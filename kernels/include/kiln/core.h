/* kiln core C ABI: status codes, the per-thread error message, dtypes, debug options, versions and
 * device queries. Plain C; compiles with any C or C++ compiler given the CUDA toolkit's headers.
 *
 * Error model: every kiln_* function that can fail returns a kiln_status_t. On failure the status
 * says what kind of failure it was and kiln_last_error() returns a message for the calling thread
 * naming the check that failed, where, and (for CUDA / cuBLAS / cuDNN / NCCL failures) the
 * library's own text. Arguments are checked before anything is launched or written, so a call
 * that returns KILN_STATUS_INVALID_ARGUMENT has touched no memory. kiln never prints and never
 * exits the process. */
#ifndef KILN_CORE_H_
#define KILN_CORE_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "kiln/export.h"
#include "kiln/version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_status {
  KILN_STATUS_OK = 0,
  KILN_STATUS_INVALID_ARGUMENT = 1, /* wrong shape, null or misaligned pointer, bad option */
  KILN_STATUS_NOT_SUPPORTED = 2,    /* valid request this build or device does not serve */
  KILN_STATUS_NO_DEVICE = 3,        /* no CUDA device or driver; the message says which */
  KILN_STATUS_CUDA_ERROR = 4,       /* the CUDA runtime failed (launch, fault, ...) */
  KILN_STATUS_CUBLAS_ERROR = 5,
  KILN_STATUS_CUDNN_ERROR = 6,
  KILN_STATUS_NCCL_ERROR = 7,
  KILN_STATUS_OUT_OF_MEMORY = 8, /* host or device allocation failed */
  KILN_STATUS_IO_ERROR = 9,      /* a file could not be opened, read or written */
  KILN_STATUS_DATA_ERROR = 10,   /* a file or buffer is corrupt, truncated or of the wrong kind */
  KILN_STATUS_TIMEOUT = 11,      /* a deadline passed (e.g. a collective that never completed) */
  KILN_STATUS_INTERNAL_ERROR = 12
} kiln_status_t;

/* Element types of tensors passed as void*. */
typedef enum kiln_dtype {
  KILN_DTYPE_BF16 = 0, /* __nv_bfloat16 */
  KILN_DTYPE_F32 = 1   /* float */
} kiln_dtype_t;

/* The symbolic name of a status, e.g. "KILN_STATUS_INVALID_ARGUMENT". Never NULL. */
KILN_API const char* kiln_status_name(kiln_status_t status);

/* The message of the last failed kiln call on this thread, or "" if none failed since the last
 * kiln_clear_last_error(). The pointer stays valid until the next kiln call on this thread. */
KILN_API const char* kiln_last_error(void);
KILN_API void kiln_clear_last_error(void);

/* Debug: when enabled, every kernel launch is followed by a synchronization of its stream, so an
 * asynchronous fault is reported by the launch that caused it (skipped while a stream is being
 * captured into a CUDA graph). Off by default; the environment variable KILN_SYNC_AFTER_LAUNCH=1
 * turns it on at load. Costs throughput: for debugging only. */
KILN_API void kiln_set_sync_after_launch(int enabled);
KILN_API int kiln_sync_after_launch(void);

/* kiln's version, e.g. "0.1.0". */
KILN_API const char* kiln_version_string(void);

/* Versions of the libraries kiln was built against and loaded at run time. Versions are encoded
 * as the libraries encode them (CUDA 13000 = 13.0, cuDNN 91900 = 9.19.0, NCCL 22809 = 2.28.9);
 * 0 where unknown (e.g. the driver version on a machine with no driver). */
typedef struct kiln_library_versions {
  int cuda_runtime; /* cudaRuntimeGetVersion */
  int cuda_driver;  /* cudaDriverGetVersion: the newest CUDA the driver supports; 0 if none */
  int cublaslt;     /* cublasLtGetVersion */
  int cudnn_compiled;
  int cudnn_loaded; /* cudnnGetVersion */
  int nccl_compiled;
  int nccl_loaded; /* ncclGetVersion */
} kiln_library_versions_t;
KILN_API kiln_status_t kiln_get_library_versions(kiln_library_versions_t* out);

/* The number of CUDA devices. With no device or no usable driver it returns
 * KILN_STATUS_NO_DEVICE, sets *count to 0, and kiln_last_error() begins with "no CUDA device"
 * followed by the CUDA runtime's explanation. */
KILN_API kiln_status_t kiln_device_count(int* count);

typedef struct kiln_device_info {
  char name[256];
  int ordinal;
  int compute_major;
  int compute_minor;
  int multiprocessors;
  size_t total_memory_bytes;
  size_t l2_cache_bytes;
  size_t shared_memory_per_block_optin; /* the most a kernel may ask for */
  int memory_bus_width_bits;
  int clock_rate_khz;        /* 0 where the runtime no longer reports it */
  int memory_clock_rate_khz; /* 0 where the runtime no longer reports it */
} kiln_device_info_t;
KILN_API kiln_status_t kiln_get_device_info(int ordinal, kiln_device_info_t* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KILN_CORE_H_ */
