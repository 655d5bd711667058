/*
 * Shim: the generated headers include <string.h>; only struct layouts are
 * measured, so nothing from it is needed (and this shadows libsyscall's
 * private string.h).
 */
