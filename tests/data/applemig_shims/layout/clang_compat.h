/* Forced include: clang/Apple predefined macros that xnu's headers test. */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#ifndef __has_extension
#define __has_extension(x) 0
#endif
#define __LITTLE_ENDIAN__ 1
