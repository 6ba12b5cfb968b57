/* Symbol visibility: libkiln is built with hidden visibility; only what carries KILN_API is part
 * of its ABI. */
#ifndef KILN_EXPORT_H_
#define KILN_EXPORT_H_

#if defined(_WIN32)
#define KILN_API
#else
#define KILN_API __attribute__((visibility("default")))
#endif

#endif /* KILN_EXPORT_H_ */
