/* Shim: Darwin's userland <stdint.h> (Libc), reduced to the exact-width types. */
#ifndef APPLEMIG_SHIM_STDINT_H
#define APPLEMIG_SHIM_STDINT_H
#include <sys/_types/_int8_t.h>
#include <sys/_types/_int16_t.h>
#include <sys/_types/_int32_t.h>
#include <sys/_types/_int64_t.h>
#include <sys/_types/_intptr_t.h>
#include <sys/_types/_uintptr_t.h>
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef long int intmax_t;
typedef long unsigned int uintmax_t;
#endif
